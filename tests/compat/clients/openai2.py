"""openai-python 2.x (its own env) against modelgate: chat (plain and streamed), embeddings (the SDK's default
base64, decoded by it), images.generate and responses.create, as an app on the 2.x line calls them. Prints
each case's answer (tests/compat/test_openai_python.py compares them with the suite's 3.x SDK's)."""

from __future__ import annotations

import base64

import openai
from openai import OpenAI

from cases import (CHAT_MODEL, EMBEDDINGS_MODEL, IMAGE_EXTRAS, IMAGE_MODEL, IMAGE_PROMPT, IMAGE_SIZE, MAX_TOKENS,
                   NO_STORE, QUESTION, SENTENCES)
from common import BASE_URL, run_cases

client = OpenAI(base_url=BASE_URL, api_key="unused", max_retries=0, timeout=120, default_headers=NO_STORE)
CHAT = {"model": CHAT_MODEL, "temperature": 0, "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": QUESTION}]}


def chat():
    answer = client.chat.completions.create(**CHAT)
    return {"sdk": openai.__version__, "text": answer.choices[0].message.content,
            "finish_reason": answer.choices[0].finish_reason,
            "usage": [answer.usage.prompt_tokens, answer.usage.completion_tokens]}


def stream():
    chunks = list(client.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True}))
    return {"text": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
            "usage": [chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens]}


def embeddings():
    answer = client.embeddings.create(model=EMBEDDINGS_MODEL, input=SENTENCES)  # base64 on the wire
    return {"vectors": [d.embedding for d in answer.data], "prompt_tokens": answer.usage.prompt_tokens}


def image():
    answer = client.images.generate(model=IMAGE_MODEL, prompt=IMAGE_PROMPT, size=IMAGE_SIZE,
                                    response_format="b64_json", extra_body=IMAGE_EXTRAS)
    return {"png": answer.data[0].b64_json, "decodes": len(base64.b64decode(answer.data[0].b64_json)) > 0}


def responses():
    answer = client.responses.create(model=CHAT_MODEL, input=QUESTION, temperature=0, max_output_tokens=MAX_TOKENS)
    return {"text": answer.output_text, "status": answer.status}


if __name__ == "__main__":
    run_cases({"chat": chat, "stream": stream, "embeddings": embeddings, "image": image, "responses": responses})
