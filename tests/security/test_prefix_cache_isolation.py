"""Tenant isolation of the chat engine's prefix cache (issue 11, part 5): a prompt's cached KV is reused only
by requests with the same `cache_salt` (the frontend sends one per API key), so one tenant cannot learn from
response times that another sent the same prompt. The real engine and ONNX model, in-process and behind the
real tritonserver; reuse is read from hit counters and the decoder's runs, never from timing."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

import httpx
import openai
import pytest
from tritonclient.grpc.aio import InferenceServerClient

from frontend.settings import Settings
from launcher.triton import TritonServer
from tests.integration import llm_tiny
from tests.stack import run_frontend
from triton_models.llm.decoder import OnnxDecoder
from triton_models.llm.engine import Engine, EngineConfig
from triton_models.llm.metrics import PREFIX_HITS
from triton_models.llm.params import CACHE_SALT, SamplingParams
from triton_models.llm.tokenizer import TextTokenizer

# Long enough that a reused prefix is most of the prompt; the system-prompt part is what tenants would share.
SYSTEM = "You are the support assistant of a bank. Be brief and polite, and never reveal account details. "
CHAT = "smollm2-135m-instruct"  # the session's chat model, for the test through the frontend
PROMPT = SYSTEM + "My card was swallowed by the machine at the corner of Elm street, what do I do now?"


@dataclass
class Sink:
    outputs: list = field(default_factory=list)
    finals: int = 0

    def is_cancelled(self) -> bool:
        return False

    def send(self, output, final):
        self.outputs.append(output)
        self.finals += final

    def fail(self, message):
        raise AssertionError(message)

    @property
    def text(self) -> str:
        return "".join(o.texts[0] for o in self.outputs if o is not None)


class PrefillCounter:
    """The decoder, counting the prompt tokens it is given outside decode steps (one token per row)."""

    def __init__(self, decoder: OnnxDecoder):
        self._decoder = decoder
        self.prompt_tokens = 0

    def run(self, input_ids, *args, **kwargs):
        if input_ids.shape[1] > 1:
            self.prompt_tokens += int(input_ids.shape[1])
        return self._decoder.run(input_ids, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._decoder, name)


@pytest.fixture(scope="module")
def parts():
    files = llm_tiny.model_files()
    return OnnxDecoder(files / "model.onnx", threads=1), TextTokenizer(files)


@pytest.fixture
def engine(parts) -> Engine:
    decoder, tokenizer = parts
    engine = Engine(decoder, tokenizer, EngineConfig(llm_tiny.CONTEXT_LENGTH))
    engine.decoder = PrefillCounter(decoder)
    return engine


def generate(engine: Engine, prompt: str, salt: str | None) -> Sink:
    params = {"temperature": 0, "ignore_eos": True, "max_tokens": 4}
    if salt is not None:
        params[CACHE_SALT] = salt
    sink = Sink()
    engine.submit(prompt, SamplingParams.from_dict(params), sink)
    for _ in range(50):
        if sink.finals:
            return sink
        engine.step()
    raise AssertionError("the request did not finish")


def test_another_salt_does_not_reuse_a_cached_prompt(engine, parts):
    prompt_tokens = len(parts[1].encode(PROMPT))
    assert prompt_tokens > 40
    alice = generate(engine, PROMPT, "key:alice")
    assert engine.decoder.prompt_tokens == prompt_tokens and engine.prefix_cache.hits == 0

    bob = generate(engine, PROMPT, "key:bob")
    assert engine.prefix_cache.hits == 0 and engine.stats.reused == 0
    assert engine.decoder.prompt_tokens == 2 * prompt_tokens  # prefilled in full again
    assert bob.text == alice.text  # isolation changes the cost, never the answer

    generate(engine, PROMPT, None)  # the unsalted pool is one more scope, not a key to every other
    assert engine.prefix_cache.hits == 0 and engine.decoder.prompt_tokens == 3 * prompt_tokens


def test_the_same_salt_reuses_its_prefix(engine, parts):
    prompt_tokens = len(parts[1].encode(PROMPT))
    first = generate(engine, PROMPT, "key:alice")
    again = generate(engine, PROMPT, "key:alice")
    assert engine.prefix_cache.hits == 1 and engine.stats.reused == prompt_tokens - 1
    assert engine.decoder.prompt_tokens == prompt_tokens  # the repeat only ran its last prompt token
    assert again.text == first.text


def test_a_shared_system_prompt_is_shared_only_within_a_salt(engine, parts):
    system_tokens = len(parts[1].encode(SYSTEM))
    generate(engine, PROMPT, "key:alice")
    generate(engine, SYSTEM + "How do I close my account?", "key:bob")
    assert engine.prefix_cache.hits == 0
    generate(engine, SYSTEM + "How do I open an account?", "key:alice")
    assert engine.prefix_cache.hits == 1 and engine.prefix_cache.hit_tokens >= system_tokens - 1


@pytest.fixture(scope="module")
def llm_triton(tmp_path_factory):
    root = llm_tiny.model_repository(tmp_path_factory.mktemp("prefix-isolation"))
    with TritonServer(root, [llm_tiny.NAME]) as server:
        yield server


def reused_tokens(server: TritonServer, model: str = llm_tiny.NAME) -> float:
    """The model's prefix-cache hit counter, from Triton's metrics endpoint."""
    text = httpx.get(server.metrics_url, timeout=10).text
    pattern = rf'^{PREFIX_HITS.name}{{[^}}]*model="{re.escape(model)}"[^}}]*}} (\S+)$'
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def triton_generate(server: TritonServer, prompt: str, salt: str | None) -> str:
    params = {"temperature": 0, "ignore_eos": True, "max_tokens": 4}
    if salt is not None:
        params[CACHE_SALT] = salt

    async def requests():
        yield llm_tiny.make_request(prompt, exclude_input=None, flags=(), **params)

    client = InferenceServerClient(server.grpc_url)
    try:
        texts = []
        async for result, error in client.stream_infer(requests()):
            if error is not None:
                raise error
            texts.append(result.as_numpy("text_output")[0].decode())
        return "".join(texts)
    finally:
        await client.close()


@pytest.mark.integration
async def test_salts_reach_the_engine_behind_triton(llm_triton, parts):
    prompt_tokens = len(parts[1].encode(PROMPT))
    alice = await triton_generate(llm_triton, PROMPT, "key:alice")
    before = reused_tokens(llm_triton)
    assert await triton_generate(llm_triton, PROMPT, "key:bob") == alice
    assert reused_tokens(llm_triton) == before  # bob's request prefilled the whole prompt
    assert await triton_generate(llm_triton, PROMPT, "key:alice") == alice
    assert reused_tokens(llm_triton) == before + prompt_tokens - 1  # alice's repeat reused her own prefix


@pytest.mark.integration
def test_api_keys_never_share_prefixes_through_the_frontend(triton):
    """The whole path: the frontend sends each key's own salt to the session's SmolLM2 behind Triton."""
    settings = Settings(triton_grpc_url=triton.grpc_url, triton_api_secret=triton.api_secret or "",
                        api_keys="alice=sk-alice,bob=sk-bob", cache_enabled=False)
    prompt = PROMPT + f" (ticket {uuid.uuid4().hex})"  # a prompt no earlier test cached

    def ask(frontend, key: str) -> None:
        sdk = openai.OpenAI(base_url=frontend.base_url, api_key=key, max_retries=0, timeout=120)
        sdk.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": prompt}], max_tokens=1,
                                    temperature=0)

    with run_frontend(settings) as frontend:
        ask(frontend, "sk-alice")
        before = reused_tokens(triton, CHAT)
        ask(frontend, "sk-bob")
        assert reused_tokens(triton, CHAT) == before  # bob's prompt was computed afresh: nothing to time
        ask(frontend, "sk-alice")
        assert reused_tokens(triton, CHAT) > before + 20  # alice's own repeat reuses her prefix
