"""sampling_parameters JSON -> SamplingParams (vLLM's keys), with per-key errors."""

from __future__ import annotations

import pytest

from triton_models.contract import INVALID_REQUEST, MAX_N, MAX_STOP_SEQUENCES, UNSUPPORTED_PARAMETER, ModelError
from triton_models.llm.params import (
    CACHE_SALT,
    GREEDY_TEMPERATURE,
    MAX_CACHE_SALT_CHARS,
    InvalidRequest,
    SamplingParams,
)


def test_defaults_for_missing_or_null():
    assert SamplingParams.from_json(None) == SamplingParams()
    assert SamplingParams.from_json('{"temperature": null, "seed": null}') == SamplingParams()


def test_vllm_keys_are_parsed():
    p = SamplingParams.from_json(
        '{"temperature": 0.5, "top_p": 0.9, "top_k": -1, "seed": 3, "stop": "###", "max_tokens": 7,'
        ' "presence_penalty": 0.1, "frequency_penalty": -0.2, "logprobs": 2, "ignore_eos": true, "n": 2}'
    )
    assert (p.temperature, p.top_p, p.top_k, p.seed, p.stop, p.max_tokens) == (0.5, 0.9, 0, 3, ("###",), 7)
    assert (p.presence_penalty, p.frequency_penalty, p.logprobs, p.ignore_eos, p.n) == (0.1, -0.2, 2, True, 2)
    assert SamplingParams.from_dict({"stop": ["a", "", "b"]}).stop == ("a", "b")


def test_cache_salt_scopes_prefix_reuse_and_defaults_to_the_shared_pool():
    assert SamplingParams.from_dict({CACHE_SALT: "key:alice"}).cache_salt == "key:alice"
    assert SamplingParams.from_json(f'{{"{CACHE_SALT}": null}}').cache_salt is None
    assert SamplingParams().cache_salt is None


def test_greedy_when_temperature_below_the_epsilon_or_top_k_one():
    assert SamplingParams(temperature=0).greedy and SamplingParams(top_k=1).greedy
    assert SamplingParams.from_dict({"temperature": 1e-50, "top_p": 0.5}).greedy  # vLLM: below 1e-5 is greedy
    assert not SamplingParams().greedy and not SamplingParams(temperature=GREEDY_TEMPERATURE).greedy


@pytest.mark.parametrize("text, fragment", [
    ('{"best_of": 2}', "'best_of'"),
    ('{"temperature": "hot"}', "'temperature'"),
    ('{"top_p": 0}', "'top_p'"),
    ('{"max_tokens": 0}', "'max_tokens'"),
    ('{"stop": [1]}', "'stop'"),
    ('{"ignore_eos": 1}', "'ignore_eos'"),
    ('{"logprobs": 21}', "'logprobs'"),
    ('{"cache_salt": ""}', "'cache_salt'"),
    ('{"cache_salt": 7}', "'cache_salt'"),
    ('{"cache_salt": "%s"}' % ("x" * (MAX_CACHE_SALT_CHARS + 1)), "'cache_salt'"),
    ("[1, 2]", "JSON object"),
    ("{oops", "not valid JSON"),
])
def test_errors_name_the_key(text, fragment):
    with pytest.raises(InvalidRequest, match=fragment):
        SamplingParams.from_json(text)


@pytest.mark.parametrize("data, code, param", [
    ({"best_of": 2}, UNSUPPORTED_PARAMETER, "best_of"),
    ({"temperature": -1}, INVALID_REQUEST, "temperature"),
    ({"n": MAX_N + 1}, INVALID_REQUEST, "n"),
    ({"logprobs": 21}, INVALID_REQUEST, "logprobs"),
    ({"stop": ["x"] * (MAX_STOP_SEQUENCES + 1)}, INVALID_REQUEST, "stop"),
    ({"top_p": 0}, INVALID_REQUEST, "top_p"),
])
def test_errors_are_model_errors_with_the_field_as_param(data, code, param):
    with pytest.raises(ModelError) as caught:
        SamplingParams.from_dict(data)
    assert (caught.value.code, caught.value.param) == (code, param)
    assert ModelError.decode("in ensemble 'x', " + caught.value.encode()).param == param
