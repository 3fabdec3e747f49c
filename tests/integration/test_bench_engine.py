"""`python -m bench engine` on the exported SmolLM2: one round gives a table of three positive measures."""

from __future__ import annotations

import re

import pytest

from bench import engine

pytestmark = pytest.mark.integration


def test_engine_bench_measures_decode_and_prefill(repository, monkeypatch):
    monkeypatch.setattr(engine, "DECODE_TOKENS", 8)
    monkeypatch.setattr(engine, "PREFILL_TOKENS", 64)
    table = engine.run(repository, threads=1, rounds=1)
    rows = dict(re.findall(r"^\| ([a-zA-Z][^|]*?) \| (-?[\d.]+%?) \|", table, re.M))
    measures = ["decode, 1 sequences (tok/s)", "decode, 1 sequences, JSON schema (tok/s)",
                "decode, 16 sequences (tok/s)", "decode, 16 sequences, JSON schema (tok/s)",
                "prefill, 64 tokens (ms)", "JSON schema compile, uncached (ms)"]
    assert all(float(rows[m]) > 0 for m in measures), rows
    assert rows["constrained decode overhead, 16 sequences (target <= 10%)"].endswith("%")
