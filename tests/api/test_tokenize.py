"""POST /tokenize and /detokenize in-process: which model answers, what it is sent (the chat prompt exactly as
/v1/chat/completions renders it), vLLM's response shapes, and the errors."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from frontend.app import create_app
from frontend.auth import hash_key
from frontend.errors import from_triton
from frontend.settings import Settings
from tests.api.conftest import FakeBackend, assert_error
from tests.api.test_chat import MESSAGES, PROMPT
from triton_models import contract

VOCAB = 1000  # the fake tokenizer's ids: 0..999


class TokenizingBackend(FakeBackend):
    """FakeBackend whose chat model and embeddings tokenizer answer the entry points as the real ones do:
    words are tokens (as the fake chat model counts them), ids are given out per word in order of appearance."""

    def __init__(self):
        super().__init__()
        self.models["emb"][contract.TOKENIZER_MODEL] = "emb_tokenizer"
        self.words: list[str] = []

    def entry(self, inputs) -> dict:
        if contract.DETOKENIZE in inputs:
            ids = inputs[contract.DETOKENIZE].tolist()
            bad = next((i for i in ids if i >= VOCAB), None)
            if bad is not None:
                raise from_triton("StatusCode.INVALID_ARGUMENT", contract.ModelError(
                    contract.INVALID_TOKEN_IDS, f"tokens holds token id {bad}, outside this model's vocabulary",
                    "tokens").encode())
            text = " ".join(self.words[i] if i < len(self.words) else f"<{i}>" for i in ids)
            return {contract.DETOKENIZED: np.array([text.encode()], dtype=np.object_)}
        words = inputs["text_input"][0].decode().split()
        if inputs.get(contract.ADD_SPECIAL_TOKENS, [False])[0]:
            words = ["[CLS]", *words]
        ids = []
        for word in words:
            if word not in self.words:
                self.words.append(word)
            ids.append(self.words.index(word))
        return {contract.TOKEN_IDS: np.array(ids, dtype=np.int64),
                contract.TOKEN_STRS: np.array([w.encode() for w in words], dtype=np.object_)}

    async def infer(self, model, inputs, outputs, request_id=""):
        if model == "emb_tokenizer":
            self.calls.append((model, inputs))
            return self.entry(inputs)
        return await super().infer(model, inputs, outputs, request_id)

    async def stream(self, model, inputs, outputs, request_id=""):
        if contract.TOKENIZE in inputs or contract.DETOKENIZE in inputs:  # one response, as the chat model sends it
            self.calls.append((model, inputs))
            yield {name: array for name, array in self.entry(inputs).items() if name in outputs}
            return
        async for response in super().stream(model, inputs, outputs, request_id):
            yield response


@pytest.fixture
def backend() -> TokenizingBackend:
    return TokenizingBackend()


async def test_chat_messages_are_the_chat_completions_prompt_and_count(client, backend):
    r = await client.post("/tokenize", json={"model": "llm", "messages": MESSAGES})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"count", "max_model_len", "tokens"}  # token_strs only when asked, as vLLM
    model, sent = backend.calls[-1]
    assert model == "llm" and sent["text_input"][0].decode() == PROMPT and sent[contract.TOKENIZE].tolist() == [True]
    assert contract.ADD_SPECIAL_TOKENS not in sent  # the engine's own rule unless the client forces one
    chat = await client.post("/v1/chat/completions", json={"model": "llm", "messages": MESSAGES})
    assert backend.llm.prompts == [PROMPT]
    assert body["count"] == len(body["tokens"]) == chat.json()["usage"]["prompt_tokens"]
    assert body["max_model_len"] == 64


async def test_generation_prompt_and_tools_render_as_chat_completions_does(client, backend):
    await client.post("/tokenize", json={"model": "llm", "messages": MESSAGES, "add_generation_prompt": False})
    assert backend.calls[-1][1]["text_input"][0].decode() == PROMPT.removesuffix("<|assistant|>")
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    r = await client.post("/tokenize", json={"model": "llm", "messages": MESSAGES, "tools": [tool]})
    assert r.status_code == 200, r.text
    tokenized = backend.calls[-1][1]["text_input"][0].decode()
    await client.post("/v1/chat/completions", json={"model": "llm", "messages": MESSAGES, "tools": [tool]})
    assert tokenized == backend.llm.prompts[-1] and "weather" in tokenized


async def test_prompt_with_token_strings_and_forced_special_tokens(client, backend):
    r = await client.post("/tokenize", json={"model": "llm", "prompt": "a b a", "return_token_strs": True,
                                             "add_special_tokens": True})
    assert r.status_code == 200, r.text
    assert r.json() == {"count": 4, "max_model_len": 64, "tokens": [0, 1, 2, 1], "token_strs": ["[CLS]", "a", "b", "a"]}
    assert backend.calls[-1][1][contract.ADD_SPECIAL_TOKENS].tolist() == [True]


async def test_embeddings_models_tokenize_through_their_tokenizer_step(client, backend):
    r = await client.post("/tokenize", json={"model": "emb", "prompt": "one two"})
    assert r.status_code == 200, r.text
    assert r.json() == {"count": 2, "max_model_len": 16, "tokens": [0, 1]}
    assert backend.calls[-1][0] == "emb_tokenizer"
    r = await client.post("/detokenize", json={"model": "emb", "tokens": [1, 0]})
    assert r.json() == {"prompt": "two one"} and backend.calls[-1][0] == "emb_tokenizer"


async def test_detokenize_round_trip_on_the_chat_model(client, backend):
    tokens = (await client.post("/tokenize", json={"model": "llm", "prompt": "hello big world"})).json()["tokens"]
    r = await client.post("/detokenize", json={"model": "llm", "tokens": tokens})
    assert r.status_code == 200, r.text
    assert r.json() == {"prompt": "hello big world"}
    model, sent = backend.calls[-1]
    assert model == "llm" and sent[contract.DETOKENIZE].dtype == np.int64


async def test_no_tokens_detokenize_to_nothing_without_a_model_call(client, backend):
    r = await client.post("/detokenize", json={"model": "llm", "tokens": []})
    assert r.json() == {"prompt": ""} and backend.calls == []


async def test_ids_outside_the_vocabulary_are_invalid_token_ids(client):
    assert_error(await client.post("/detokenize", json={"model": "llm", "tokens": [1, VOCAB]}), 400, "tokens",
                 "invalid_token_ids")
    assert_error(await client.post("/detokenize", json={"model": "llm", "tokens": [-1]}), 400, "tokens.0")
    assert_error(await client.post("/detokenize", json={"model": "llm", "tokens": [2**63]}), 400, "tokens.0")


async def test_over_the_context_is_context_length_exceeded(client):
    error = assert_error(await client.post("/tokenize", json={"model": "emb", "prompt": "w " * 17}), 400, "prompt",
                         "context_length_exceeded")
    assert "16" in error["message"] and "17" in error["message"]
    assert_error(await client.post("/detokenize", json={"model": "emb", "tokens": [0] * 17}), 400, "tokens",
                 "context_length_exceeded")


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"model": "llm"}, "prompt", None),
    ({"model": "llm", "prompt": "a", "messages": MESSAGES}, "messages", None),
    ({"model": "llm", "prompt": "a", "add_generation_prompt": False}, "add_generation_prompt", None),
    ({"model": "llm", "prompt": "a", "tools": []}, "tools", None),
    ({"model": "llm", "messages": MESSAGES, "continue_final_message": True}, "continue_final_message",
     "unsupported_parameter"),
    ({"model": "llm", "messages": MESSAGES, "chat_template": "{{ messages }}"}, "chat_template",
     "unsupported_parameter"),
    ({"model": "llm", "messages": []}, "messages", None),
    ({"model": "llm", "prompt": 5}, "prompt", None),
    ({"prompt": "a"}, "model", None),
    ({"model": "emb", "messages": MESSAGES}, "messages", "model_task_mismatch"),
])
async def test_invalid_tokenize_requests_are_400_naming_the_field(client, body, param, code):
    assert_error(await client.post("/tokenize", json=body), 400, param, code)


async def test_unknown_model_is_404_as_elsewhere(client):
    assert_error(await client.post("/tokenize", json={"model": "nope", "prompt": "a"}), 404, "model", "model_not_found")
    assert_error(await client.post("/detokenize", json={"model": "nope", "tokens": [1]}), 404, "model",
                 "model_not_found")


async def test_embeddings_model_exported_without_a_tokenizer_model_says_so(client, backend):
    del backend.models["emb"][contract.TOKENIZER_MODEL]
    error = assert_error(await client.post("/tokenize", json={"model": "emb", "prompt": "a"}), 400, "model")
    assert contract.TOKENIZER_MODEL in error["message"]


@pytest.fixture
def keyed_settings(tmp_path) -> Settings:
    keys = [{"name": "team", "key_sha256": hash_key("sk-team"), "scopes": ["inference"]},
            {"name": "ops", "key_sha256": hash_key("sk-ops"), "scopes": ["admin"]}]
    (tmp_path / "keys.json").write_text(json.dumps({"keys": keys}))
    return Settings(model_index_ttl_s=0, api_keys_file=str(tmp_path / "keys.json"))


@pytest.mark.parametrize("path, body", [("/tokenize", {"model": "llm", "prompt": "a"}),
                                        ("/detokenize", {"model": "llm", "tokens": [0]})])
async def test_the_inference_scope_is_needed(backend, keyed_settings, path, body):
    app = create_app(keyed_settings, backend=backend)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        assert_error(await c.post(path, json=body), 401, code="invalid_api_key")
        assert_error(await c.post(path, json=body, headers={"Authorization": "Bearer sk-ops"}), 403)
        r = await c.post(path, json=body, headers={"Authorization": "Bearer sk-team"})
        assert r.status_code == 200, r.text
