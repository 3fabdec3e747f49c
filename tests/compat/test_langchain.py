"""LangChain's `ChatOpenAI` and `OpenAIEmbeddings` (langchain-openai, in the suite's venv) against the real stack:
invoke, stream and batch give the SDK's greedy answers; embeddings equal the SDK's vectors once LangChain sends
text. `with_structured_output` and `bind_tools` are tested in tests/integration/test_clients_structured.py.

What LangChain's embeddings do by default, checked here: `OpenAIEmbeddings` tokenises each text with tiktoken
(`cl100k_base` for a model name tiktoken does not know, fetched from openaipublic.blob.core.windows.net on
first use) and sends those token ids, not the text. The server cannot tell them from MiniLM ids: a text whose
cl100k ids all fall below MiniLM's 30522 gets a vector of other words (200, wrong), one with a higher id a 400
`invalid_token_ids`. `check_embedding_ctx_length=False` sends the text."""

from __future__ import annotations

import json
import shutil

import httpx
import numpy as np
import openai
import pytest
import requests

from tests.compat.clients import cases
from tests.compat.envs import DEAD_PROXY, ensure_env
from tests.compat.report import compat

pytestmark = pytest.mark.integration

CL100K = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"  # tiktoken's cache name for cl100k_base (sha1 of its URL)
EMBEDDINGS_CAVEAT = (
    "`OpenAIEmbeddings` sends tiktoken (`cl100k_base`) token ids by default, not text. MiniLM reads other ids: "
    "a text whose cl100k ids are all below its vocabulary size (30522) gets a **wrong vector** with a 200 (\"hello "
    "world\": cosine 0.13 to its real vector), a text with a higher id a 400 `invalid_token_ids` that names the "
    "fix; offline, the first call fails fetching the cl100k file. Create it with `check_embedding_ctx_length=False`"
    " (text is sent). LangChain then no longer splits long texts: over 256 MiniLM tokens is a 400 "
    "`context_length_exceeded`, or the last 256 tokens are kept with "
    "`model_kwargs={\"extra_body\": {\"truncate_prompt_tokens\": -1}}`.")


@pytest.fixture(scope="module")
def chat(frontend):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=frontend.base_url, api_key="unused", model=cases.CHAT_MODEL, temperature=0,
                      max_tokens=cases.MAX_TOKENS, max_retries=0, default_headers=cases.NO_STORE)


@compat("langchain", "`ChatOpenAI.invoke`")
def test_invoke(chat, reference):
    answer = chat.invoke(cases.QUESTION)
    assert answer.content == reference["chat"]
    usage = answer.usage_metadata
    assert (usage["input_tokens"], usage["output_tokens"]) == reference["chat_usage"]


@compat("langchain", "`ChatOpenAI.stream`")
def test_stream(chat, reference):
    chunks = list(chat.stream(cases.QUESTION))
    assert len(chunks) > 2 and "".join(c.content for c in chunks) == reference["chat"]


@compat("langchain", "`ChatOpenAI.batch`")
def test_batch(chat, reference):
    answers = chat.batch([cases.QUESTION, cases.OTHER_QUESTION])
    assert [a.content for a in answers] == [reference["chat"], reference["other"]]


def embeddings(frontend, sent: list | None = None, **options):
    from langchain_openai import OpenAIEmbeddings

    def record(request: httpx.Request) -> None:
        sent.append(json.loads(request.content)["input"])

    hooks = {"request": [record]} if sent is not None else {}
    return OpenAIEmbeddings(base_url=frontend.base_url, api_key="unused", model=cases.EMBEDDINGS_MODEL,
                            max_retries=0, default_headers=cases.NO_STORE,
                            http_client=httpx.Client(event_hooks=hooks), **options)


@compat("langchain", "`OpenAIEmbeddings.embed_documents`, `embed_query`", setting="`check_embedding_ctx_length=False`",
        caveat=EMBEDDINGS_CAVEAT)
def test_embeddings_of_text(frontend, reference):
    sent = []
    model = embeddings(frontend, sent, check_embedding_ctx_length=False)
    documents = np.array(model.embed_documents(cases.SENTENCES), dtype=np.float32)
    query = np.array(model.embed_query(cases.SENTENCES[0]), dtype=np.float32)
    assert sent == [cases.SENTENCES, [cases.SENTENCES[0]]]  # the text itself
    expected = np.array(reference["vectors"], dtype=np.float32)
    np.testing.assert_array_equal(documents, expected)
    np.testing.assert_array_equal(query, expected[0])
    long = " ".join(["word"] * 400)  # 402 MiniLM tokens
    with pytest.raises(openai.BadRequestError) as over:
        model.embed_query(long)
    assert over.value.body["code"] == "context_length_exceeded"
    cut = embeddings(frontend, check_embedding_ctx_length=False,
                     model_kwargs={"extra_body": {"truncate_prompt_tokens": -1}}).embed_query(long)
    assert len(cut) == 384


@compat("langchain", "`OpenAIEmbeddings()` with its defaults",
        broken="sends tiktoken ids: wrong vectors (200) or 400 `invalid_token_ids`; see the caveat")
def test_default_embeddings_send_tiktoken_ids(frontend, reference, monkeypatch, tmp_path):
    import tiktoken.registry

    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # no encoding loaded earlier in this process
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HTTPS_PROXY", DEAD_PROXY)  # offline, as here: the cl100k file cannot be fetched
    with pytest.raises(requests.ConnectionError):
        embeddings(frontend).embed_documents(cases.SENTENCES)

    # Online, tiktoken has the file: the one LlamaIndex ships (its env is built by the suite) stands in for it.
    bundled = next(ensure_env("llamaindex").glob(f"lib/python*/site-packages/llama_index/core/_static/"
                                                 f"tiktoken_cache/{CL100K}"))
    shutil.copy(bundled, tmp_path / CL100K)
    sent = []
    vectors = np.array(embeddings(frontend, sent).embed_documents(cases.SENTENCES), dtype=np.float32)
    assert sent == [[[15339, 1917], [791, 8415, 7731, 389, 279, 5634, 13]]]  # cl100k ids, all < 30522
    cosines = (vectors * np.array(reference["vectors"], dtype=np.float32)).sum(axis=1)
    assert (cosines < 0.5).all(), cosines  # vectors of other words: 0.13 and 0.03
    with pytest.raises(openai.BadRequestError) as refused:
        embeddings(frontend).embed_documents(["Paris is the capital of France."])  # "Paris": cl100k id 60704
    assert refused.value.body["code"] == "invalid_token_ids" and refused.value.body["param"] == "input"
    assert "check_embedding_ctx_length=False" in refused.value.body["message"]
