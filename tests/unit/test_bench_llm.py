"""Benchmark helpers: the served copy pins threads and settings, load-generator prompts are fresh, percentiles,
the llama-server build is cached."""

from __future__ import annotations

import json

from bench import llama_cpp, serve
from bench.llm import served_repository
from export_scripts.common import parameters, read_config, write_config


def test_served_repository_pins_threads_and_links_files(tmp_path):
    source = tmp_path / "repo"
    write_config(source / "m", {"name": "m", "backend": "python", "parameters": parameters(intra_op_thread_count=8,
                                                                                         openai_task="chat")})
    (source / "m" / "1").mkdir()
    (source / "m" / "1" / "weights.bin").write_bytes(b"w")
    served = served_repository(source, "m", 3, tmp_path / "served", max_kv_tokens=16384)
    config = read_config(served / "m" / "config.pbtxt")
    assert config.parameters["intra_op_thread_count"].string_value == "3"
    assert config.parameters["max_kv_tokens"].string_value == "16384"
    assert config.parameters["openai_task"].string_value == "chat"
    assert (served / "m" / "1" / "weights.bin").read_bytes() == b"w"
    assert read_config(source / "m" / "config.pbtxt").parameters["intra_op_thread_count"].string_value == "8"


def test_prompts_are_fresh_or_taken_from_a_file(tmp_path):
    prompts = serve.Prompts()
    firsts = {prompts.next().split(".")[0] for _ in range(5)}
    assert len(firsts) == 5  # a new leading number each: no shared prefix to reuse
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": p}) for p in ("a", "b")) + "\n")
    fixed = serve.Prompts(path)
    assert [fixed.next() for _ in range(4)] == ["b", "a", "b", "a"]


def test_percentiles_and_tpot():
    assert serve.percentiles([3.0, 1.0, 2.0], scale=1) == {"p50": 2.0, "p95": 3.0, "p99": 3.0}
    assert serve.percentiles([float(i) for i in range(1, 21)], scale=1)["p95"] == 19.0
    result = serve.RequestResult(ttft_s=0.1, e2e_s=1.1, tokens=11, itl_s=[0.1] * 10)
    assert abs(result.tpot_s - 0.1) < 1e-9 and serve.RequestResult(0.1, 0.1, 1, []).tpot_s == 0.0


def test_summary_counts_goodput_against_the_slo():
    fast = serve.RequestResult(0.2, 0.52, 9, [0.04] * 8)  # TPOT 40 ms
    slow_start = serve.RequestResult(1.5, 2.0, 9, [0.06] * 8)
    failed = serve.RequestResult(0.0, 0.5, 0, [], "HTTP 503")
    level = serve.summarise(3, [([fast, slow_start, failed], 2.0)], slo_ttft_s=1.0, slo_tpot_s=0.05)
    assert level.requests == 3 and level.errors == 1
    assert level.output_tokens_per_s == [9.0] and level.requests_per_s == [1.0] and level.goodput == [0.5]


def test_llama_server_build_is_cached(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(llama_cpp.subprocess, "run", lambda *a, **k: calls.append(a))
    built = llama_cpp.binary(tmp_path)
    built.parent.mkdir(parents=True)
    built.write_text("")
    assert llama_cpp.build(tmp_path) == built and calls == []  # already built: nothing runs
