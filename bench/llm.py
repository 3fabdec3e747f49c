"""Chat LLM: decode tokens/s at concurrency 1, 4, 16 and time to first token, end to end, vs llama.cpp's server.

Both sides are OpenAI-compatible servers answering `/v1/completions` over HTTP with the openai SDK: modelgate
(frontend -> Triton -> ONNX engine, the model's own config but `intra_op_thread_count` = threads) and
llama-cpp-python's server on the same GGUF the model was exported from (`n_threads` = threads). Same raw
prompts, same max_tokens, end of sequence suppressed on both (`ignore_eos` here, a -100 logit bias on the
EOS token there), so both generate the same number of tokens; greedy. Every prompt starts with a new
number, so llama.cpp's prompt cache never skips a prefill. Rounds are interleaved; medians (and p95 for
the first token). Decode rates are completion tokens over wall time for `c` concurrent requests (their
short prefills included).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path


MODEL = "smollm2-135m-instruct"
CONCURRENCY = (1, 4, 16)
TTFT_PROMPT_TOKENS = 200
WORDS = ["river", "mountain", "engine", "story", "garden", "winter", "signal", "harbor", "lantern", "market", "orbit", "valley", "copper", "meadow", "thunder", "library", "compass", "canyon", "festival", "glacier"]
# Targets from the issue: modelgate / llama.cpp.
TARGETS = {"decode 1": (">=", 0.9), "decode 16": (">=", 3.0), "ttft p50": ("<=", 0.7)}


def served_repository(repository: Path, model: str, threads: int, root: Path) -> Path:
    """A repository holding `model` with intra_op_thread_count = threads (its files linked, not copied)."""
    from export_scripts.common import read_config, write_config

    config = read_config(repository / model / "config.pbtxt")
    config.parameters["intra_op_thread_count"].string_value = str(threads)
    target = root / model
    target.mkdir(parents=True)
    for entry in (repository / model).iterdir():
        if entry.name != "config.pbtxt":
            (target / entry.name).symlink_to(entry.resolve())
    write_config(target, config)
    return root


@contextmanager
def llama_server(gguf: Path, threads: int, context: int):
    """llama-cpp-python's OpenAI-compatible server on a free port; yields its base URL."""
    from launcher.triton import free_port, wait_for_http

    try:
        import llama_cpp.server  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("the LLM benchmark needs llama-cpp-python[server] (pip install -e '.[bench]')") from exc
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--n_threads", str(threads),
               "--n_threads_batch", str(threads), "--n_ctx", str(context), "--host", "127.0.0.1",
               "--port", str(port), "--verbose", "false"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_for_http(f"{url}/v1/models", server, 120):
            raise RuntimeError("llama.cpp's server did not start")
        yield url
    finally:
        server.terminate()
        server.wait(10)


class Side:
    """One server under test: how to ask it for `max_tokens` tokens without stopping early."""

    def __init__(self, name: str, url: str, model: str, extra: dict):
        from openai import OpenAI

        self.name = name
        self.model = model
        self.extra = extra
        self.client = OpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=600)

    def complete(self, prompt: str, max_tokens: int) -> int:
        result = self.client.completions.create(model=self.model, prompt=prompt, max_tokens=max_tokens,
                                                temperature=0, extra_body=self.extra)
        return result.usage.completion_tokens

    def first_token_s(self, prompt: str) -> float:
        start = time.perf_counter()
        stream = self.client.completions.create(model=self.model, prompt=prompt, max_tokens=4, temperature=0,
                                                stream=True, extra_body=self.extra)
        try:
            for chunk in stream:
                if any(c.text for c in chunk.choices):
                    return time.perf_counter() - start
        finally:
            stream.close()
        raise RuntimeError(f"{self.name}: no token came back")

    def decode_rate(self, prompts: list[str], max_tokens: int) -> tuple[float, int]:
        start = time.perf_counter()
        with ThreadPoolExecutor(len(prompts)) as pool:
            tokens = sum(pool.map(lambda p: self.complete(p, max_tokens), prompts))
        return tokens / (time.perf_counter() - start), tokens


