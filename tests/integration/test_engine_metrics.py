"""Engine metrics for real: the chat engine publishing as it runs (tiny model, in-process), the session's
tritonserver after requests through the frontend (SmolLM2, LLaVA, Stable Diffusion), scraped and parsed with
prometheus_client, and a Triton of this module's own where the tiny model is reloaded, doubled and unloaded:
every series belongs to one live instance and leaves with it."""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from collections import defaultdict

import httpx
import pytest
import tritonclient.http as triton_http
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc.aio import InferenceServerClient

from launcher.triton import TritonServer
from tests.conftest import REPOSITORY
from tests.integration import llm_tiny
from triton_models.diffusion.metrics import STEP_TIME
from triton_models.llm.decoder import OnnxDecoder
from triton_models.llm.engine import Engine, EngineConfig
from triton_models.llm.metrics import (
    INTER_TOKEN_LATENCY,
    KV_CAPACITY,
    KV_USED,
    PREEMPTIONS,
    PREFIX_CACHE_TOKENS,
    PREFIX_HITS,
    QUEUE_TIME,
    SEQUENCES,
    SPECS,
    TIME_TO_FIRST_TOKEN,
    EngineMetrics,
)
from triton_models.llm.params import SamplingParams
from triton_models.llm.scheduler import Limits
from triton_models.llm.tokenizer import TextTokenizer

pytestmark = pytest.mark.integration

CHAT, VISION, IMAGES = "smollm2-135m-instruct", "tiny-llava-random", "tiny-sd-random"
NO_STORE = {"Cache-Control": "no-store"}  # the frontend's response cache must not answer for the engine
GREEDY = {"temperature": 0, "ignore_eos": True}


# -- the engine alone, publishing into a recorder ----------------------------------------------------------

class Recorder:
    """A sink keeping every call, as TritonMetrics would make them on pb_utils."""

    def __init__(self):
        self.sets: list[tuple[str, str | None, float]] = []
        self.increments: dict[str, float] = defaultdict(float)
        self.observed: dict[str, list[float]] = defaultdict(list)

    def set(self, name, value, label_value=None):
        self.sets.append((name, label_value, value))

    def increment(self, name, value):
        self.increments[name] += value

    def observe(self, name, values):
        self.observed[name].extend(values)

    def gauge(self, name, label_value=None) -> list[float]:
        """Every value the gauge was set to, in order."""
        return [v for n, lv, v in self.sets if (n, lv) == (name, label_value)]


class Sink:
    def __init__(self):
        self.finals = 0
        self.error = None

    def is_cancelled(self):
        return False

    def send(self, output, final):
        self.finals += final

    def fail(self, error):
        self.error = error
        self.finals += 1


@pytest.fixture(scope="module")
def parts():
    files = llm_tiny.model_files()
    return OnnxDecoder(files / "model.onnx", threads=1), TextTokenizer(files)


def run_engine(parts, prompts: list[str], max_tokens: int, **limits) -> tuple[Engine, Recorder]:
    """The prompts queued before the engine thread starts (no race with a fast model), run to the end."""
    decoder, tokenizer = parts
    recorder = Recorder()
    config = EngineConfig(llm_tiny.CONTEXT_LENGTH, Limits(**limits))
    engine = Engine(decoder, tokenizer, config, EngineMetrics(recorder, interval_s=0.01))
    sinks = []
    for prompt in prompts:
        sinks.append(Sink())
        engine.submit(prompt, SamplingParams.from_dict({"max_tokens": max_tokens, **GREEDY}), sinks[-1])
    engine.start()
    try:
        deadline = time.monotonic() + 60
        while not all(s.finals for s in sinks) or recorder.gauge(SEQUENCES.name, "running")[-1:] != [0]:
            assert time.monotonic() < deadline, "the engine did not finish"
            time.sleep(0.01)
    finally:
        engine.stop()
    assert all(s.error is None for s in sinks)
    return engine, recorder


