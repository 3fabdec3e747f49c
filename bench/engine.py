"""The chat engine alone, in-process (no Triton, no frontend): decode tokens/s at 1 and 16 sequences and the
prefill time of a 500-token prompt, on the served SmolLM2 graph. What the engine costs before the serving
path adds its own; `python -m bench engine` on two checkouts compares engine changes (docs/llm-engine.md)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

MODEL = "smollm2-135m-instruct"
DECODE_TOKENS = 64
PREFILL_TOKENS = 500
CONCURRENCY = (1, 16)


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

    def submit(prompts: list[list[int]], max_tokens: int):
        params = SamplingParams.from_dict({"temperature": 0, "ignore_eos": True, "max_tokens": max_tokens})
        return [engine.submit("", params, _Sink(), prompt_ids=p) for p in prompts]

    def decode(count: int) -> float:
        """tokens/s of DECODE_TOKENS decode steps of `count` sequences (their prefill excluded)."""
        requests = submit(_prompts(tokenizer, count), DECODE_TOKENS + 1)
        while any(not r.sequences[0].generated for r in requests):
            engine.step()
        start = time.perf_counter()
        while not all(r.closed for r in requests):
            engine.step()
        return count * DECODE_TOKENS / (time.perf_counter() - start)

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
    results: dict[str, list[float]] = {f"decode, {c} sequences (tok/s)": [] for c in CONCURRENCY}
    results[f"prefill, {PREFILL_TOKENS} tokens (ms)"] = []
    for _ in range(rounds):
        for c in CONCURRENCY:
            results[f"decode, {c} sequences (tok/s)"].append(decode(c))
        results[f"prefill, {PREFILL_TOKENS} tokens (ms)"].append(prefill())
    lines = [f"SmolLM2-135M q4 in `triton_models.llm.Engine`, {threads} ORT threads, greedy, {rounds} rounds.", "",
             "| measure | median | min | max |", "| --- | ---: | ---: | ---: |"]
    for name, values in results.items():
        lines.append(f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} |")
    return "\n".join(lines)
