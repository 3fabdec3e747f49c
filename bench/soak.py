"""Soak: mixed traffic through the whole stack for N minutes; errors, latency and memory per process.

`python -m bench soak --minutes N` starts Triton (every model of the repository) and the frontend as
`make serve` does, then `concurrency` clients send a seeded mix until the time is up: embeddings, chat
(plain, streamed, with an image), completions, small images, requests that must be refused (4xx in OpenAI's
envelope) and streams the client abandons after the first token. Every request says `Cache-Control:
no-store`, so the engines do the work each time. An error is any answer other than the expected one: a
status other than 200 (4xx for the bad requests), a stream without `[DONE]` or with an error event, a
transport failure. RSS is read with psutil over the process tree (frontend, tritonserver, each model's
stub) after a warm-up round and again at the end.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

VISION_MODEL = "tiny-llava-random"  # a chat model that takes images, when the repository has it
MAX_TOKENS = 16
TIMEOUT_S = 120.0
HEADERS = {"Cache-Control": "no-store"}


@dataclass
class Models:
    embeddings: str
    chat: str
    images: str | None
    vision: str | None


@dataclass
class Tally:
    """What one kind of request got: latencies of the expected answers, every other outcome by name."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)


def _png_data_uri(size: int = 16) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 80, 40)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _chat(model: str, i: int, **extra) -> dict:
    return {"model": model, "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": f"Request {i}: name three rivers."}], **extra}


def traffic(models: Models) -> list[tuple[str, int, Callable]]:
    """(kind, weight, build(i) -> (path, json body or raw bytes, expected: "ok"|"4xx"|"stream"|"leave"))."""
    image = _png_data_uri()
    bad = [  # each refused before any model runs
        ("/v1/chat/completions", {**_chat(models.chat, 0), "model": "no-such-model"}),
        ("/v1/chat/completions", {**_chat(models.chat, 0), "n": 0}),
        ("/v1/completions", {"model": models.chat, "prompt": "x", "temperature": 5}),
        ("/v1/embeddings", b'{"model": "' + models.embeddings.encode() + b'", "input": ['),
        ("/v1/embeddings", {"model": models.embeddings, "input": "x", "dimensions": 100_000}),
        ("/v1/chat/completions", {"model": models.chat}),
    ]
    kinds = [
        ("embeddings", 25, lambda i: ("/v1/embeddings", {
            "model": models.embeddings, "input": [f"sentence {i} {j}" for j in range(4)]}, "ok")),
        ("chat", 15, lambda i: ("/v1/chat/completions", _chat(models.chat, i), "ok")),
        ("chat stream", 15, lambda i: ("/v1/chat/completions", _chat(
            models.chat, i, stream=True, stream_options={"include_usage": True}), "stream")),
        ("completions", 10, lambda i: ("/v1/completions", {
            "model": models.chat, "prompt": f"{i}. Once upon a time", "max_tokens": MAX_TOKENS}, "ok")),
        ("bad request", 10, lambda i: (*bad[i % len(bad)], "4xx")),
        ("disconnect", 10, lambda i: ("/v1/chat/completions", _chat(
            models.chat, i, stream=True, max_tokens=256, ignore_eos=True), "leave")),
    ]
    if models.images:
        kinds.append(("images", 5, lambda i: ("/v1/images/generations", {
            "model": models.images, "prompt": f"a lighthouse {i}", "size": "64x64", "steps": 2, "seed": i,
            "response_format": "b64_json"}, "ok")))
    if models.vision:
        kinds.append(("chat image", 5, lambda i: ("/v1/chat/completions", {
            "model": models.vision, "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": [
                {"type": "text", "text": f"Describe picture {i}."},
                {"type": "image_url", "image_url": {"url": image}}]}]}, "ok")))
    return kinds


async def _stream(client: httpx.AsyncClient, path: str, body: dict, leave: bool) -> str | None:
    """Read an SSE answer; None if it ended as it should. `leave`: hang up after the first delta."""
    async with client.stream("POST", path, json=body, headers=HEADERS) as response:
        if response.status_code != 200:
            await response.aread()
            return _status(response)
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                return None
            event = json.loads(line[6:])
            if "error" in event:
                return f"stream error {event['error'].get('code') or event['error'].get('type')}"
            if leave and any(c.get("delta", {}).get("content") for c in event.get("choices", [])):
                return None  # leaving the block closes the connection mid-stream
        return "stream without [DONE]"


async def _one(client: httpx.AsyncClient, path: str, body, expected: str) -> str | None:
    """Send one request; None when the answer is the expected one, else what went wrong."""
    if expected in ("stream", "leave"):
        return await _stream(client, path, body, expected == "leave")
    if isinstance(body, bytes):
        headers = {**HEADERS, "Content-Type": "application/json"}
        response = await client.post(path, content=body, headers=headers)
    else:
        response = await client.post(path, json=body, headers=HEADERS)
    if expected == "4xx" and 400 <= response.status_code < 500:
        error = response.json().get("error")
        enveloped = isinstance(error, dict) and error.get("message")
        return None if enveloped else f"{response.status_code} not an envelope"
    return None if response.status_code == 200 and expected == "ok" else _status(response)


def _status(response: httpx.Response) -> str:
    """`404 model_not_found`: the status and the error's code (or type), to tell failures apart."""
    try:
        error = response.json()["error"]
        return f"{response.status_code} {error.get('code') or error.get('type')}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return str(response.status_code)


