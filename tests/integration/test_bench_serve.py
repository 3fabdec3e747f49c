"""`python -m bench serve` against the real stack (frontend -> Triton -> SmolLM2): the load generator a user
points at any OpenAI-compatible server. Short answers keep it cheap."""

from __future__ import annotations

import json

import pytest

from bench import serve
from bench.__main__ import main as bench_main

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"


def test_levels_report_latency_throughput_and_goodput(frontend):
    levels = serve.measure(frontend.base_url, MODEL, [1, 3], max_tokens=5, rounds=2, requests_per_client=2,
                           show_progress=False)
    assert [level.concurrency for level in levels] == [1, 3]
    for level in levels:
        assert level.requests == 2 * level.concurrency * 2 and level.errors == 0
        assert len(level.output_tokens_per_s) == 2 and min(level.output_tokens_per_s) > 0
        assert 0 < level.ttft_ms["p50"] <= level.ttft_ms["p95"] <= level.ttft_ms["p99"] < level.e2e_ms["p99"]
        assert level.itl_ms["p50"] > 0 and level.tpot_ms["p50"] > 0
        assert max(level.goodput) <= max(level.requests_per_s)
    # every answer had exactly max_tokens tokens (ignore_eos): throughput = tokens / wall time of the round
    assert "| 1 |" in serve.table(levels) and "| 3 |" in serve.table(levels)


def test_an_impossible_slo_gives_zero_goodput_and_errors_are_counted(frontend):
    (level,) = serve.measure(frontend.base_url, MODEL, [2], max_tokens=3, rounds=1, requests_per_client=1,
                             slo_ttft_ms=0.001, show_progress=False)
    assert level.goodput == [0.0] and level.requests_per_s[0] > 0
    (failed,) = serve.measure(frontend.base_url, "no-such-model", [1], max_tokens=3, rounds=1,
                              requests_per_client=1, show_progress=False)
    assert failed.errors == 1 and failed.output_tokens_per_s == [0.0]


def test_the_command_line_prints_the_table_and_writes_json(frontend, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Once upon a time,"}) + "\n")
    out = tmp_path / "result.json"
    code = bench_main(["serve", "--base-url", frontend.base_url, "--model", MODEL, "--concurrency", "2",
                       "--max-tokens", "4", "--rounds", "1", "--requests-per-client", "1", "--prompts", str(prompts),
                       "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr()
    assert "| c | output tok/s |" in printed.out and "c=2 round 1/1: 2/2 requests" in printed.err
    (level,) = json.loads(out.read_text())
    assert level["concurrency"] == 2 and level["errors"] == 0 and level["ttft_ms"]["p50"] > 0