def test_the_engine_publishes_counts_as_they_change_and_one_observation_per_request(parts):
    prompts = [f"Count {i} and then some more words" for i in range(3)]
    _, recorder = run_engine(parts, prompts, max_tokens=5, max_num_seqs=2)
    running, waiting = recorder.gauge(SEQUENCES.name, "running"), recorder.gauge(SEQUENCES.name, "waiting")
    assert running[-1] == waiting[-1] == 0 and max(running) == 2 and max(waiting) >= 1
    for name, label in ((SEQUENCES.name, "running"), (SEQUENCES.name, "waiting"), (KV_USED.name, None)):
        values = recorder.gauge(name, label)
        assert all(a != b for a, b in itertools.pairwise(values))  # only changes are sent
    assert recorder.gauge(KV_USED.name)[-1] == 0 and max(recorder.gauge(KV_USED.name)) > 0
    assert recorder.gauge(KV_CAPACITY.name) == [Limits().max_kv_tokens]  # sent once
    assert recorder.gauge(PREFIX_CACHE_TOKENS.name)[-1] > 0  # the finished prompts stay for reuse
    assert len(recorder.observed[QUEUE_TIME.name]) == len(recorder.observed[TIME_TO_FIRST_TOKEN.name]) == 3
    assert max(recorder.observed[QUEUE_TIME.name]) > 0  # the third waited for a row
    ttft, queue = recorder.observed[TIME_TO_FIRST_TOKEN.name], recorder.observed[QUEUE_TIME.name]
    assert sum(ttft) > sum(queue)  # each first token comes after its admission, and a prefill
    gaps = recorder.observed[INTER_TOKEN_LATENCY.name]
    assert 4 <= len(gaps) <= 3 * 4 and all(0 < g < 5 for g in gaps)  # at most one per decode step
    assert PREEMPTIONS.name not in recorder.increments and PREFIX_HITS.name not in recorder.increments


def test_preemptions_and_prefix_hits_are_counted(parts):
    prompts = ["Hello there", "The quick brown fox jumps over", "One", "Why is the sky blue? Because"]
    engine, recorder = run_engine(parts, prompts, max_tokens=20, max_kv_tokens=60)  # four cannot all fit
    assert recorder.increments[PREEMPTIONS.name] == engine.stats.preempted > 0
    engine, recorder = run_engine(parts, ["A long shared system prompt, then a question"] * 2, max_tokens=2,
                                  max_num_seqs=1)
    assert recorder.increments[PREFIX_HITS.name] == engine.prefix_cache.hit_tokens > 0


# -- the session's tritonserver, through the frontend -------------------------------------------------------

def scrape(triton: TritonServer) -> list:
    text = httpx.get(triton.metrics_url, timeout=10).text
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples, name: str, model: str, **labels) -> float:
    """The sum of the model's samples named `name` (across instances) with these labels."""
    return sum(s.value for s in samples if s.name == name and s.labels.get("model") == model
               and all(s.labels.get(k) == v for k, v in labels.items()))


