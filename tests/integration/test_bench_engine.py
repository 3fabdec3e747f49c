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
    rows = re.findall(r"^\| (decode, 1 sequences|decode, 16 sequences|prefill, 64 tokens)[^|]*\| ([\d.]+) \|", table,
                      re.M)
    assert [name for name, _ in rows] == ["decode, 1 sequences", "decode, 16 sequences", "prefill, 64 tokens"]
    assert all(float(value) > 0 for _, value in rows)
