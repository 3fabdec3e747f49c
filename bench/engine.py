"""The chat engine alone, in-process (no Triton, no frontend): decode tokens/s at 1 and 16 sequences, free and
under a JSON schema (constrained decoding's overhead), the prefill time of a 500-token prompt and a schema's
compile time, on the served SmolLM2 graph. What the engine costs before the serving
path adds its own; `python -m bench engine` on two checkouts compares engine changes (docs/llm-engine.md)."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

MODEL = "smollm2-135m-instruct"
DECODE_TOKENS = 64
PREFILL_TOKENS = 500
CONCURRENCY = (1, 16)
# A typical structured-output schema (strings unbounded, so a sequence is constrained for all its tokens).
SCHEMA = {"type": "object", "properties": {
    "title": {"type": "string"}, "year": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}},
    "summary": {"type": "string"}}, "required": ["title", "year", "tags", "summary"], "additionalProperties": False}


class _Sink:
    def is_cancelled(self) -> bool:
        return False

    def send(self, output, final) -> None:
        pass

    def fail(self, error) -> None:
        raise RuntimeError(f"the engine failed a benchmark request: {error}")


def _prompts(tokenizer, count: int) -> list[list[int]]:
    rendered = [f"<|im_start|>user\nQuestion {i}: tell me about the number {i * 7} and why it matters."
                f"<|im_end|>\n<|im_start|>assistant\n" for i in range(count)]
    return [tokenizer.encode(text) for text in rendered]


def run(repository: Path, threads: int = 2, rounds: int = 6) -> str:
    from triton_models.llm.decoder import OnnxDecoder
    from triton_models.llm.engine import Engine, EngineConfig
    from triton_models.llm.params import SamplingParams
    from triton_models.llm.tokenizer import TextTokenizer

    folder = repository / MODEL / "1"
    tokenizer = TextTokenizer(folder)
    engine = Engine(OnnxDecoder(folder / "model_q4.onnx", threads=threads), tokenizer,
                    EngineConfig(context_length=2048, prefix_cache_tokens=0))

    def submit(prompts: list[list[int]], max_tokens: int, structured: dict | None = None):
        params = SamplingParams.from_dict({"temperature": 0, "ignore_eos": True, "max_tokens": max_tokens,
                                           **({"structured_outputs": structured} if structured else {})})
        return [engine.submit("", params, _Sink(), prompt_ids=p) for p in prompts]

    def decode(count: int, structured: dict | None = None) -> float:
        """tokens/s of up to DECODE_TOKENS decode steps of `count` sequences (their prefill excluded)."""
        requests = submit(_prompts(tokenizer, count), DECODE_TOKENS + 1, structured)
        while any(not r.sequences[0].generated for r in requests):
            engine.step()
        before = sum(r.sequences[0].generated for r in requests)
        start = time.perf_counter()
        while not all(r.closed for r in requests):
            engine.step()
        return (sum(r.sequences[0].generated for r in requests) - before) / (time.perf_counter() - start)

    def compile_ms() -> float:
        """A typical schema compiled and checked, uncached (the engine caches compiled grammars by text)."""
        start = time.perf_counter()
        engine.grammars._compile("json", json.dumps(SCHEMA), None)
        return (time.perf_counter() - start) * 1e3

    def prefill() -> float:
        """ms to prefill one PREFILL_TOKENS-token prompt and sample its first token."""
        words = " ".join(f"word{i}" for i in range(PREFILL_TOKENS))
        prompt = tokenizer.encode(words)[:PREFILL_TOKENS]
        start = time.perf_counter()
        (request,) = submit([prompt], 1)
        while not request.closed:
            engine.step()
        return (time.perf_counter() - start) * 1e3

    decode(1)  # warm up
    decode(1, {"json": SCHEMA})
    results: dict[str, list[float]] = {}
    for c in CONCURRENCY:
        results[f"decode, {c} sequences (tok/s)"] = []
        results[f"decode, {c} sequences, JSON schema (tok/s)"] = []
    results[f"prefill, {PREFILL_TOKENS} tokens (ms)"] = []
    results["JSON schema compile, uncached (ms)"] = []
    for _ in range(rounds):
        for c in CONCURRENCY:
            results[f"decode, {c} sequences (tok/s)"].append(decode(c))
            results[f"decode, {c} sequences, JSON schema (tok/s)"].append(decode(c, {"json": SCHEMA}))
        results[f"prefill, {PREFILL_TOKENS} tokens (ms)"].append(prefill())
        results["JSON schema compile, uncached (ms)"].append(compile_ms())
    lines = [f"SmolLM2-135M q4 in `triton_models.llm.Engine`, {threads} ORT threads, greedy, {rounds} rounds.", "",
             "| measure | median | min | max |", "| --- | ---: | ---: | ---: |"]
    for name, values in results.items():
        lines.append(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} |")
    for c in CONCURRENCY:
        free, constrained = (statistics.median(results[f"decode, {c} sequences{k} (tok/s)"])
                             for k in ("", ", JSON schema"))
        lines.append(f"| constrained decode overhead, {c} sequences (target <= 10%) | {1 - constrained / free:.1%} "
                     f"| | |")
    return "\n".join(lines)
