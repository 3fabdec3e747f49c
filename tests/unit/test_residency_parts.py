"""Models on demand, the pure parts: the policy's TTLs and pins, model specs and the catalog, Triton's memory
from its processes (a fake Triton of plain Python processes), the residency store in memory, and the
registry keeping unloaded models visible."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time

import pytest

from frontend.catalog import ModelCatalog, ModelSpec, read_repository_config
from frontend.errors import ModelNotFound
from frontend.footprint import STUB, ProcessMeter, Snapshot, Usage, grpc_target
from frontend.registry import ModelRegistry, ServedModel
from frontend.residency import Policy
from frontend.residency_store import Measured, ResidencyStore
from launcher.triton import free_port

ENSEMBLE = {"platform": "ensemble",
            "parameters": {"openai_task": {"string_value": "embeddings"},
                           "tokenizer_model": {"string_value": "e_tokenizer"}},
            "ensemble_scheduling": {"step": [{"model_name": "e_tokenizer"}, {"model_name": "e_encoder"}]}}
PIPELINE = {"backend": "python",
            "parameters": {"openai_task": {"string_value": "images"}, "unet_model": {"string_value": "p_unet"},
                           "vae_decoder_model": {"string_value": "p_vae"}}}


def served(name: str = "m", **parameters: str) -> ServedModel:
    return ServedModel(name, "1", "READY", "chat", {"openai_task": "chat", **parameters}, 0)


def test_idle_ttl_and_pins_come_from_the_model_then_the_settings():
    policy = Policy(idle_unload_s=300, pinned_models=frozenset({"kept"}))
    assert policy.idle_ttl(served()) == 300
    assert policy.idle_ttl(served(idle_unload_s="5")) == 5
    assert policy.idle_ttl(served(idle_unload_s="0")) == 0  # its own "never"
    assert policy.idle_ttl(served(idle_unload_s="soon")) == 300  # not a number: the default, with a warning
    assert policy.pinned(served("kept")) and policy.pinned(served(pinned="true"))
    assert policy.idle_ttl(served("kept")) == 0 and not policy.pinned(served(pinned="no"))
    assert not Policy().budgets and Policy(max_loaded_models=2).budgets and Policy(gpu_budget_bytes=1).budgets


def test_specs_name_the_parts_a_model_needs():
    ensemble = ModelSpec.from_config("e", ENSEMBLE)
    assert ensemble.task == "embeddings" and ensemble.steps == ("e_encoder", "e_tokenizer")
    assert ensemble.uses == ("e_tokenizer",) and ensemble.parts == ("e_encoder", "e_tokenizer")
    pipeline = ModelSpec.from_config("p", PIPELINE)
    assert pipeline.steps == () and pipeline.parts == ("p_unet", "p_vae")  # BLS: Triton does not load them
    assert ModelSpec.from_json("p", pipeline.to_json()) == pipeline


def test_the_repository_folder_tells_what_an_unloaded_model_is(tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "config.pbtxt").write_text(textwrap.dedent('''
        name: "e"
        platform: "ensemble"
        parameters { key: "openai_task" value { string_value: "embeddings" } }
        ensemble_scheduling { step { model_name: "e_tokenizer" model_version: -1 } }
    '''))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.pbtxt").write_text("name: {")
    spec = read_repository_config(tmp_path, "e")
    assert spec is not None and spec.task == "embeddings" and spec.kind == "ensemble" and spec.steps == ("e_tokenizer",)
    assert read_repository_config(tmp_path, "broken") is None and read_repository_config(tmp_path, "none") is None
    assert read_repository_config(tmp_path, "../e") is None and read_repository_config(tmp_path, "..") is None


async def test_the_catalog_learns_looks_up_and_remembers_misses(tmp_path):
    catalog = ModelCatalog(repository=str(tmp_path))
    await catalog.lookup(["later"])
    assert catalog.get("later") is None
    (tmp_path / "later").mkdir()
    (tmp_path / "later" / "config.pbtxt").write_text('name: "later" backend: "python"')
    await catalog.lookup(["later"])
    assert catalog.get("later") is None  # a miss is not looked up again for a while
    catalog._missed.clear()
    await catalog.lookup(["later"])
    assert catalog.get("later").kind == "tokenizer"
    learnt = ModelSpec.from_config("later", PIPELINE)
    await catalog.learn(learnt)  # Triton's config wins over the folder's
    assert catalog.get("later") == learnt


def test_usage_sums_keep_unmeasured_gpu_apart():
    assert Usage(1) + Usage(2) == Usage(3, None)
    assert Usage(1, 5) + Usage(2) == Usage(3, 5)
    snapshot = Snapshot(Usage(10, 0), {"a": Usage(100, 7), "b": Usage(1000, 0)})
    assert snapshot.total == Usage(1110, 7) and snapshot.of(["a", "missing"]) == Usage(100, 7)
    assert grpc_target("localhost:8001") == ("localhost", 8001)
    assert grpc_target("dns:///triton-headless:8001") == ("triton-headless", 8001)
    assert grpc_target("[::1]:8001") == ("[::1]", 8001) and grpc_target("triton") is None


@pytest.fixture
def fake_triton(tmp_path):
    """A process listening on a port (as tritonserver does) whose children are named as Python backend stubs
    and run `<repository>/<model>/1/model.py`: one for `small`, two instances of `big` (holding 64 MiB)."""
    stub = tmp_path / STUB
    stub.symlink_to(sys.executable)
    for name, size in (("small", 0), ("big", 64)):
        (tmp_path / "repo" / name / "1").mkdir(parents=True)
        (tmp_path / "repo" / name / "1" / "model.py").write_text(
            f"import time\nheld = bytearray({size} * 2**20)\nheld[::4096] = b'x' * len(held[::4096])\n"
            "time.sleep(60)\n")
    port = free_port()
    server = textwrap.dedent(f'''
        import socket, subprocess, time
        listener = socket.socket()
        listener.bind(("127.0.0.1", {port}))
        listener.listen()
        children = [subprocess.Popen([{str(stub)!r}, {str(tmp_path / "repo")!r} + f"/{{m}}/1/model.py"])
                    for m in ("small", "big", "big")]
        time.sleep(60)
    ''')
    proc = subprocess.Popen([sys.executable, "-c", server], start_new_session=True)
    yield port
    os.killpg(proc.pid, 9)
    proc.wait()


async def test_triton_memory_is_measured_per_model_from_its_processes(fake_triton, tmp_path, monkeypatch):
    gpu = tmp_path / "gpu.csv"  # what a fake nvidia-smi reports: MiB per process
    gpu.write_text("")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvidia-smi").write_text(f"#!/bin/sh\ncat {gpu}\n")
    (tmp_path / "bin" / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    meter = ProcessMeter(f"127.0.0.1:{fake_triton}")
    deadline = time.monotonic() + 20
    while True:
        snapshot = await meter.snapshot()
        if snapshot is not None and len(snapshot.pids.get("big", ())) == 2 and \
                snapshot.models["big"].host_bytes > snapshot.models["small"].host_bytes + 2 * 60 * 2**20:
            break
        assert time.monotonic() < deadline, snapshot
        await asyncio.sleep(0.2)
    assert set(snapshot.models) == {"small", "big"} and len(snapshot.pids["small"]) == 1
    assert snapshot.server.host_bytes > 0 and snapshot.total.host_bytes > snapshot.models["big"].host_bytes
    assert await meter.available() and snapshot.total.gpu_bytes == 0  # nvidia-smi saw none of them
    big = sorted(snapshot.pids["big"])
    gpu.write_text(f"{big[0]}, 100\n{big[1]}, 20\n{meter._pid}, 3\n99999999, 1000\nNo running processes found\n")
    snapshot = await meter.snapshot()
    assert snapshot.models["big"].gpu_bytes == 120 * 2**20 and snapshot.models["small"].gpu_bytes == 0
    assert snapshot.server.gpu_bytes == 3 * 2**20 and snapshot.total.gpu_bytes == 123 * 2**20
    assert await ProcessMeter("example.invalid:8001").snapshot() is None  # not this host: not measurable
    assert await ProcessMeter(f"127.0.0.1:{free_port()}").snapshot() is None  # nothing listens there


@pytest.fixture(params=["memory", "redis"])
def store_url(request) -> str:
    return "" if request.param == "memory" else request.getfixturevalue("redis_url")


async def test_the_store_counts_loads_per_key_and_locks_once_per_triton(store_url):
    store = ResidencyStore(store_url, f"triton-{time.time()}:8001", 60)
    other = ResidencyStore(store_url, "another-triton:8001", 60)
    assert await store.count_load("a", 2) is None and await store.count_load("a", 2) is None
    retry = await store.count_load("a", 2)
    assert retry is not None and 0 < retry <= 60
    assert await store.count_load("b", 2) is None  # per key
    await store.park("m", True)
    assert await store.parked("m")
    await store.park("m", False)
    assert not await store.parked("m")
    async with store.locked(1) as taken:
        assert taken
        async with store.locked(0) as again:
            assert not again  # one load or eviction at a time per Triton
        async with other.locked(0) as elsewhere:
            assert elsewhere
    async with store.locked(0) as taken:
        assert taken  # given back
    await store.record("m", Measured(host_bytes=5, load_s=1.0))
    assert (await store.measured())["m"].host_bytes == 5
    lease = await store.leases.take("m", 10)
    assert await store.in_flight("m") == 1
    await store.leases.give_back("m", lease)
    assert await store.in_flight("m") == 0
    await store.close()
    await other.close()


class Backend:
    def __init__(self):
        self.states = {"m": "READY", "m_part": "READY"}
        self.gone: set[str] = set()

    async def repository_index(self):
        return [{"name": n, "version": "1", "state": s} for n, s in self.states.items()]

    async def model_config(self, name):
        if name in self.gone:  # unloaded between the index read and this call
            raise ModelNotFound(f"Request for unknown model: '{name}' is not found")
        return {"backend": "python", "parameters": {"openai_task": {"string_value": "chat"}}} if name == "m" else {}


async def test_the_registry_keeps_an_unloaded_model_visible_and_not_ready():
    backend = Backend()
    registry = ModelRegistry(backend, ttl_s=0)
    assert (await registry.refresh())["m"].ready and registry.ready_since("m") > 0
    backend.states["m"] = "UNAVAILABLE"
    model = (await registry.refresh())["m"]
    assert not model.ready and model.state == "UNAVAILABLE" and model.task == "chat"  # from the catalog
    assert registry.ready_since("m") == 0 and "m_part" not in await registry.refresh()  # internal: never served
    backend.states["m"] = "READY"
    backend.gone.add("m")
    assert (await registry.refresh())["m"].state == "UNAVAILABLE"  # READY in the index, gone for its config
    assert (await registry.find("m")).name == "m"
    with pytest.raises(ModelNotFound):
        await registry.find("nothing")


async def test_replicas_share_what_they_saw_loaded_through_redis(redis_url):
    seen, later = ModelCatalog(redis_url), ModelCatalog(redis_url)
    spec = ModelSpec.from_config(f"p-{time.time()}", PIPELINE)
    await seen.learn(spec)
    await later.lookup([spec.name, "never-seen"])
    assert later.get(spec.name) == spec and later.get("never-seen") is None
    await seen.close()
    await later.close()
