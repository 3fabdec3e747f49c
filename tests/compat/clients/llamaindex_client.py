"""LlamaIndex against modelgate, as its docs wire an OpenAI-compatible server: `OpenAILike` chat, streamed chat
and completion, `OpenAIEmbedding` by `model_name`, and a small RAG flow (`VectorStoreIndex` over a few
paragraphs and a long document, chunks that fit MiniLM's 256 tokens, a retriever and a query engine). Also what
its defaults do: `OpenAILike` without `is_chat_model`, `OpenAIEmbedding(model=...)`, 1024-token chunks.

Prints each case's answer, with the requests LlamaIndex sent (read off its HTTP client)."""

from __future__ import annotations

import json

import httpx
import openai
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.llms import ChatMessage
from llama_index.core.node_parser import SentenceSplitter
from llama_index.embeddings.openai import OpenAIEmbedding
from llama_index.llms.openai_like import OpenAILike

from cases import (CHAT_MODEL, CHUNK_SIZE, COMPLETION_MAX_TOKENS, COMPLETION_PROMPT, EMBEDDINGS_MODEL,
                   LONG_DOCUMENT, MAX_TOKENS, NO_STORE, QUERIES, QUESTION, SENTENCES, TOPICS)
from common import BASE_URL, run_cases

sent: list[dict] = []  # (path, body) of every request, for the test to see which endpoint was used


def record(request: httpx.Request) -> None:
    sent.append({"path": request.url.path, "body": json.loads(request.content or b"{}")})


def http() -> httpx.Client:
    return httpx.Client(event_hooks={"request": [record]})


def llm(max_tokens: int = MAX_TOKENS, **options) -> OpenAILike:
    return OpenAILike(model=CHAT_MODEL, api_base=BASE_URL, api_key="unused", context_window=8192,
                      max_tokens=max_tokens, temperature=0, max_retries=0, default_headers=NO_STORE,
                      http_client=http(), **options)


def embedder(**options) -> OpenAIEmbedding:
    return OpenAIEmbedding(model_name=EMBEDDINGS_MODEL, api_base=BASE_URL, api_key="unused", max_retries=0,
                           default_headers=NO_STORE, http_client=http(), **options)


def paths(start: int) -> list[str]:
    return [request["path"] for request in sent[start:]]


def chat():
    start = len(sent)
    answer = llm(is_chat_model=True).chat([ChatMessage(role="user", content=QUESTION)])
    return {"text": answer.message.content, "paths": paths(start)}


def stream_chat():
    start = len(sent)
    chunks = list(llm(is_chat_model=True).stream_chat([ChatMessage(role="user", content=QUESTION)]))
    return {"text": "".join(c.delta or "" for c in chunks), "paths": paths(start)}


def chat_by_default():
    start = len(sent)
    answer = llm().chat([ChatMessage(role="user", content=QUESTION)])  # is_chat_model: False, the default
    return {"text": answer.message.content, "paths": paths(start), "prompt": sent[-1]["body"].get("prompt")}


def complete():
    start = len(sent)
    answer = llm(COMPLETION_MAX_TOKENS).complete(COMPLETION_PROMPT)
    return {"text": answer.text, "paths": paths(start)}


def embeddings():
    start = len(sent)
    model = embedder()
    return {"documents": model.get_text_embedding_batch(SENTENCES), "query": model.get_query_embedding(SENTENCES[0]),
            "paths": paths(start), "inputs": [request["body"]["input"] for request in sent[start:]]}


def embeddings_by_model():
    try:
        OpenAIEmbedding(model=EMBEDDINGS_MODEL, api_base=BASE_URL, api_key="unused")
    except ValueError as error:
        return {"refused": type(error).__name__, "message": str(error)}
    return {"refused": None}


def index_by_default():
    """The default node parser: chunks of 1024 tiktoken tokens, more than MiniLM's 256."""
    try:
        VectorStoreIndex.from_documents([Document(text=LONG_DOCUMENT)], embed_model=embedder())
    except openai.BadRequestError as error:
        return {"status": error.status_code, "error": error.body}
    return {"status": 200}


def index_truncated():
    """The default chunks, each cut by the server to its last 256 tokens (vLLM's `truncate_prompt_tokens`)."""
    start = len(sent)
    model = embedder(additional_kwargs={"extra_body": {"truncate_prompt_tokens": -1}})
    index = VectorStoreIndex.from_documents([Document(text=LONG_DOCUMENT)], embed_model=model)
    return {"chunks": len(index.docstore.docs), "truncate": [r["body"].get("truncate_prompt_tokens")
                                                             for r in sent[start:]]}


def rag():
    documents = [Document(text=LONG_DOCUMENT)] + [Document(text=text) for text in TOPICS]
    splitter = SentenceSplitter(chunk_size=CHUNK_SIZE, chunk_overlap=20)
    index = VectorStoreIndex.from_documents(documents, embed_model=embedder(), transformations=[splitter])
    retriever = index.as_retriever(similarity_top_k=1)
    found = {query: retriever.retrieve(query)[0].node.get_content() for query in QUERIES}
    query = next(iter(QUERIES))
    answer = index.as_query_engine(llm=llm(24, is_chat_model=True), similarity_top_k=1).query(query)
    return {"chunks": len(index.docstore.docs), "found": found, "query": query, "answer": str(answer),
            "sources": [node.node.get_content() for node in answer.source_nodes]}


if __name__ == "__main__":
    run_cases({"chat": chat, "stream_chat": stream_chat, "chat_by_default": chat_by_default, "complete": complete,
               "embeddings": embeddings, "embeddings_by_model": embeddings_by_model,
               "index_by_default": index_by_default, "index_truncated": index_truncated, "rag": rag})
