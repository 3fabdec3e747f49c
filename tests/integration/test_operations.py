"""Operations end to end: two frontend processes sharing rate limits through a real redis-server, the
openai SDK seeing 401/429 as its own errors, cache hits byte for byte, /metrics parsed by prometheus_client.

A Triton of this module's own serves the embedding models; the streamed-chat cache test uses the session's.
redis-server is installed by the set-up itself when missing (Debian package, as root).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from export_scripts.__main__ import main as export_main
from frontend.auth import hash_key
from frontend.settings import Settings
from launcher.triton import TritonServer, free_port, wait_for_http
from tests.conftest import REPOSITORY
from tests.stack import run_frontend

MODEL = "all-minilm-l6-v2"
PARTS = [MODEL, f"{MODEL}_tokenizer", f"{MODEL}_encoder"]
KEYS = {"team": "sk-team", "bulk": "sk-bulk", "solo": "sk-solo", "ops": "sk-ops"}


@pytest.fixture(scope="module")
def own_triton():
    assert export_main(["embeddings", f"--repository={REPOSITORY}"]) == 0
    with TritonServer(REPOSITORY, PARTS) as server:
        yield server


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory) -> Path:
    limits = {"team": {"requests_per_minute": 4}, "bulk": {"tokens_per_minute": 20}, "solo": {"max_concurrent": 1}}
    entries = [{"name": name, "key_sha256": hash_key(key), "scopes": ["admin"] if name == "ops" else ["inference"],
                "limits": limits.get(name, {})} for name, key in KEYS.items()]
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    path.write_text(json.dumps(entries))
    return path


def frontend_process(env: dict, log: Path) -> tuple[subprocess.Popen, str]:
    """`python -m frontend` as a process of its own (what a replica is), on a free port."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "frontend"], env={**os.environ, **env, "MODELGATE_HOST": "127.0.0.1",
                                                                      "MODELGATE_PORT": str(port)},
                            stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])
    url = f"http://127.0.0.1:{port}"
    if wait_for_http(f"{url}/health", proc, 60):
        return proc, url
    proc.kill()
    raise RuntimeError(f"frontend did not start: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def replicas(own_triton, redis_url, keys_file, tmp_path_factory):
    """Two frontend processes sharing rate limits through redis."""
    env = {"MODELGATE_TRITON_GRPC_URL": own_triton.grpc_url, "MODELGATE_REDIS_URL": redis_url,
           "MODELGATE_API_KEYS_FILE": str(keys_file), "MODELGATE_CACHE_ENABLED": "false"}
    logs = tmp_path_factory.mktemp("replicas")
    started = [frontend_process(env, logs / f"frontend-{i}.log") for i in range(2)]
    yield [url for _, url in started]
    for proc, _ in started:
        proc.terminate()
        proc.wait(20)
    for log in logs.iterdir():  # keys never appear; request lines (uvicorn's access log too) carry the id
        text = log.read_text()
        assert all(key not in text for key in KEYS.values()), log
        access = [line for line in text.splitlines() if '"POST /v1/embeddings' in line]
        assert access and all(re.search(r" \[[0-9a-f]{32}\]: ", line) for line in access), text[-2000:]


def client(url: str, name: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEYS[name], max_retries=0, timeout=120)


def test_openai_sdk_sees_401_as_authentication_error(replicas):
    bad = openai.OpenAI(base_url=f"{replicas[0]}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.embeddings.create(model=MODEL, input="x")
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    with pytest.raises(openai.PermissionDeniedError):
        client(replicas[0], "ops").embeddings.create(model=MODEL, input="x")


def test_requests_per_minute_are_shared_by_two_replicas(replicas):
    a, b = (client(url, "team") for url in replicas)
    remaining = []
    for sdk in (a, b, a, b):
        raw = sdk.embeddings.with_raw_response.create(model=MODEL, input="shared budget")
        assert raw.parse().data[0].embedding
        remaining.append(raw.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["3", "2", "1", "0"]  # one budget, not one per process
    for sdk in (a, b):
        with pytest.raises(openai.RateLimitError) as info:
            sdk.embeddings.create(model=MODEL, input="over")
        assert info.value.status_code == 429 and info.value.code == "rate_limit_exceeded"
        assert 1 <= int(info.value.response.headers["retry-after"]) <= 60


def test_tokens_per_minute_are_shared_by_two_replicas(replicas):
    a, b = (client(url, "bulk") for url in replicas)
    used = a.embeddings.create(model=MODEL, input=["hello world"] * 5).usage.prompt_tokens
    assert used == 20  # [CLS] hello world [SEP], five times: the whole budget
    with pytest.raises(openai.RateLimitError, match="tokens per minute"):
        b.embeddings.create(model=MODEL, input="one more")


def test_concurrent_requests_are_shared_by_two_replicas(replicas):
    texts = [f"{uuid.uuid4()} keeps the encoder busy for a little while " * 3 for _ in range(1024)]
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(client(replicas[0], "solo").embeddings.create, model=MODEL, input=texts)
        time.sleep(0.5)
        assert not slow.done()
        with pytest.raises(openai.RateLimitError, match="concurrent"):
            client(replicas[1], "solo").embeddings.create(model=MODEL, input="meanwhile")
        assert len(slow.result().data) == 1024
    assert client(replicas[1], "solo").embeddings.create(model=MODEL, input="after").data  # the slot came back


@pytest.fixture(scope="module")
def cached(own_triton):
    with run_frontend(Settings(triton_grpc_url=own_triton.grpc_url, api_keys="alice=sk-alice,bob=sk-bob")) as running:
        yield running


def test_cache_hit_is_the_miss_byte_for_byte(cached):
    body = {"model": MODEL, "input": ["cache me", "and me"], "encoding_format": "base64"}
    with httpx.Client(base_url=cached.url, timeout=60, headers={"Authorization": "Bearer sk-alice"}) as http:
        miss, hit = http.post("/v1/embeddings", json=body), http.post("/v1/embeddings", json=body)
        bob = http.post("/v1/embeddings", json=body, headers={"Authorization": "Bearer sk-bob"})
    assert (miss.headers["x-cache"], hit.headers["x-cache"], bob.headers["x-cache"]) == ("miss", "hit", "miss")
    assert hit.content == miss.content == bob.content  # bob computed his own: the same bytes, not shared


def test_metrics_scraped_and_parsed(cached):
    sdk = openai.OpenAI(base_url=f"{cached.url}/v1", api_key="sk-alice", max_retries=0)
    sdk.embeddings.create(model=MODEL, input="count me")
    with pytest.raises(openai.NotFoundError):
        sdk.embeddings.create(model="no-such-model", input="x")
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{cached.url}/metrics").text)}
    requests = {tuple(sorted(s.labels.items())): s.value for s in families["modelgate_requests"].samples
                if s.name.endswith("_total")}
    assert requests[(("endpoint", "/v1/embeddings"), ("model", MODEL), ("status", "200"))] >= 1
    assert requests[(("endpoint", "/v1/embeddings"), ("model", "unknown"), ("status", "404"))] == 1
    assert next(s.value for s in families["modelgate_triton_up"].samples) == 1
    tokens = {s.labels["model"]: s.value for s in families["modelgate_prompt_tokens"].samples
              if s.name.endswith("_total")}
    assert tokens[MODEL] >= 5  # [CLS] count me [SEP] is 4, plus the cache test's inputs
    alias = httpx.get(f"{cached.url}/admin/metrics", headers={"Authorization": "Bearer sk-alice"})
    assert alias.status_code == 200 and "modelgate_cache_hits_total" in alias.text


def test_streamed_chat_hit_replays_the_same_sse_bytes(http):  # the session's frontend and Triton (SmolLM2)
    body = {"model": "smollm2-135m-instruct", "temperature": 0, "max_tokens": 12, "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": f"Say something about the number {uuid.uuid4().int % 997}."}]}
    miss = http.post("/v1/chat/completions", json=body)
    started = time.perf_counter()
    hit = http.post("/v1/chat/completions", json=body)
    replay_s = time.perf_counter() - started
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("miss", "hit")
    assert hit.headers["content-type"].startswith("text/event-stream")
    assert hit.content == miss.content and miss.content.endswith(b"data: [DONE]\n\n")
    assert miss.content.count(b"data: ") > 3 and replay_s < 1.0


def test_seeded_image_hit_is_the_same_png(http):  # the session's frontend and Triton (tiny SD)
    body = {"prompt": f"a red square {uuid.uuid4()}", "seed": 11, "size": "64x64", "response_format": "b64_json",
            "steps": 2}
    miss, hit = http.post("/v1/images/generations", json=body), http.post("/v1/images/generations", json=body)
    assert miss.status_code == 200, miss.text
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("miss", "hit")
    assert hit.content == miss.content
    unseeded = {k: v for k, v in body.items() if k != "seed"}
    assert "x-cache" not in http.post("/v1/images/generations", json=unseeded).headers