async def _drive(url: str, kinds, seconds: float, concurrency: int, seed: int) -> dict[str, Tally]:
    tallies: dict[str, Tally] = defaultdict(Tally)
    rng = random.Random(seed)
    names, weights = [k[0] for k in kinds], [k[1] for k in kinds]
    builders = {k[0]: k[2] for k in kinds}
    counter = iter(range(10**9))
    deadline = time.monotonic() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            kind = rng.choices(names, weights)[0]
            path, body, expected = builders[kind](next(counter))
            start = time.perf_counter()
            try:
                outcome = await _one(client, path, body, expected)
            except (httpx.HTTPError, ValueError) as exc:  # transport failures, bodies that are not JSON
                outcome = type(exc).__name__
            if outcome is None:
                tallies[kind].latencies.append(time.perf_counter() - start)
            else:
                tallies[kind].errors[outcome] += 1

    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return tallies


def stack_processes() -> dict[str, psutil.Process]:
    """This process's children by role: `frontend`, `tritonserver` and one stub per model instance."""
    found = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            cmdline = proc.cmdline()
        except psutil.Error:
            continue
        if cmdline[-2:] == ["-m", "frontend"]:
            found["frontend"] = proc
        elif proc.name() == "tritonserver":
            found["tritonserver"] = proc
        elif len(cmdline) > 1 and cmdline[0].endswith("triton_python_backend_stub"):
            model = Path(cmdline[1]).parent.parent.name  # <repository>/<model>/<version>/model.*
            label, n = f"stub {model}", 1
            while label in found:
                n += 1
                label = f"stub {model} #{n}"
            found[label] = proc
    return found


def rss_mib(processes: dict[str, psutil.Process]) -> dict[str, float]:
    sizes = {}
    for label, proc in processes.items():
        try:
            sizes[label] = proc.memory_info().rss / 2**20
        except psutil.Error:  # gone: reported as missing at the end
            pass
    return sizes


def served_models(url: str) -> Models:
    listing = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    by_task = defaultdict(list)
    for model in listing:
        by_task[model.get("task")].append(model["id"])
    chat = [m for m in by_task["chat"] if m != VISION_MODEL] or by_task["chat"]
    if not by_task["embeddings"] or not chat:
        raise RuntimeError("the soak needs an embeddings model and a chat model in the repository")
    return Models(embeddings=by_task["embeddings"][0], chat=chat[0], images=(by_task["images"] or [None])[0],
                  vision=VISION_MODEL if VISION_MODEL in by_task["chat"] else None)


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def report(tallies: dict[str, Tally], seconds: float, rss: list[dict[str, float]], concurrency: int,
           minutes: float) -> str:
    """Markdown: the traffic table, then RSS per process after the warm-up, halfway and at the end."""
    before, halfway, after = rss
    total = sum(len(t.latencies) + sum(t.errors.values()) for t in tallies.values())
    errors = sum(sum(t.errors.values()) for t in tallies.values())
    lines = [f"`python -m bench soak --minutes {minutes:g}`: {seconds / 60:.1f} minutes of mixed traffic, "
             f"{concurrency} concurrent clients: **{total} requests, {total / seconds:.1f} req/s, "
             f"{errors} errors**. "
             "Latency of the expected answers (a bad request's is its 4xx; a disconnect's, the time to its "
             "first token).", "",
             "| traffic | requests | errors | p50 (ms) | p99 (ms) |", "|---|---:|---|---:|---:|"]
    for kind, tally in sorted(tallies.items()):
        count = len(tally.latencies) + sum(tally.errors.values())
        errs = ", ".join(f"{k}: {v}" for k, v in tally.errors.most_common()) or "0"
        p50 = f"{_percentile(tally.latencies, 50) * 1000:.0f}" if tally.latencies else "-"
        p99 = f"{_percentile(tally.latencies, 99) * 1000:.0f}" if tally.latencies else "-"
        lines.append(f"| {kind} | {count} | {errs} | {p50} | {p99} |")
    lines += ["", "| process | RSS after warm-up (MiB) | halfway | at the end | growth (MiB) | growth |",
              "|---|---:|---:|---:|---:|---:|"]
    for label in before:
        mid = f"{halfway[label]:.0f}" if label in halfway else "-"
        if label not in after:
            lines.append(f"| {label} | {before[label]:.0f} | {mid} | gone | | |")
            continue
        grow = after[label] - before[label]
        lines.append(f"| {label} | {before[label]:.0f} | {mid} | {after[label]:.0f} | {grow:+.0f} | "
                     f"{grow / before[label]:+.1%} |")
    return "\n".join(lines)


async def _drive_each(url: str, kinds) -> dict[str, Tally]:
    """Each kind of request once, in turn."""
    tallies: dict[str, Tally] = defaultdict(Tally)
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT_S) as client:
        for kind, _, build in kinds:
            outcome = await _one(client, *build(0))
            if outcome is not None:
                tallies[kind].errors[outcome] += 1
    return tallies


def run(repository: Path, threads: int = 2, minutes: float = 10.0, concurrency: int = 8,
        seed: int = 0) -> str:
    from bench.stack import running_stack
    from launcher.repository import model_names

    with running_stack(repository, model_names(repository), threads) as url:
        kinds = traffic(served_models(url))
        # One of each first, so that lazy first-request allocations do not count as growth.
        warm = asyncio.run(_drive_each(url, kinds))
        if any(t.errors for t in warm.values()):
            failed = {kind: dict(t.errors) for kind, t in warm.items() if t.errors}
            raise RuntimeError(f"warm-up failed: {failed}")
        processes = stack_processes()
        before = rss_mib(processes)
        halfway: dict[str, float] = {}
        timer = threading.Timer(minutes * 30, lambda: halfway.update(rss_mib(processes)))
        timer.start()
        start = time.monotonic()
        tallies = asyncio.run(_drive(url, kinds, minutes * 60, concurrency, seed))
        elapsed = time.monotonic() - start
        timer.cancel()
        after = rss_mib(processes)
    return report(tallies, elapsed, [before, halfway, after], concurrency, minutes)