class Prompts:
    """Fresh prompts: a new leading number each, so no server can reuse a cached prefix."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.count = 0

    def short(self) -> str:
        self.count += 1
        return f"{self.count}. Write a long story about a {WORDS[self.count % len(WORDS)]}. Once upon a time,"

    def long(self, tokens: int) -> str:
        self.count += 1
        text, i = f"{self.count}.", 0
        while len(self.tokenizer.encode(text).ids) < tokens:
            text += f" {WORDS[(self.count * 7 + i) % len(WORDS)]}"
            i += 1
        return text


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(repository: Path, threads: int = 2, rounds: int = 5, max_tokens: int = 64, ttft_samples: int | None = None,
        model: str = MODEL) -> str:
    from tokenizers import Tokenizer

    from bench.stack import running_stack
    from export_scripts.llm import resolve_source

    source = resolve_source(None)
    gguf = Path(source.model) / source.gguf_file
    tokenizer = Tokenizer.from_file(str(repository / model / "1" / "tokenizer.json"))
    eos = json.loads((repository / model / "1" / "generation_config.json").read_text())["eos_token_id"]
    eos_ids = eos if isinstance(eos, list) else [eos]
    prompts = Prompts(tokenizer)
    load = os.getloadavg()[0]
    ttft_samples = ttft_samples or 4 * rounds
    with tempfile.TemporaryDirectory(prefix="bench-llm-") as tmp, \
            llama_server(gguf, threads, context=2048) as peer_url, \
            running_stack(served_repository(repository, model, threads, Path(tmp)), [model], threads) as url:
        sides = [Side("modelgate", url, model, {"ignore_eos": True}),
                 Side("llama.cpp", peer_url, model, {"logit_bias": {str(t): -100 for t in eos_ids}})]
        for side in sides:  # warm-up: first runs allocate
            side.complete(prompts.short(), 8)
            side.first_token_s(prompts.long(TTFT_PROMPT_TOKENS))
        decode: dict[tuple[str, int], list[float]] = {}
        produced: dict[str, int] = {}
        for concurrency in CONCURRENCY:
            for _ in range(rounds):
                batch = [prompts.short() for _ in range(concurrency)]
                for side in sides:
                    rate, tokens = side.decode_rate(batch, max_tokens)
                    decode.setdefault((side.name, concurrency), []).append(rate)
                    produced[side.name] = produced.get(side.name, 0) + tokens
        ttft: dict[str, list[float]] = {}
        for _ in range(ttft_samples):
            prompt = prompts.long(TTFT_PROMPT_TOKENS)
            for side in sides:
                ttft.setdefault(side.name, []).append(side.first_token_s(prompt))
    ours, peer = (s.name for s in sides)
    work = (f"{produced[ours]} tokens each in all" if produced[ours] == produced[peer] else
            f"UNEQUAL work: {produced[ours]} vs {produced[peer]} tokens")
    rows = []
    for concurrency in CONCURRENCY:
        a, b = (statistics.median(decode[(n, concurrency)]) for n in (ours, peer))
        rows.append((f"decode tokens/s, concurrency {concurrency}", f"{a:.1f}", f"{b:.1f}", a / b,
                     TARGETS.get(f"decode {concurrency}")))
    for label, q in (("p50", 0.5), ("p95", 0.95)):
        a, b = (_percentile(ttft[n], q) * 1000 for n in (ours, peer))
        rows.append((f"time to first token {label}, {TTFT_PROMPT_TOKENS}-token prompt (ms)", f"{a:.0f}", f"{b:.0f}",
                     a / b, TARGETS.get(f"ttft {label}")))
    lines = [(f"Model `{model}` (served `model_file` from its config) vs llama.cpp (llama-cpp-python server) on "
              f"`{gguf.name}`. Threads: {threads} on both. /v1/completions, greedy, {max_tokens} tokens per "
              f"request (EOS suppressed on both; {work}), {rounds} interleaved rounds "
              f"per concurrency, {ttft_samples} first-token samples; medians. Load average at the start: "
              f"{load:.1f} on {os.cpu_count()} cores."),
             "",
             "| measure | modelgate | llama.cpp | ratio | target | met |",
             "|---|---:|---:|---:|---|---|"]
    for label, a, b, ratio, target in rows:
        goal = f"{target[0]} {target[1]}x" if target else ""
        met = "" if not target else ("yes" if (ratio >= target[1] if target[0] == ">=" else ratio <= target[1])
                                     else "no")
        lines.append(f"| {label} | {a} | {b} | {ratio:.2f} | {goal} | {met} |")
    return "\n".join(lines)
