"""Structured outputs: the `structured_outputs` parameter's shape, and a constraint's masks and completion on
SmolLM2's real tokenizer (llguidance, no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from triton_models.llm.grammar import Grammars
from triton_models.llm.params import InvalidRequest, SamplingParams



@pytest.mark.parametrize("value, expected", [
    ({"json": {"type": "object"}}, ("json", {"type": "object"})),
    ({"json": '{"type": "integer"}'}, ("json", {"type": "integer"})),
    ({"json_object": True}, ("json_object", True)),
    ({"regex": "a+", "json": None}, ("regex", "a+")),
    ({"choice": ["x", "y"]}, ("choice", ["x", "y"])),
    ({"grammar": "start: \"a\""}, ("grammar", "start: \"a\"")),
])
def test_structured_outputs_take_exactly_one_kind(value, expected):
    assert SamplingParams.from_dict({"structured_outputs": value}).structured == (*expected, None)
    tagged = SamplingParams.from_dict({"structured_outputs": {**value, "param": "tools"}}).structured
    assert tagged == (*expected, "tools")


@pytest.mark.parametrize("value, message", [
    ("json", "expected an object"), ({}, "exactly one"), ({"json": {}, "regex": "a"}, "exactly one"),
    ({"xml": "<a/>"}, "unknown key 'xml'"), ({"choice": []}, "non-empty"), ({"choice": [1]}, "non-empty"),
    ({"regex": 5}, "wrong type"), ({"json": "{not json"}, "structured_outputs"),
])
def test_malformed_structured_outputs_are_refused(value, message):
    with pytest.raises(InvalidRequest, match=message) as caught:
        SamplingParams.from_dict({"structured_outputs": value})
    assert caught.value.param == "structured_outputs"


def allowed(constraint, vocab: int) -> np.ndarray:
    row = np.zeros(vocab, np.float32)
    constraint.mask(row)
    return np.flatnonzero(np.isfinite(row))


def test_a_choice_is_followed_token_by_token_and_completes(grammars, tokenizer):
    constraint = grammars.constraint(grammars.compile("choice", ["yes", "no"]))
    vocab = tokenizer.tokenizer.get_vocab_size()
    first = {tokenizer.tokenizer.decode([int(t)]) for t in allowed(constraint, vocab + 7)}  # padded row too
    assert first and all("yes".startswith(t) or "no".startswith(t) for t in first)
    for token in tokenizer.encode("yes"):
        assert not constraint.complete
        constraint.consume(token)
    assert constraint.complete
    assert set(allowed(constraint, vocab)) <= set(tokenizer.eos_ids)  # only the end of sequence is left
    with pytest.raises(ValueError, match="not allowed"):
        grammars.constraint(grammars.compile("choice", ["yes", "no"])).consume(tokenizer.encode("maybe")[0])


def test_a_schema_masks_everything_but_its_json(grammars, tokenizer):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}
    constraint = grammars.constraint(grammars.compile("json", schema))
    vocab = tokenizer.tokenizer.get_vocab_size()
    texts = [tokenizer.tokenizer.decode([int(t)]) for t in allowed(constraint, vocab)]
    assert texts and all(t.lstrip().startswith("{") for t in texts)
    for token in tokenizer.encode('{"n": 42}'):
        constraint.consume(token)
    assert json.loads('{"n": 42}') == {"n": 42} and constraint.complete


def test_declared_properties_are_the_only_ones_unless_the_schema_allows_more(accepts):
    """A plain pydantic model's schema has no additionalProperties: the grammar still allows no invented keys."""
    plain = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    assert accepts("json", plain, '{"n": 1}') and not accepts("json", plain, '{"n": 1, "extra": 2}')
    assert accepts("json", {**plain, "additionalProperties": True}, '{"n": 1, "extra": 2}')
    assert accepts("json", {"type": "object"}, '{"anything": [1]}')  # free-form: open


@pytest.mark.parametrize("kind, value, param", [
    ("json", {"type": "object", "not": {"type": "string"}}, "response_format"),
    ("regex", "(", "guided_regex"),
    ("grammar", "start: undefined_rule", "guided_grammar"),
])
def test_what_cannot_be_enforced_is_refused_with_the_field_named(grammars, kind, value, param):
    with pytest.raises(InvalidRequest, match="cannot be enforced") as caught:
        grammars.compile(kind, value)
    assert caught.value.param == param and "\n" not in caught.value.message


def test_compiled_grammars_are_reused_by_their_text(tokenizer):
    grammars = Grammars(tokenizer, cached=2)
    schema = {"type": "object", "properties": {"b": {"type": "integer"}, "a": {"type": "integer"}}}
    first = grammars.compile("json", schema)
    assert grammars.compile("json", json.loads(json.dumps(schema))) is first  # same text: the cached grammar
    reordered = grammars.compile("json", {"type": "object", "properties": {"a": {"type": "integer"},
                                                                          "b": {"type": "integer"}}})
    assert reordered != first  # property order is the answer's key order: another grammar
    info = grammars._compiled.cache_info()
    assert info.hits == 1 and info.currsize == 2
