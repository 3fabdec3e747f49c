"""The app in-process (httpx.ASGITransport) against FakeBackend: no Triton, no network."""

from __future__ import annotations

import contextlib
import hashlib

import httpx
import numpy as np
import pytest

from frontend.app import create_app
from frontend.errors import APIError, ContextLengthExceeded, from_triton
from frontend.settings import Settings
from tests.api import fake_llm

DIM = 8


def fake_vector(key: str) -> np.ndarray:
    """A deterministic unit vector per input, so tests can check order and values."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


class FakeBackend:
    """Speaks the Backend interface with one embedding model `emb` (+ encoder) and one chat model `llm`."""

    def __init__(self):
        self.ready = True
        self.fail: Exception | None = None
        self.calls: list[tuple[str, dict]] = []
        self.models = {
            "emb": {"openai_task": "embeddings", "embedding_dim": str(DIM), "max_input_tokens": "16",
                    "max_inputs_per_request": "2", "token_input_model": "emb_encoder",
                    "vocab_size": "1000", "truncation_side": "left"},
            "emb_encoder": {},
            "emb_tokenizer": {},
            "llm": dict(fake_llm.PARAMETERS),
        }
        # What each config says besides its parameters (triton_models.contract.model_kind reads it); a model
        # not listed is a Python model, as the chat engine is.
        self.configs = {"emb": {"platform": "ensemble"}, "emb_encoder": {"backend": "onnxruntime"}}
        self.states = {name: "READY" for name in self.models}
        self.llm = fake_llm.FakeLLM(int(self.models["llm"]["context_length"]))

    async def server_ready(self) -> bool:
        return self.ready

    async def repository_index(self) -> list[dict]:
        if self.fail:
            raise self.fail
        return [{"name": n, "version": "1", "state": s} for n, s in self.states.items()]

    async def model_config(self, name: str) -> dict:
        return {"name": name, **self.configs.get(name, {"backend": "python"}),
                "parameters": {k: {"string_value": v} for k, v in self.models[name].items()}}

    def _loaded(self, model: str) -> None:
        """Triton's answer to a call on a model it does not have loaded."""
        if self.states.get(model, "READY") != "READY":
            raise from_triton("StatusCode.NOT_FOUND", f"Request for unknown model: '{model}' is not found")

    async def infer(self, model, inputs, outputs, request_id=""):
        self.calls.append((model, inputs))
        if self.fail:
            raise self.fail
        self._loaded(model)
        if model == "emb":  # a word is a token, plus two special ones, as the tokenizer model counts
            texts = [t.decode() for t in inputs["text_input"]]
            if "truncate_prompt_tokens" in inputs:  # keep the last words, as the tokenizer model does
                keep = int(inputs["truncate_prompt_tokens"][0]) - 2
                texts = [" ".join(t.split()[-keep:]) for t in texts]
            lengths = [len(t.split()) + 2 for t in texts]
            limit = int(self.models["emb"]["max_input_tokens"])
            if max(lengths) > limit:
                raise ContextLengthExceeded(f"This model's maximum context length is {limit} tokens", param="input")
            return {"embedding": np.stack([fake_vector(t) for t in texts]),
                    "num_input_tokens": np.array(lengths, dtype=np.int32)}
        if model == "emb_encoder":
            rows = [ids[mask == 1].tolist() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
            return {"embedding": np.stack([fake_vector(str(r)) for r in rows])}
        raise AssertionError(f"unexpected model {model}")

    async def stream(self, model, inputs, outputs, request_id=""):
        """The chat model `llm` (tests/api/fake_llm.py), as TritonBackend.stream yields a decoupled model."""
        self.calls.append((model, inputs))
        if self.fail:
            raise self.fail
        self._loaded(model)
        if self.models.get(model, {}).get("openai_task") != "chat":  # `llm`, or a chat model a test adds
            raise AssertionError(f"unexpected model {model}")
        async with contextlib.aclosing(self.llm.stream(inputs)) as responses:  # closed as Triton's stream is
            async for response in responses:
                yield response

    async def load_model(self, name, config=None):  # pragma: no cover
        self.states[name] = "READY"

    async def unload_model(self, name, unload_dependents=False):  # pragma: no cover
        self.states[name] = "UNAVAILABLE"

    async def close(self):
        pass


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def settings() -> Settings:
    return Settings(model_index_ttl_s=0, max_body_bytes=4096, embeddings_max_inputs=5)


@pytest.fixture
async def client(backend, settings):
    app = create_app(settings, backend=backend)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


def assert_error(response: httpx.Response, status: int, param: str | None = None, code: str | None = None):
    """The response is OpenAI's error envelope with this status (and param/code when given)."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error
