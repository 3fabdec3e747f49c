"""The official openai Node SDK (tests/node: pinned by its package-lock.json, installed by the set-up) against
the real stack: models, chat (plain and streamed) and embeddings with their values checked against the Python
SDK's answers, and CORS as a browser page using the SDK would meet it."""

from __future__ import annotations

import numpy as np
import pytest

from frontend.cors import EXPOSED
from frontend.settings import Settings
from tests.conftest import TRITON_API_SECRET
from tests.node.sdk import run_script
from tests.stack import run_frontend

pytestmark = pytest.mark.integration

CHAT, EMBEDDINGS = "smollm2-135m-instruct", "all-minilm-l6-v2"
ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def basics(frontend) -> dict:
    return run_script("basics", CHAT, EMBEDDINGS, base_url=frontend.base_url)


def test_models_list_pages_through_the_served_models(basics, openai_client):
    served = {m.id: m for m in openai_client.models.list()}
    listed = {m["id"]: m for m in basics["models"]}
    assert listed.keys() == served.keys() and {CHAT, EMBEDDINGS} <= listed.keys()
    assert listed[CHAT] == {"id": CHAT, "object": "model", "task": "chat",
                            "max_model_len": served[CHAT].model_extra["max_model_len"]}


def test_chat_plain_and_streamed_give_the_same_greedy_answer(basics, openai_client):
    plain, stream = basics["plain"], basics["stream"]
    assert plain["object"] == "chat.completion" and plain["model"] == CHAT and plain["id"].startswith("chatcmpl-")
    [choice] = plain["choices"]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    assert plain["request_id"] == plain["header_request_id"] and plain["request_id"]
    python = openai_client.chat.completions.create(
        model=CHAT, temperature=0, max_tokens=12, seed=7,
        messages=[{"role": "user", "content": "Name the capital of France in one word."}])
    assert choice["message"]["content"] == python.choices[0].message.content  # greedy: the engine's one answer
    assert stream["objects"] == ["chat.completion.chunk"] and len(stream["ids"]) == 1
    assert stream["first_delta"]["role"] == "assistant"
    assert stream["text"] == choice["message"]["content"]
    assert stream["finish_reasons"] == [choice["finish_reason"]]
    assert stream["usage"] == plain["usage"]
    assert (plain["usage"]["prompt_tokens"], plain["usage"]["completion_tokens"]) == (
        python.usage.prompt_tokens, python.usage.completion_tokens)


def test_embeddings_decode_to_the_python_sdks_vectors(basics, openai_client):
    embedded = basics["embeddings"]
    assert embedded["object"] == "list" and embedded["model"] == EMBEDDINGS
    python = openai_client.embeddings.create(model=EMBEDDINGS, input=["hello world", "The cat sat on the mat."],
                                             encoding_format="float")
    assert embedded["usage"] == {"prompt_tokens": python.usage.prompt_tokens, "total_tokens": python.usage.total_tokens}
    assert [d["index"] for d in embedded["data"]] == [0, 1]
    node = np.array([d["embedding"] for d in embedded["data"]], dtype=np.float32)  # from base64, by the SDK
    reference = np.array([d.embedding for d in python.data], dtype=np.float32)
    assert node.shape == (2, 384)
    np.testing.assert_array_equal(node, reference)  # base64 carries float32 exactly
    np.testing.assert_allclose(np.array(embedded["float_data"], dtype=np.float32), reference, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(node, axis=1), 1.0, atol=1e-5)


def test_errors_reach_the_sdk_as_its_typed_errors(basics):
    assert basics["missing"]["name"] == "NotFoundError" and basics["missing"]["status"] == 404
    assert basics["missing"]["code"] == "model_not_found" and basics["missing"]["param"] == "model"
    assert basics["missing"]["requestID"]


@pytest.fixture(scope="module")
def cors_frontend(triton):
    """A second frontend on the session's Triton, with CORS for ORIGIN (the session's has none: the default)."""
    with run_frontend(Settings(triton_grpc_url=triton.grpc_url, model_index_ttl_s=1.0,
                               triton_api_secret=TRITON_API_SECRET, cors_origins=[ORIGIN])) as running:
        yield running


def test_a_browser_page_can_use_the_sdk(cors_frontend):
    out = run_script("cors", ORIGIN, CHAT, EMBEDDINGS, base_url=cors_frontend.base_url)
    # The preflight a browser sends before the SDK's requests, for exactly the headers the SDK sent, passes.
    assert {"authorization", "content-type", "x-stainless-os", "x-stainless-retry-count", "openai-organization",
            "openai-project"} <= set(out["requested"])
    preflight = out["preflight"]
    assert preflight["status"] == 200 and preflight["allow_origin"] == ORIGIN
    assert preflight["allow_credentials"] is None
    allowed = {h.strip().lower() for h in preflight["allow_headers"].split(",")}
    assert set(out["requested"]) <= allowed
    # Every answer, the error included, is readable by the page and exposes what the SDK reads.
    assert len(out["answers"]) == 5 and out["answers"][-1]["status"] == 404
    for answer in out["answers"]:
        assert answer["allow_origin"] == ORIGIN, answer
        assert set(answer["expose"].split(", ")) == set(EXPOSED)
    assert out["missing"]["name"] == "NotFoundError" and out["missing"]["requestID"]


def test_without_cors_settings_a_page_gets_nothing(frontend):
    out = run_script("cors", ORIGIN, CHAT, EMBEDDINGS, base_url=frontend.base_url)
    assert all(answer["allow_origin"] is None for answer in out["answers"])
    assert out["preflight"]["status"] == 405 and out["preflight"]["allow_origin"] is None
