"""openai-python against the real stack: the suite's own (the latest, 3.x) in this process, and the 2.x line in
its own env (clients/openai2.py). The 2.x answers must equal the 3.x ones: the same greedy text, the same
vectors, the same PNG bytes for the same seed."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import openai
import pytest
from PIL import Image
from pydantic import BaseModel

from tests.compat.clients import cases
from tests.compat.envs import case_value, run_client
from tests.compat.report import compat

pytestmark = pytest.mark.integration


def chat_request(**extra) -> dict:
    return {"model": cases.CHAT_MODEL, "temperature": 0, "max_tokens": cases.MAX_TOKENS,
            "messages": [{"role": "user", "content": cases.QUESTION}], **extra}


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.format == "PNG"
        return picture.size


# ---- the suite's SDK (latest) ----

@compat("openai-python", "`chat.completions.create`")
def test_chat(sdk, reference):
    answer = sdk.chat.completions.create(**chat_request())
    assert answer.choices[0].message.content == reference["chat"]  # greedy: the engine's one answer
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == reference["chat_usage"]


@compat("openai-python", "`chat.completions.create(stream=True)` with `stream_options.include_usage`")
def test_chat_stream(sdk, reference):
    chunks = list(sdk.chat.completions.create(**chat_request(), stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reference["chat"]
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == reference["chat_usage"]


@compat("openai-python", "`chat.completions.parse(response_format=PydanticModel)`")
def test_chat_parse(sdk):
    class City(BaseModel):
        name: str
        country: str

    parsed = sdk.chat.completions.parse(model=cases.CHAT_MODEL, temperature=0, max_tokens=cases.CITY_MAX_TOKENS,
                                        messages=[{"role": "user", "content": cases.CITY_QUESTION}],
                                        response_format=City).choices[0].message.parsed
    assert isinstance(parsed, City) and parsed.name == "Tokyo"


@compat("openai-python", "`completions.create` (legacy completions)")
def test_completions(sdk, reference):
    answer = sdk.completions.create(model=cases.CHAT_MODEL, temperature=0, prompt=cases.COMPLETION_PROMPT,
                                    max_tokens=cases.COMPLETION_MAX_TOKENS)
    assert answer.choices[0].text == reference["completion"] and "Paris" in reference["completion"]


@compat("openai-python", "`embeddings.create` (base64 by default, decoded by the SDK; `float`)")
def test_embeddings(sdk, reference):
    answer = sdk.embeddings.create(model=cases.EMBEDDINGS_MODEL, input=cases.SENTENCES)
    vectors = np.array([d.embedding for d in answer.data], dtype=np.float32)
    np.testing.assert_array_equal(vectors, np.array(reference["vectors"], dtype=np.float32))  # float32 both ways
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@compat("openai-python", "`images.generate` (`url` and `b64_json`; `seed`, `steps` in `extra_body`)")
def test_images_generate(sdk, reference):
    answer = sdk.images.generate(model=cases.IMAGE_MODEL, prompt=cases.IMAGE_PROMPT, size=cases.IMAGE_SIZE,
                                 extra_body=cases.IMAGE_EXTRAS)  # url, the default
    fetched = httpx.get(answer.data[0].url, timeout=60)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert fetched.content == reference["png"]  # the same seed, the same bytes
    assert png_size(reference["png"]) == (64, 64)


@compat("openai-python", "`images.edit` (multipart; `seed`, `steps` in `extra_body`)")
def test_images_edit(sdk, reference):
    answer = sdk.images.edit(model=cases.IMAGE_MODEL, image=("in.png", reference["png"], "image/png"),
                             prompt=cases.EDIT_PROMPT, size=cases.IMAGE_SIZE, extra_body=cases.IMAGE_EXTRAS)
    fetched = httpx.get(answer.data[0].url, timeout=60).content  # an edit's url: from the replica's memory
    assert fetched == reference["edit_png"] != reference["png"]  # b64_json in `reference`, the same seed
    assert png_size(fetched) == (64, 64)


@compat("openai-python", "`responses.create`")
def test_responses_create(sdk, reference):
    answer = sdk.responses.create(model=cases.CHAT_MODEL, input=cases.QUESTION, temperature=0,
                                  max_output_tokens=cases.MAX_TOKENS)
    assert answer.status == "completed" and answer.output_text == reference["chat"]  # served as that chat


@compat("openai-python", "`responses.stream` (the SDK's helper)")
def test_responses_stream(sdk, reference):
    with sdk.responses.stream(model=cases.CHAT_MODEL, input=cases.QUESTION, temperature=0,
                              max_output_tokens=cases.MAX_TOKENS) as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert deltas == final.output_text == reference["chat"]


@compat("openai-python", "Responses API hosted tools (`web_search`, `file_search`, `code_interpreter`, ...)",
        refused="400 naming `tools[0].type`: nothing runs behind them here; function tools work")
def test_responses_hosted_tools_are_refused(sdk):
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.responses.create(model=cases.CHAT_MODEL, input="Hi", tools=[{"type": "web_search"}])
    assert refused.value.status_code == 400 and refused.value.body["param"] == "tools[0].type"


@compat("openai-python", "legacy `functions` / `function_call` on chat",
        refused="400 naming `functions`: OpenAI deprecated them for `tools`, which work")
def test_legacy_functions_are_refused(sdk):
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(**chat_request(functions=[{"name": "f", "parameters": {"type": "object"}}]))
    assert refused.value.body["param"] == "functions" and refused.value.body["code"] == "unsupported_parameter"


# ---- openai-python 2.x, in its own env ----

@pytest.fixture(scope="module")
def python2(frontend) -> dict:
    return run_client("openai2", "openai2.py", base_url=frontend.base_url, model=cases.CHAT_MODEL)


@compat("openai-python-2", "`chat.completions.create`")
def test_2x_chat(python2, reference):
    answer = case_value(python2, "chat")
    assert answer["sdk"].startswith("2.")
    assert answer["text"] == reference["chat"] and tuple(answer["usage"]) == reference["chat_usage"]


@compat("openai-python-2", "`chat.completions.create(stream=True)` with usage")
def test_2x_chat_stream(python2, reference):
    answer = case_value(python2, "stream")
    assert answer["text"] == reference["chat"] and tuple(answer["usage"]) == reference["chat_usage"]


@compat("openai-python-2", "`embeddings.create` (base64 by default, decoded by the SDK)")
def test_2x_embeddings(python2, reference):
    answer = case_value(python2, "embeddings")
    np.testing.assert_array_equal(np.array(answer["vectors"], dtype=np.float32),
                                  np.array(reference["vectors"], dtype=np.float32))


@compat("openai-python-2", "`images.generate` (`b64_json`; `seed`, `steps` in `extra_body`)")
def test_2x_images_generate(python2, reference):
    assert base64.b64decode(case_value(python2, "image")["png"]) == reference["png"]


@compat("openai-python-2", "`responses.create`")
def test_2x_responses_create(python2, reference):
    answer = case_value(python2, "responses")
    assert answer["status"] == "completed" and answer["text"] == reference["chat"]
