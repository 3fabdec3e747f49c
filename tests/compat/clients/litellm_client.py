"""LiteLLM against modelgate, as its docs wire an OpenAI-compatible server: the `openai/` and `hosted_vllm/`
model prefixes with `api_base`, `completion` (plain and streamed), `text_completion`, `embedding` and
`image_generation`. Prints each case's answer; LiteLLM's own refusals are answers too (their class and text)."""

from __future__ import annotations

import base64
import os

# LiteLLM fetches its model price list from GitHub at import (three tries, ~7 s, then its bundled copy): offline,
# as here and in air-gapped deployments, this skips the fetch.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx  # noqa: E402
import litellm  # noqa: E402

from cases import (CHAT_MODEL, COMPLETION_MAX_TOKENS, COMPLETION_PROMPT, EMBEDDINGS_MODEL, IMAGE_EXTRAS,  # noqa: E402
                   IMAGE_MODEL, IMAGE_PROMPT, IMAGE_SIZE, MAX_TOKENS, NO_STORE, QUESTION, SENTENCES)
from common import BASE_URL, run_cases  # noqa: E402

COMMON = {"api_base": BASE_URL, "api_key": "unused", "extra_headers": NO_STORE, "num_retries": 0}
PREFIXES = ("openai", "hosted_vllm")


def completion(prefix: str, stream: bool = False):
    def run():
        answer = litellm.completion(model=f"{prefix}/{CHAT_MODEL}", temperature=0, max_tokens=MAX_TOKENS,
                                    messages=[{"role": "user", "content": QUESTION}], stream=stream, **COMMON)
        if stream:
            return {"text": "".join(chunk.choices[0].delta.content or "" for chunk in answer if chunk.choices)}
        return {"text": answer.choices[0].message.content,
                "usage": [answer.usage.prompt_tokens, answer.usage.completion_tokens]}
    return run


def text_completion():
    answer = litellm.text_completion(model=f"openai/{CHAT_MODEL}", prompt=COMPLETION_PROMPT, temperature=0,
                                     max_tokens=COMPLETION_MAX_TOKENS, **COMMON)
    return {"text": answer.choices[0].text}


def embedding(prefix: str):
    def run():
        answer = litellm.embedding(model=f"{prefix}/{EMBEDDINGS_MODEL}", input=SENTENCES, **COMMON)
        return {"vectors": [d["embedding"] for d in answer.data], "prompt_tokens": answer.usage.prompt_tokens}
    return run


def image(prefix: str, **options):
    def run():
        try:
            answer = litellm.image_generation(model=f"{prefix}/{IMAGE_MODEL}", prompt=IMAGE_PROMPT, size=IMAGE_SIZE,
                                              extra_body=IMAGE_EXTRAS, **COMMON, **options)
        except litellm.UnsupportedParamsError as error:
            return {"refused": type(error).__name__, "message": str(error)}
        picture = answer.data[0]
        if picture.b64_json:
            return {"b64_json": picture.b64_json}
        return {"url_png": base64.b64encode(httpx.get(picture.url, timeout=60).content).decode()}
    return run


if __name__ == "__main__":
    run_cases({
        **{f"completion_{p}": completion(p) for p in PREFIXES},
        **{f"stream_{p}": completion(p, stream=True) for p in PREFIXES},
        "text_completion": text_completion,
        **{f"embedding_{p}": embedding(p) for p in PREFIXES},
        "image_openai_b64": image("openai", response_format="b64_json"),
        "image_openai_dropped": image("openai", response_format="b64_json", drop_params=True),
        "image_openai_url": image("openai"),
        "image_hosted_vllm_b64": image("hosted_vllm", response_format="b64_json"),
    })
