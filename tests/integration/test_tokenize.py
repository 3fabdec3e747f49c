"""/tokenize and /detokenize against the real stack: the ids are the engine's (count == the usage of the same
chat, completion or embeddings request), equal to transformers' on the exported tokenizer files, and
detokenize(tokenize(x)) == x."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image
from transformers import AutoTokenizer

from export_scripts import llava
from tests.conftest import REPOSITORY

pytestmark = pytest.mark.integration

CHAT, EMBEDDINGS, VISION = "smollm2-135m-instruct", "all-minilm-l6-v2", llava.TINY_NAME
MESSAGES = [{"role": "system", "content": "You answer in one word."},
            {"role": "user", "content": "Which city is the capital of France? Caf\u00e9 \U0001F600"}]
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                        "required": ["city"]}}}
ONE_TOKEN = {"max_tokens": 1, "temperature": 0}


@pytest.fixture(scope="module")
def chat_tokenizer(repository):
    return AutoTokenizer.from_pretrained(str(REPOSITORY / CHAT / "1"))


@pytest.fixture(scope="module")
def bert_tokenizer(repository):
    return AutoTokenizer.from_pretrained(str(REPOSITORY / f"{EMBEDDINGS}_tokenizer" / "1"))


def tokenize(http, **body) -> dict:
    r = http.post("/tokenize", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def detokenize(http, model: str, tokens: list[int]) -> str:
    r = http.post("/detokenize", json={"model": model, "tokens": tokens})
    assert r.status_code == 200, r.text
    return r.json()["prompt"]


def ids(encoded) -> list[int]:
    """transformers 5's apply_chat_template(tokenize=True) answers a BatchEncoding; 4's a list."""
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def test_chat_messages_are_the_engines_prompt_tokens(http, openai_client, chat_tokenizer):
    out = tokenize(http, model=CHAT, messages=MESSAGES, return_token_strs=True)
    usage = openai_client.chat.completions.create(model=CHAT, messages=MESSAGES, **ONE_TOKEN).usage
    assert out["count"] == len(out["tokens"]) == usage.prompt_tokens
    assert out["tokens"] == ids(chat_tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True,
                                                                   tokenize=True))
    assert out["token_strs"] == chat_tokenizer.convert_ids_to_tokens(out["tokens"])
    assert out["max_model_len"] == openai_client.models.retrieve(CHAT).model_extra["max_model_len"]
    rendered = chat_tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert detokenize(http, CHAT, out["tokens"]) == rendered


def test_tools_count_as_the_chat_completion_renders_them(http, openai_client):
    out = tokenize(http, model=CHAT, messages=MESSAGES, tools=[TOOL])
    usage = openai_client.chat.completions.create(model=CHAT, messages=MESSAGES, tools=[TOOL], **ONE_TOKEN).usage
    assert out["count"] == usage.prompt_tokens
    assert out["count"] > tokenize(http, model=CHAT, messages=MESSAGES)["count"]  # the tools are in the prompt


def test_without_the_generation_prompt(http, chat_tokenizer):
    out = tokenize(http, model=CHAT, messages=MESSAGES, add_generation_prompt=False)
    assert out["tokens"] == ids(chat_tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=False,
                                                                   tokenize=True))


PROMPTS = ["Once upon a time", "  spaces, tabs\tand\nnewlines ", "na\u00efve \u00fcber \u4e2d\u6587 \U0001F680"]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_a_prompt_is_the_completions_prompt_and_round_trips(http, openai_client, chat_tokenizer, prompt):
    out = tokenize(http, model=CHAT, prompt=prompt)
    usage = openai_client.completions.create(model=CHAT, prompt=prompt, **ONE_TOKEN).usage
    assert out["count"] == usage.prompt_tokens
    assert out["tokens"] == chat_tokenizer(prompt)["input_ids"]
    assert detokenize(http, CHAT, out["tokens"]) == prompt


def test_embeddings_tokenize_as_their_ensemble(http, openai_client, bert_tokenizer):
    text = "Tokenisation runs inside Triton, not in the frontend."
    out = tokenize(http, model=EMBEDDINGS, prompt=text, return_token_strs=True)
    assert out["count"] == openai_client.embeddings.create(model=EMBEDDINGS, input=text).usage.prompt_tokens
    assert out["tokens"] == bert_tokenizer(text)["input_ids"]
    assert out["token_strs"][0] == "[CLS]" and out["token_strs"] == bert_tokenizer.convert_ids_to_tokens(out["tokens"])
    assert out["max_model_len"] == 256
    assert detokenize(http, EMBEDDINGS, out["tokens"]) == bert_tokenizer.decode(out["tokens"])
    bare = tokenize(http, model=EMBEDDINGS, prompt=text, add_special_tokens=False)
    assert bare["tokens"] == out["tokens"][1:-1]


def test_an_image_counts_as_its_tokens(http, openai_client):
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                             {"type": "image_url", "image_url": {"url": url}}]}]
    out = tokenize(http, model=VISION, messages=messages)
    usage = openai_client.chat.completions.create(model=VISION, messages=messages, **ONE_TOKEN).usage
    assert out["count"] == usage.prompt_tokens
    text_only = tokenize(http, model=VISION, messages=[{"role": "user", "content": "What is this?"}])["count"]
    assert out["count"] > text_only + 1  # the placeholder became the image's tokens


@pytest.mark.parametrize("model", [CHAT, EMBEDDINGS])
def test_ids_outside_the_vocabulary_are_400(http, model):
    r = http.post("/detokenize", json={"model": model, "tokens": [1, 10**9]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_token_ids" and r.json()["error"]["param"] == "tokens"


def test_over_the_context_and_unknown_models(http):
    r = http.post("/tokenize", json={"model": EMBEDDINGS, "prompt": "word " * 300})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text
    r = http.post("/tokenize", json={"model": "no-such-model", "prompt": "a"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", r.text
