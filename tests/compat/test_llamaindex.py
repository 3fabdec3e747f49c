"""LlamaIndex (its own env: clients/llamaindex_client.py) against the real stack: `OpenAILike` chat, streamed
chat and completion give the SDK's greedy answers; `OpenAIEmbedding` the SDK's vectors; a `VectorStoreIndex`
whose chunks fit MiniLM retrieves the right paragraph for each query, and its query engine answers from it.
Structured outputs through LlamaIndex: test_structured_clients.py."""

from __future__ import annotations

import numpy as np
import pytest

from tests.compat.clients import cases
from tests.compat.envs import case_value, run_client
from tests.compat.report import compat

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def llamaindex(frontend) -> dict:
    return run_client("llamaindex", "llamaindex_client.py", base_url=frontend.base_url, model=cases.CHAT_MODEL)


@compat("llamaindex-llm", "`OpenAILike.chat`", setting="`is_chat_model=True`",
        caveat="`OpenAILike` defaults to `is_chat_model=False`: `chat()` then flattens the messages into a plain "
               "`user: ...\\nassistant: ` prompt for `/v1/completions`, without the model's chat template, and "
               "a chat model answers nonsense. Create it with `is_chat_model=True` (and `context_window`, "
               "`is_function_calling_model=True` for tools: its defaults are 3900 and False).")
def test_chat(llamaindex, reference):
    answer = case_value(llamaindex, "chat")
    assert answer == {"text": reference["chat"], "paths": ["/v1/chat/completions"]}
    by_default = case_value(llamaindex, "chat_by_default")
    assert by_default["paths"] == ["/v1/completions"] and by_default["prompt"].startswith("user: ")
    assert by_default["text"] != reference["chat"]


@compat("llamaindex-llm", "`OpenAILike.stream_chat`", setting="`is_chat_model=True`")
def test_stream_chat(llamaindex, reference):
    assert case_value(llamaindex, "stream_chat") == {"text": reference["chat"], "paths": ["/v1/chat/completions"]}


@compat("llamaindex-llm", "`OpenAILike.complete` (`/v1/completions`)")
def test_complete(llamaindex, reference):
    assert case_value(llamaindex, "complete") == {"text": reference["completion"], "paths": ["/v1/completions"]}


@compat("llamaindex-embeddings", "`OpenAIEmbedding` text and query embeddings", setting="`model_name=`",
        caveat="`OpenAIEmbedding(model=...)` accepts only OpenAI's model names (`ValueError: ... is not a valid "
               "OpenAIEmbeddingModelType`, before any request); name the served model with "
               "`model_name=\"all-minilm-l6-v2\"`.")
def test_embeddings(llamaindex, reference):
    answer = case_value(llamaindex, "embeddings")
    assert answer["paths"] == ["/v1/embeddings"] * 2 and answer["inputs"] == [cases.SENTENCES, [cases.SENTENCES[0]]]
    expected = np.array(reference["vectors"], dtype=np.float32)
    np.testing.assert_array_equal(np.array(answer["documents"], dtype=np.float32), expected)
    np.testing.assert_array_equal(np.array(answer["query"], dtype=np.float32), expected[0])
    refused = case_value(llamaindex, "embeddings_by_model")
    assert refused["refused"] == "ValueError" and "not a valid OpenAIEmbeddingModelType" in refused["message"]


@compat("llamaindex-core", "`VectorStoreIndex` + retriever + query engine (RAG) on MiniLM",
        setting=f"chunks under 256 MiniLM tokens: `SentenceSplitter(chunk_size={cases.CHUNK_SIZE})` (or "
                f"`Settings.chunk_size`)",
        caveat="LlamaIndex splits documents into 1024-token chunks by default; MiniLM reads 256, so indexing a "
               "long document fails with a 400 `context_length_exceeded`. Give a smaller `chunk_size` (200 here; "
               "it counts tiktoken tokens, and MiniLM's WordPiece can count more on unusual text: keep a margin), "
               "or have the server keep each chunk's last 256 tokens with `OpenAIEmbedding(additional_kwargs="
               "{\"extra_body\": {\"truncate_prompt_tokens\": -1}})`.")
def test_rag(llamaindex):
    by_default = case_value(llamaindex, "index_by_default")
    assert by_default["status"] == 400 and by_default["error"]["code"] == "context_length_exceeded"
    assert "maximum context length is 256 tokens" in by_default["error"]["message"]
    truncated = case_value(llamaindex, "index_truncated")
    assert truncated["chunks"] > 1 and set(truncated["truncate"]) == {-1}
    rag = case_value(llamaindex, "rag")
    assert rag["chunks"] > len(cases.TOPICS) + 1  # the long document was split
    assert rag["found"] == {query: cases.TOPICS[topic] for query, topic in cases.QUERIES.items()}
    assert rag["sources"] == [cases.TOPICS[cases.QUERIES[rag["query"]]]]
    assert "Paris" in rag["answer"]
