"""`python -m bench serve`: load any OpenAI-compatible server and report what `vllm bench serve` and AIPerf
report, so a user can measure their own deployment the same way we measure ours against llama.cpp's.

    python -m bench serve --base-url http://127.0.0.1:8000 --model smollm2-135m-instruct --concurrency 1,4,16
        [--prompts FILE.jsonl] [--max-tokens 64] [--rounds 3] [--api-key KEY] [--json OUT.json]

Closed loop: at concurrency c, c clients each send `requests-per-client` streamed `/v1/completions` requests
back to back (greedy; `ignore_eos` so every answer has max_tokens tokens, unless --stop-at-eos;
`Cache-Control: no-store`, so a response cache in front of the model does not answer). Per request:
TTFT (first token), ITL (gaps between later tokens), TPOT ((end - first token) / (tokens - 1)), end-to-end
latency. Per level: output tokens/s and requests/s over the level's wall time, and goodput: requests/s that met
the SLO (TTFT <= --slo-ttft-ms and TPOT <= --slo-tpot-ms). Percentiles pool every round; throughput is the
median over rounds with its range. Default prompts are ~40 tokens, each starting with a new number, so no
server reuses a cached prefix; `--prompts` takes JSON lines with a "prompt" string.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

WORDS = ["river", "mountain", "engine", "story", "garden", "winter", "signal", "harbor", "lantern", "market",
         "orbit", "valley", "copper", "meadow", "thunder", "library", "compass", "canyon", "festival", "glacier"]
PERCENTILES = (50, 95, 99)


@dataclass
class RequestResult:
    ttft_s: float
    e2e_s: float
    tokens: int
    itl_s: list[float]
    error: str | None = None

    @property
    def tpot_s(self) -> float:
        return (self.e2e_s - self.ttft_s) / (self.tokens - 1) if self.tokens > 1 else 0.0


@dataclass
class LevelResult:
    """One concurrency level over its rounds."""

    concurrency: int
    requests: int
    errors: int
    output_tokens_per_s: list[float] = field(default_factory=list)  # one per round
    requests_per_s: list[float] = field(default_factory=list)
    goodput: list[float] = field(default_factory=list)
    ttft_ms: dict[str, float] = field(default_factory=dict)
    tpot_ms: dict[str, float] = field(default_factory=dict)
    itl_ms: dict[str, float] = field(default_factory=dict)
    e2e_ms: dict[str, float] = field(default_factory=dict)


class Prompts:
    """Fresh prompts: each starts with a new number (no prefix-cache hits), or lines from a JSONL file."""

    def __init__(self, path: Path | None = None):
        self.fixed = [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()] \
            if path else None
        self.count = itertools.count(1)
        self.run = random.randrange(10**6)  # another run's prompts differ too (no response or prefix cache)

    def next(self) -> str:
        n = next(self.count)
        if self.fixed:
            return self.fixed[n % len(self.fixed)]
        words = " ".join(WORDS[(n * 7 + i) % len(WORDS)] for i in range(24))
        return f"{n}-{self.run}. Write a long story that uses these words: {words}. Once upon a time,"


def percentiles(values: list[float], scale: float = 1e3) -> dict[str, float]:
    if not values:
        return {f"p{q}": float("nan") for q in PERCENTILES}
    ordered = sorted(values)
    return {f"p{q}": round(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * scale, 1)
            for q in PERCENTILES}


async def one_request(client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int,
                      ignore_eos: bool) -> RequestResult:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    if ignore_eos:
        body["ignore_eos"] = True
    for attempt in range(2):
        try:
            return await _stream(client, body)
        except httpx.RemoteProtocolError as exc:  # a kept-alive connection the server had closed: once more
            if attempt:
                return RequestResult(0.0, 0.0, 0, [], f"{type(exc).__name__}: {exc}")
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            return RequestResult(0.0, 0.0, 0, [], f"{type(exc).__name__}: {exc}")
    raise AssertionError("unreachable")


async def _stream(client: httpx.AsyncClient, body: dict) -> RequestResult:
    start = time.perf_counter()
    arrivals: list[float] = []
    usage_tokens = None
    async with client.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            detail = (await response.aread()).decode(errors="replace")[:200]
            return RequestResult(0.0, time.perf_counter() - start, 0, [], f"HTTP {response.status_code}: {detail}")
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if any(choice.get("text") for choice in chunk.get("choices") or []):
                arrivals.append(time.perf_counter())
            if chunk.get("usage"):
                usage_tokens = chunk["usage"].get("completion_tokens")
    end = time.perf_counter()
    if not arrivals:
        return RequestResult(0.0, end - start, 0, [], "no token came back")
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    return RequestResult(arrivals[0] - start, end - start, usage_tokens or len(arrivals), gaps)


async def run_level(base_url: str, model: str, concurrency: int, prompts: Prompts, *, max_tokens: int,
                    requests_per_client: int, ignore_eos: bool, api_key: str | None,
                    progress=None) -> tuple[list[RequestResult], float]:
    """One round at one concurrency; returns every request's result and the round's wall time."""
    headers = {"Cache-Control": "no-store"}  # a server's response cache must not answer for the model
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    limits = httpx.Limits(max_connections=concurrency + 4)
    results: list[RequestResult] = []
    root = base_url.rstrip("/").removesuffix("/v1")  # the OpenAI SDK's base URL ends in /v1; ours adds it
    async with httpx.AsyncClient(base_url=root, headers=headers, timeout=600, limits=limits) as client:
        async def client_loop() -> None:
            for _ in range(requests_per_client):
                results.append(await one_request(client, model, prompts.next(), max_tokens, ignore_eos))
                if progress is not None:
                    progress(len(results))

        start = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        return results, time.perf_counter() - start


def summarise(concurrency: int, rounds: list[tuple[list[RequestResult], float]], slo_ttft_s: float,
              slo_tpot_s: float) -> LevelResult:
    every = [r for results, _ in rounds for r in results]
    ok = [r for r in every if r.error is None]
    level = LevelResult(concurrency, len(every), len(every) - len(ok))
    for results, wall in rounds:
        good = [r for r in results if r.error is None]
        level.output_tokens_per_s.append(round(sum(r.tokens for r in good) / wall, 1))
        level.requests_per_s.append(round(len(good) / wall, 3))
        met = [r for r in good if r.ttft_s <= slo_ttft_s and r.tpot_s <= slo_tpot_s]
        level.goodput.append(round(len(met) / wall, 3))
    level.ttft_ms = percentiles([r.ttft_s for r in ok])
    level.tpot_ms = percentiles([r.tpot_s for r in ok if r.tokens > 1])
    level.itl_ms = percentiles([gap for r in ok for gap in r.itl_s])
    level.e2e_ms = percentiles([r.e2e_s for r in ok])
    return level


def measure(base_url: str, model: str, concurrency: list[int], *, max_tokens: int = 64, rounds: int = 3,
            requests_per_client: int = 2, prompts: Prompts | None = None, ignore_eos: bool = True,
            api_key: str | None = None, slo_ttft_ms: float = 1000, slo_tpot_ms: float = 50,
            show_progress: bool = True, between=None) -> list[LevelResult]:
    """Every concurrency level, `rounds` times (rounds outermost, so levels interleave with whatever
    `between(round, concurrency)` does before each level, e.g. another server's turn)."""
    prompts = prompts or Prompts()
    collected: dict[int, list] = {c: [] for c in concurrency}
    for round_index in range(rounds):
        for c in concurrency:
            if between is not None:
                between(round_index, c)
            total = c * requests_per_client
            label = f"{base_url} c={c} round {round_index + 1}/{rounds}"

            def progress(done: int, label=label, total=total) -> None:
                if show_progress:
                    print(f"\r{label}: {done}/{total} requests", end="", file=sys.stderr, flush=True)

            collected[c].append(asyncio.run(run_level(
                base_url, model, c, prompts, max_tokens=max_tokens, requests_per_client=requests_per_client,
                ignore_eos=ignore_eos, api_key=api_key, progress=progress)))
            if show_progress:
                print(file=sys.stderr)
    return [summarise(c, collected[c], slo_ttft_ms / 1e3, slo_tpot_ms / 1e3) for c in concurrency]


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def table(levels: list[LevelResult]) -> str:
    lines = ["| c | output tok/s | req/s | goodput req/s | TTFT p50/p95/p99 ms | TPOT p50/p95/p99 ms | "
             "ITL p50/p95/p99 ms | E2E p50/p95/p99 ms | errors |",
             "|---:|---:|---:|---:|---|---|---|---|---:|"]
    for level in levels:
        def trio(p: dict) -> str:
            return " / ".join(f"{p[f'p{q}']:.0f}" for q in PERCENTILES)
        lines.append(f"| {level.concurrency} | {spread(level.output_tokens_per_s)} | "
                     f"{statistics.median(level.requests_per_s):.2f} | {statistics.median(level.goodput):.2f} | "
                     f"{trio(level.ttft_ms)} | {trio(level.tpot_ms)} | {trio(level.itl_ms)} | {trio(level.e2e_ms)} | "
                     f"{level.errors} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True, help="the server's root, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", required=True)
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated levels (default 1,4,16)")
    parser.add_argument("--prompts", type=Path, help="JSON lines with a 'prompt' string")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--api-key")
    parser.add_argument("--stop-at-eos", action="store_true", help="do not send ignore_eos")
    parser.add_argument("--slo-ttft-ms", type=float, default=1000)
    parser.add_argument("--slo-tpot-ms", type=float, default=50)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    if not levels or min(levels) < 1:
        parser.error("--concurrency takes positive integers")
    base_url = args.base_url.rstrip("/")
    results = measure(base_url, args.model, levels, max_tokens=args.max_tokens, rounds=args.rounds,
                      requests_per_client=args.requests_per_client, prompts=Prompts(args.prompts),
                      ignore_eos=not args.stop_at_eos, api_key=args.api_key, slo_ttft_ms=args.slo_ttft_ms,
                      slo_tpot_ms=args.slo_tpot_ms)
    print(f"{args.model} at {base_url}: {args.rounds} rounds, {args.max_tokens} tokens per request, goodput SLO "
          f"TTFT <= {args.slo_ttft_ms:.0f} ms and TPOT <= {args.slo_tpot_ms:.0f} ms\n")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(level) for level in results], indent=2) + "\n")
    return 1 if any(level.errors for level in results) else 0
