"""Embeddings: inputs/s end to end (openai SDK -> frontend -> Triton) vs sentence-transformers in-process.

Same sentences, same thread count for ONNX Runtime (in Triton) and torch (in-process), interleaved rounds,
medians. Every request carries sentences never sent before, so Triton's response cache never answers.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

MODEL = "all-minilm-l6-v2"
WORDS = ("model server tensor batch vector token request latency cluster graph kernel cache stream "
         "language image answer question network memory thread queue export engine").split()


def sentences(count: int, start: int) -> list[str]:
    """Unique, deterministic sentences of 8-40 words (about 10-45 tokens)."""
    rng = np.random.default_rng(start)
    return [f"{start + i} " + " ".join(rng.choice(WORDS, rng.integers(8, 41))) for i in range(count)]


def run(repository: Path, threads: int = 2, rounds: int = 7, inputs_per_round: int = 64) -> str:
    import torch
    from openai import OpenAI

    from bench.stack import running_stack
    from export_scripts.embeddings import default_model_path, load_sentence_transformer

    torch.set_num_threads(threads)
    reference = load_sentence_transformer(str(default_model_path()))
    rows = []
    with running_stack(repository, [MODEL], threads) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0)
        for batch in (1, 32):
            ours, peer, counter = [], [], 10_000 * batch

            def timed(fn, texts):
                start = time.perf_counter()
                for i in range(0, len(texts), batch):
                    fn(texts[i:i + batch])
                return len(texts) / (time.perf_counter() - start)

            embed = lambda chunk: client.embeddings.create(model=MODEL, input=chunk)  # noqa: E731
            encode = lambda chunk: reference.encode(chunk, batch_size=batch)  # noqa: E731
            timed(embed, sentences(batch * 2, 1))  # warm-up both
            timed(encode, sentences(batch * 2, 1))
            for _ in range(rounds):
                counter += inputs_per_round
                ours.append(timed(embed, sentences(inputs_per_round, counter)))
                peer.append(timed(encode, sentences(inputs_per_round, counter)))
            rows.append((batch, statistics.median(ours), statistics.median(peer)))
    lines = [f"Threads: {threads} (ONNX Runtime intra-op in Triton; torch in-process). "
             f"{rounds} interleaved rounds of {inputs_per_round} fresh inputs per batch size; medians.", "",
             "| batch | modelgate end to end (inputs/s) | sentence-transformers in-process (inputs/s) | ratio |",
             "|---:|---:|---:|---:|"]
    lines += [f"| {b} | {o:.1f} | {p:.1f} | {o / p:.2f} |" for b, o, p in rows]
    return "\n".join(lines)