def wait_until(check, what: str, timeout_s: float = 30.0):
    """Scrape until `check(samples)` holds; the samples it held on."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = check()
        if samples is not None:
            return samples
        assert time.monotonic() < deadline, f"still not {what} after {timeout_s}s"
        time.sleep(0.1)


def idle_after(triton, model: str, requests_before: float, requests: int):
    """The samples once the model's engine reported every request's first token and went idle."""
    def check():
        samples = scrape(triton)
        done = value(samples, f"{TIME_TO_FIRST_TOKEN.name}_count", model) >= requests_before + requests
        idle = value(samples, SEQUENCES.name, model, state="running") == 0 \
            and value(samples, SEQUENCES.name, model, state="waiting") == 0
        return samples if done and idle else None

    return wait_until(check, f"{model} idle after {requests} requests")


def chat(openai_client, model: str, content: str, max_tokens: int = 6):
    """A greedy answer of exactly `max_tokens` tokens, computed by the engine (never the frontend's cache)."""
    return openai_client.chat.completions.create(
        model=model, messages=[{"role": "system", "content": "You answer in one short sentence."},
                               {"role": "user", "content": content}],
        max_tokens=max_tokens, temperature=0, extra_body={"ignore_eos": True}, extra_headers=NO_STORE)


def test_chat_requests_show_on_tritons_metrics_endpoint(triton, openai_client):
    before = scrape(triton)
    count_before = value(before, f"{TIME_TO_FIRST_TOKEN.name}_count", CHAT)
    hits_before = value(before, PREFIX_HITS.name, CHAT)
    question = f"What is the capital of France? (ticket {uuid.uuid4().hex})"
    for _ in range(2):  # the same prompt twice: the second reuses the first's prefix
        chat(openai_client, CHAT, question)
    chat(openai_client, CHAT, f"Name a colour. (ticket {uuid.uuid4().hex})")
    after = idle_after(triton, CHAT, count_before, 3)

    assert value(after, f"{TIME_TO_FIRST_TOKEN.name}_count", CHAT) == count_before + 3
    queued = f"{QUEUE_TIME.name}_count"
    assert value(after, queued, CHAT) - value(before, queued, CHAT) == 3
    ttft_sum = f"{TIME_TO_FIRST_TOKEN.name}_sum"
    assert value(after, ttft_sum, CHAT) > value(before, ttft_sum, CHAT)
    name = f"{INTER_TOKEN_LATENCY.name}_count"
    gaps = value(after, name, CHAT) - value(before, name, CHAT)
    # six tokens each, one observation per decode step after the first: 4 (the first token from a prefill)
    # or 5 (a prompt known to the prefix cache: its first token from a decode step)
    assert 3 * 4 <= gaps <= 3 * 5
    assert value(after, f"{TIME_TO_FIRST_TOKEN.name}_bucket", CHAT, le="+Inf") == count_before + 3
    assert value(after, PREFIX_HITS.name, CHAT) > hits_before + 20  # the repeated system prompt and question
    # idle: no sequence, no KV slot held by the batch; the prefix cache keeps recent prompts as designed
    assert value(after, KV_USED.name, CHAT) == 0
    assert value(after, PREFIX_CACHE_TOKENS.name, CHAT) > 20
    config = (REPOSITORY / CHAT / "config.pbtxt").read_text()
    max_kv = int(re.search(r'key: "max_kv_tokens"\s*value \{\s*string_value: "(\d+)"', config).group(1))
    assert value(after, KV_CAPACITY.name, CHAT) == max_kv
    assert any(s.name == PREEMPTIONS.name and s.labels["model"] == CHAT for s in after)  # present, 0 or more


def test_every_engine_series_names_its_model_version_and_instance(triton):
    samples = scrape(triton)
    ours = [s for s in samples if s.name.startswith("modelgate_engine_") and s.labels.get("model") == CHAT]
    families = {s.name.removesuffix(suffix) for s in ours for suffix in ("_bucket", "_sum", "_count")
                if s.name.endswith(suffix)} | {s.name for s in ours}
    assert {spec.name for spec in SPECS} <= families
    for sample in ours:
        labels = {k: v for k, v in sample.labels.items() if k not in ("le", "state")}
        assert set(labels) == {"model", "version", "engine"}, sample
        assert labels["version"] == "1" and re.fullmatch(rf"{re.escape(CHAT)}_\d+_\d+:\d+", labels["engine"])


def test_the_vision_model_runs_the_same_engine_metrics(triton, openai_client):
    before = value(scrape(triton), f"{TIME_TO_FIRST_TOKEN.name}_count", VISION)
    chat(openai_client, VISION, f"Describe nothing. ({uuid.uuid4().hex})", max_tokens=3)
    after = idle_after(triton, VISION, before, 1)
    assert value(after, f"{TIME_TO_FIRST_TOKEN.name}_count", VISION) == before + 1
    assert value(after, KV_CAPACITY.name, VISION) > 0 and value(after, KV_USED.name, VISION) == 0


def test_image_generation_times_each_denoising_step(triton, openai_client):
    steps = 3
    before = value(scrape(triton), f"{STEP_TIME.name}_count", IMAGES)
    openai_client.images.generate(model=IMAGES, prompt=f"a red fox {uuid.uuid4().hex}", size="64x64", n=1,
                                  response_format="b64_json", extra_body={"steps": steps, "seed": 3},
                                  extra_headers=NO_STORE)
    after = scrape(triton)  # the pipeline observed its steps before it answered
    assert value(after, f"{STEP_TIME.name}_count", IMAGES) == before + steps
    assert value(after, f"{STEP_TIME.name}_sum", IMAGES) > 0
    # its queue time is Triton's (prometheus_client's parser names counter samples *_total)
    assert any(s.name == "nv_inference_queue_duration_us_total" and s.labels.get("model") == IMAGES
               for s in after)


# -- a Triton of this module's own: reload, two instances, unload ------------------------------------------

@pytest.fixture(scope="module")
def own_triton(tmp_path_factory):
    root = llm_tiny.model_repository(tmp_path_factory.mktemp("metrics-repository"))
    with TritonServer(root, [llm_tiny.NAME]) as server:
        yield server


async def generate(server: TritonServer, prompt: str) -> None:
    async def requests():
        yield llm_tiny.make_request(prompt, exclude_input=None, flags=(), max_tokens=3, **GREEDY)

    client = InferenceServerClient(server.grpc_url)
    try:
        async for _, error in client.stream_infer(requests()):
            if error is not None:
                raise error
    finally:
        await client.close()


def engines(server: TritonServer) -> dict[str, dict[str, float]]:
    """The tiny model's engine label -> {family or family{state}: value} of its gauges and counts."""
    found: dict[str, dict[str, float]] = defaultdict(dict)
    for s in scrape(server):
        ours = s.name.startswith("modelgate_engine_") and s.labels.get("model") == llm_tiny.NAME
        if ours and "le" not in s.labels:
            key = f"{s.name}{{{s.labels['state']}}}" if "state" in s.labels else s.name
            found[s.labels["engine"]][key] = s.value
    return dict(found)


def reload(server: TritonServer, **changes) -> None:
    client = triton_http.InferenceServerClient(server.http_url.removeprefix("http://"), network_timeout=300)
    config = client.get_model_config(llm_tiny.NAME)
    for key, value in changes.items():
        if key == "instances":
            config["instance_group"] = [{"kind": "KIND_CPU", "count": value}]
        else:
            config["parameters"][key] = {"string_value": str(value)}
    client.load_model(llm_tiny.NAME, config=json.dumps(config))


def wait_for_engines(server: TritonServer, count: int, what: str) -> dict[str, dict[str, float]]:
    def check():
        found = engines(server)
        return found if len(found) == count else None

    return wait_until(check, what, timeout_s=60)


async def test_series_leave_with_their_instance_on_reload_and_unload(own_triton):
    await generate(own_triton, "Hello there")
    [(first, series)] = wait_for_engines(own_triton, 1, "one engine").items()
    assert series[KV_CAPACITY.name] == 16 * llm_tiny.CONTEXT_LENGTH
    assert series[f"{TIME_TO_FIRST_TOKEN.name}_count"] == 1  # published before the request's last answer

    # A reload (config override) starts a new instance beside the old one, then unloads the old one: the old
    # series go, the new instance's are its own (same labels would make Triton drop the shared series).
    reload(own_triton, max_kv_tokens=2048)
    [(second, series)] = wait_for_engines(own_triton, 1, "the old engine's series gone").items()
    assert second != first
    assert series[KV_CAPACITY.name] == 2048 and series[f"{TIME_TO_FIRST_TOKEN.name}_count"] == 0
    await generate(own_triton, "Hello again")
    found = engines(own_triton)
    assert found[second][f"{TIME_TO_FIRST_TOKEN.name}_count"] == 1 and found.keys() == {second}

    # Two instances: Triton keeps the running one and adds a second (an instance-count change updates the
    # instances in place); each has its own gauges, summed per model on a dashboard.
    reload(own_triton, instances=2)
    found = wait_for_engines(own_triton, 2, "two engines")
    assert second in found and [e[KV_CAPACITY.name] for e in found.values()] == [2048, 2048]

    client = triton_http.InferenceServerClient(own_triton.http_url.removeprefix("http://"))
    client.unload_model(llm_tiny.NAME)
    wait_for_engines(own_triton, 0, "every engine series gone after the unload")
