"""frontend/services/generation.py: the LLM contract's responses read into steps, logprobs, sampling JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from frontend.errors import APIError
from frontend.protocol.completions import CompletionRequest
from frontend.services.generation import (
    MIN_LOGPROB,
    Step,
    Tally,
    assemble,
    parse_step,
    sampling_parameters,
    token_logprobs,
    triton_inputs,
)


def entry(*candidates) -> dict:
    """A vLLM-backend logprobs entry from (token_id, text, logprob, rank) tuples, in the given order."""
    return {str(i): {"logprob": lp, "rank": r, "decoded_token": t} for i, t, lp, r in candidates}


def test_sampled_token_outside_the_top_is_the_extra_entry():
    (token,) = token_logprobs([entry((1, " a", -0.1, 1), (2, " b", -2.5, 2), (9, " z", -7.0, 40))], 2, " z")
    assert (token.token, token.logprob) == (" z", -7.0)
    assert token.top == [(" a", -0.1), (" b", -2.5)]


def test_sampled_token_inside_the_top_is_found_by_the_text():
    entries = [entry((1, " Par", -0.2, 1), (2, " Paris", -1.9, 2)), entry((3, ".", -0.1, 1), (4, "!", -2.0, 2))]
    tokens = token_logprobs(entries, 2, " Paris.")
    assert [(t.token, t.logprob) for t in tokens] == [(" Paris", -1.9), (".", -0.1)]


def test_no_top_and_infinite_logprobs():
    (token,) = token_logprobs([entry((5, "x", -math.inf, 3))], 0, "x")
    assert token.top == [] and token.logprob == MIN_LOGPROB


def test_sampling_parameters_are_an_explicit_list_without_unset_fields():
    request = CompletionRequest(model="m", prompt="p", temperature=0, stop="END", n=2, user="u", echo=True)
    assert sampling_parameters(request, None, None) == {"temperature": 0, "stop": "END", "n": 2}
    assert sampling_parameters(request, 5, 3) == {"temperature": 0, "stop": "END", "n": 2, "max_tokens": 5,
                                                  "logprobs": 3}


def test_triton_inputs_ask_for_counts_and_exclude_the_prompt():
    inputs = triton_inputs("héllo", {"n": 1}, stream=True, logprobs=False)
    assert inputs["text_input"][0] == "héllo".encode() and json.loads(inputs["sampling_parameters"][0]) == {"n": 1}
    assert inputs["stream"][0] and inputs["exclude_input_in_output"][0] and "return_logprobs" not in inputs
    assert all(inputs[k][0] for k in ("return_finish_reason", "return_num_input_tokens", "return_num_output_tokens"))
    assert triton_inputs("x", {}, stream=False, logprobs=True)["return_logprobs"][0]


def outputs(texts, counts, reasons=None):
    result = {"text_output": np.array([t.encode() for t in texts], dtype=np.object_),
              "num_input_tokens": np.array([7], np.uint32), "num_output_tokens": np.array(counts, np.uint32)}
    if reasons is not None:
        result["finish_reason"] = np.array([r.encode() for r in reasons], dtype=np.object_)
    return result


def test_parse_step_and_assemble_choices():
    steps = [parse_step(outputs(["a", "b"], [1, 1]), None), parse_step(outputs(["c", ""], [1, 0], ["length", "stop"]),
                                                                        None)]
    assert steps[0] == Step(["a", "b"], [1, 1], 7)
    choices = assemble(steps, 2)
    assert [(c.text, c.tokens, c.finish_reason) for c in choices] == [("ac", 2, "length"), ("b", 1, "stop")]
    tally = Tally()
    for step in steps:
        tally.add(0, step)
    assert tally.usage() == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def test_an_aborted_sequence_is_an_error_not_a_finish_reason():
    with pytest.raises(APIError, match="abort"):
        parse_step(outputs(["a"], [1], ["abort"]), None)


def test_tokens_past_the_text_take_the_best_ranked():
    """A stop string cuts the text, not the tokens: those past it cannot be spelled, the best-ranked is taken."""
    entries = [entry((1, " go", -0.5, 1), (2, " g", -1.0, 2)), entry((3, " STOP", -0.3, 1), (4, " ST", -1.2, 2))]
    assert [t.token for t in token_logprobs(entries, 2, " go")] == [" go", " STOP"]
