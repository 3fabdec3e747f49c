"""One request never hurts another in the chat engine: poisoned requests beside 8 greedy streams.

The poisons: `temperature: 1e-50` with `top_p: 0.5` (crashed the sampler and, through the step handler, every
running sequence) and a sequence whose sampling raises (injected: no input makes the fixed sampler raise).
Each greedy stream must produce exactly its solo text (the tiny fp32 model is exact); the poisoned request
gets its own answer or its own error. In-process on the Engine, then through a real tritonserver, whose
`modelgate_engine_sequences` gauge must show the engine idle afterwards.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from tritonclient.grpc import InferenceServerException
from tritonclient.grpc.aio import InferenceServerClient

from export_scripts.common import SHIM
from launcher.triton import TritonServer
from tests.integration import llm_tiny
from triton_models.contract import GENERATION_FAILED, ModelError
from triton_models.llm.decoder import OnnxDecoder
from triton_models.llm.engine import Engine, EngineConfig
from triton_models.llm.metrics import SEQUENCES
from triton_models.llm.params import SamplingParams
from triton_models.llm.tokenizer import TextTokenizer

pytestmark = pytest.mark.integration

PROMPTS = [f"Stream {i}: " + "tell me more " * i for i in range(8)]
GREEDY = {"temperature": 0, "max_tokens": 12, "ignore_eos": True}
TINY_TEMPERATURE = {"temperature": 1e-50, "top_p": 0.5, "max_tokens": 12, "ignore_eos": True}
POISON_SEED = 66601  # the test model's sampler raises for this seed once the sequence has 2 tokens
POISONED = {"temperature": 0.8, "seed": POISON_SEED, "max_tokens": 12, "ignore_eos": True}

# The tiny model with a fault injected into its own sampler: how a test reaches "sampling raised" through Triton.
POISONED_MODEL = SHIM.format(module="triton_models.llm.model") + f'''
from triton_models.llm import sampler as _sampler

_sample = _sampler.Sampler.sample


def _poisoned(self, logits):
    if self.params.seed == {POISON_SEED} and sum(self._counts.values()) >= 2:
        raise RuntimeError("injected sampling fault")
    return _sample(self, logits)


_sampler.Sampler.sample = _poisoned
'''


# -- in-process ----------------------------------------------------------------------------------------------

class Sink:
    def __init__(self):
        self.texts, self.error, self.finals = [], None, 0

    def is_cancelled(self):
        return False

    def send(self, output, final):
        self.texts += [output.texts[0]] if output is not None else []
        self.finals += final

    def fail(self, error):
        self.error, self.finals = error, self.finals + 1


@pytest.fixture(scope="module")
def parts():
    files = llm_tiny.model_files()
    return OnnxDecoder(files / "model.onnx", threads=1), TextTokenizer(files)


def _run(parts, requests: list[tuple[str, dict]], poison=None) -> list[Sink]:
    """Submit every (prompt, params) at once, step the engine until all are answered; `poison(request)` may
    tamper with one request's sequences first."""
    decoder, tokenizer = parts
    engine = Engine(decoder, tokenizer, EngineConfig(llm_tiny.CONTEXT_LENGTH))
    sinks = []
    for prompt, params in requests:
        sinks.append(Sink())
        request = engine.submit(prompt, SamplingParams.from_dict(params), sinks[-1], stream=True)
        if poison is not None:
            poison(request)
    for _ in range(200):
        if all(s.finals for s in sinks):
            break
        engine.step()
    assert all(s.finals == 1 for s in sinks) and engine.cache.batch == 0
    return sinks


def _raise_after_two_tokens(request):
    if request.params.seed == POISON_SEED:
        sampler = request.sequences[0].sampler
        real = sampler.sample
        sampler.sample = lambda row: (_ for _ in ()).throw(RuntimeError("injected")) \
            if sum(sampler._counts.values()) >= 2 else real(row)


def test_poisoned_requests_beside_eight_greedy_streams_in_process(parts):
    solo = ["".join(_run(parts, [(p, GREEDY)])[0].texts) for p in PROMPTS]
    requests = [(p, GREEDY) for p in PROMPTS[:4]] + [("Tiny", TINY_TEMPERATURE), ("Raises", POISONED)]
    requests += [(p, GREEDY) for p in PROMPTS[4:]]
    sinks = _run(parts, requests, poison=_raise_after_two_tokens)
    streams = sinks[:4] + sinks[6:]
    assert ["".join(s.texts) for s in streams] == solo
    assert all(s.error is None for s in streams)
    tiny, raised = sinks[4], sinks[5]
    assert tiny.error is None and "".join(tiny.texts) == "".join(_run(parts, [("Tiny", GREEDY)])[0].texts)
    assert raised.error.code == GENERATION_FAILED and len(raised.texts) == 2  # two tokens, then its own error


# -- through tritonserver -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("isolation-repository")
    llm_tiny.model_repository(root)
    (root / llm_tiny.NAME / "1" / "model.py").write_text(POISONED_MODEL)
    with TritonServer(root, [llm_tiny.NAME]) as running:
        yield running


async def _stream(client, prompt: str, params: dict) -> tuple[str, ModelError | None]:
    async def requests():
        yield llm_tiny.make_request(prompt, stream=True, exclude_input=None, flags=(), **params)

    text = ""
    async for result, error in client.stream_infer(requests()):
        if error is not None:
            assert isinstance(error, InferenceServerException)
            return text, ModelError.decode(error.message())
        text += result.as_numpy("text_output")[0].decode()
    return text, None


def _sequences(server: TritonServer) -> dict[str, float]:
    metrics = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text
    return {state: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
            if line.startswith(SEQUENCES.name + "{")
            for state in ("running", "waiting") if f'state="{state}"' in line}


async def test_poisoned_requests_beside_eight_greedy_streams_through_triton(server):
    client = InferenceServerClient(server.grpc_url)
    try:
        solo = [await _stream(client, p, GREEDY) for p in PROMPTS]
        tiny_solo = await _stream(client, "Tiny", GREEDY)
        together = await asyncio.wait_for(asyncio.gather(
            *(_stream(client, p, GREEDY) for p in PROMPTS[:4]),
            _stream(client, "Tiny", TINY_TEMPERATURE), _stream(client, "Raises", POISONED),
            *(_stream(client, p, GREEDY) for p in PROMPTS[4:]),
        ), timeout=120)
    finally:
        await client.close()
    assert together[:4] + together[6:] == solo  # every stream: its solo text, no error
    assert together[4] == tiny_solo  # 1e-50 is greedy
    text, error = together[5]
    assert error is not None and error.code == GENERATION_FAILED and error.status == 500
    assert "injected" not in error.message  # the cause stays in the model's log
    for _ in range(40):  # the gauge is set after the step that sent the last responses
        if _sequences(server) == {"running": 0.0, "waiting": 0.0}:
            break
        await asyncio.sleep(0.05)
    assert _sequences(server) == {"running": 0.0, "waiting": 0.0}
