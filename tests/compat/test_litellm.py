"""LiteLLM (its own env: clients/litellm_client.py) against the real stack, through both prefixes its docs give
for an OpenAI-compatible server, `openai/` and `hosted_vllm/`, with `api_base`: the SDK's greedy answers
(plain, streamed, text completion), its vectors, and its image bytes for the same seed."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.compat.clients import cases
from tests.compat.envs import case_value, run_client
from tests.compat.report import compat

pytestmark = pytest.mark.integration

PREFIXES = pytest.mark.parametrize("prefix", ["openai", "hosted_vllm"])
OFFLINE = ("At import LiteLLM fetches its model price list from GitHub (three tries, about 7 s, then its bundled "
           "copy); offline or air-gapped, set `LITELLM_LOCAL_MODEL_COST_MAP=True`.")


@pytest.fixture(scope="module")
def litellm(frontend) -> dict:
    return run_client("litellm", "litellm_client.py", base_url=frontend.base_url, model=cases.CHAT_MODEL)


@PREFIXES
@compat("litellm", "`completion` (`{prefix}/` prefix, `api_base`)", caveat=OFFLINE)
def test_completion(litellm, reference, prefix):
    answer = case_value(litellm, f"completion_{prefix}")
    assert answer["text"] == reference["chat"] and tuple(answer["usage"]) == reference["chat_usage"]


@PREFIXES
@compat("litellm", "`completion(stream=True)` (`{prefix}/` prefix)")
def test_completion_stream(litellm, reference, prefix):
    assert case_value(litellm, f"stream_{prefix}")["text"] == reference["chat"]


@compat("litellm", "`text_completion` (`openai/` prefix)")
def test_text_completion(litellm, reference):
    assert case_value(litellm, "text_completion")["text"] == reference["completion"]


@PREFIXES
@compat("litellm", "`embedding` (`{prefix}/` prefix)")
def test_embedding(litellm, reference, prefix):
    vectors = np.array(case_value(litellm, f"embedding_{prefix}")["vectors"], dtype=np.float32)
    np.testing.assert_array_equal(vectors, np.array(reference["vectors"], dtype=np.float32))


@compat("litellm", "`image_generation` (`openai/` prefix; `url`, `seed` in `extra_body`)")
def test_image_generation_by_url(litellm, reference):
    assert base64.b64decode(case_value(litellm, "image_openai_url")["url_png"]) == reference["png"]


@compat("litellm", "`image_generation(response_format=\"b64_json\")` with the `openai/` prefix",
        client_refuses="`UnsupportedParamsError` for `response_format`",
        caveat="`image_generation(model=\"openai/...\", response_format=\"b64_json\")` fails in LiteLLM before "
               "any request (`UnsupportedParamsError: Setting response_format is not supported by openai, "
               "tiny-sd-random`); `drop_params=True` drops the field (a `url` comes back). Ask with the "
               "`hosted_vllm/` prefix, which passes it, or fetch the `url`.")
def test_image_generation_b64_with_the_openai_prefix(litellm):
    refused = case_value(litellm, "image_openai_b64")
    assert refused["refused"] == "UnsupportedParamsError" and "response_format" in refused["message"]
    assert "url_png" in case_value(litellm, "image_openai_dropped")  # drop_params: asked without it, a url


@compat("litellm", "`image_generation(response_format=\"b64_json\")` (`hosted_vllm/` prefix)")
def test_image_generation_b64_with_the_hosted_vllm_prefix(litellm, reference):
    assert base64.b64decode(case_value(litellm, "image_hosted_vllm_b64")["b64_json"]) == reference["png"]
