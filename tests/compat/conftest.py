"""The compatibility tests' marks and plugin (plugin.py), and `reference`: what the suite's openai SDK gets for
the requests every other client repeats (clients/cases.py), the values their answers must equal."""

from __future__ import annotations

import base64

import pytest
from openai import OpenAI

from tests.compat import plugin
from tests.compat.clients import cases


def pytest_configure(config):
    config.addinivalue_line("markers", "compat(client, feature, result, detail, caveat): a row of "
                                       "docs/compatibility.md (tests/compat/report.py `compat`)")
    config.addinivalue_line("markers", f"{plugin.PAGE_MARK}: checks docs/compatibility.md; runs last")
    plugin.register(config)


@pytest.fixture(scope="session")
def sdk(frontend) -> OpenAI:
    """The suite's openai SDK, every request past the response cache."""
    return OpenAI(base_url=frontend.base_url, api_key="unused", max_retries=0, timeout=120,
                  default_headers=cases.NO_STORE)


@pytest.fixture(scope="session")
def reference(sdk) -> dict:
    """The suite's SDK's answers to the shared requests (greedy text, float vectors, PNG bytes by seed)."""
    chat = sdk.chat.completions.create(model=cases.CHAT_MODEL, temperature=0, max_tokens=cases.MAX_TOKENS,
                                       messages=[{"role": "user", "content": cases.QUESTION}])
    other = sdk.chat.completions.create(model=cases.CHAT_MODEL, temperature=0, max_tokens=cases.MAX_TOKENS,
                                        messages=[{"role": "user", "content": cases.OTHER_QUESTION}])
    completion = sdk.completions.create(model=cases.CHAT_MODEL, temperature=0, prompt=cases.COMPLETION_PROMPT,
                                        max_tokens=cases.COMPLETION_MAX_TOKENS)
    vectors = sdk.embeddings.create(model=cases.EMBEDDINGS_MODEL, input=cases.SENTENCES, encoding_format="float")
    image = sdk.images.generate(model=cases.IMAGE_MODEL, prompt=cases.IMAGE_PROMPT, size=cases.IMAGE_SIZE,
                                response_format="b64_json", extra_body=cases.IMAGE_EXTRAS)
    png = base64.b64decode(image.data[0].b64_json)
    edit = sdk.images.edit(model=cases.IMAGE_MODEL, image=("in.png", png, "image/png"), prompt=cases.EDIT_PROMPT,
                           size=cases.IMAGE_SIZE, response_format="b64_json", extra_body=cases.IMAGE_EXTRAS)
    answer = chat.choices[0]
    assert answer.finish_reason == "stop" and "Paris" in answer.message.content, answer  # the prompts still fit
    return {
        "chat": answer.message.content,
        "chat_usage": (chat.usage.prompt_tokens, chat.usage.completion_tokens),
        "other": other.choices[0].message.content,
        "completion": completion.choices[0].text,
        "vectors": [d.embedding for d in vectors.data],
        "png": png,
        "edit_png": base64.b64decode(edit.data[0].b64_json),
    }
