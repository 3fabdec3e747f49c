"""Embeddings: inputs/s end to end (openai SDK -> frontend -> Triton) vs infinity-emb, a served peer (torch
engine, same MiniLM folder, bench/infinity.py), and sentence-transformers in-process.

Same sentences, same thread count for ONNX Runtime (in Triton) and torch (infinity and in-process),
interleaved rounds, medians. Sequential requests of 1 and 32 inputs, and 8 concurrent clients sending one input
each. Every request carries sentences never sent before, so no response cache answers.
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


CONCURRENT = 8


def run(repository: Path, threads: int = 2, rounds: int = 7, inputs_per_round: int = 64) -> str:
    import torch
    from openai import OpenAI

    from bench import infinity
    from bench.stack import running_stack
    from export_scripts.embeddings import default_model_path, load_sentence_transformer

    torch.set_num_threads(threads)
    reference = load_sentence_transformer(str(default_model_path()))
    rows = []
    with running_stack(repository, [MODEL], threads) as url, \
            infinity.server(default_model_path(), threads) as (peer_url, peer_model):
        ours_client = OpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0)
        peer_client = OpenAI(base_url=peer_url, api_key="bench", max_retries=0)
        sides = {
            "modelgate": lambda chunk: ours_client.embeddings.create(model=MODEL, input=chunk),
            "infinity": lambda chunk: peer_client.embeddings.create(model=peer_model, input=chunk),
            "sentence-transformers": lambda chunk: reference.encode(chunk, batch_size=len(chunk)),
        }
        for batch, clients in ((1, 1), (32, 1), (1, CONCURRENT)):
            rates = {name: [] for name in sides}
            counter = 10_000 * batch + 1_000_000 * clients
            for name, fn in sides.items():  # warm-up every side
                _timed(fn, sentences(batch * 2, 1), batch, clients)
            for _ in range(rounds):
                counter += inputs_per_round
                texts = sentences(inputs_per_round, counter)
                for name, fn in sides.items():
                    if clients > 1 and name == "sentence-transformers":
                        continue  # in-process: no server to send concurrent requests to
                    rates[name].append(_timed(fn, [f"{name} {t}" for t in texts], batch, clients))
            rows.append((batch, clients, {n: statistics.median(r) for n, r in rates.items() if r}))
    lines = [f"Threads: {threads} (ONNX Runtime intra-op in Triton; torch in infinity and in-process). "
             f"{rounds} interleaved rounds of {inputs_per_round} fresh inputs per row; medians. infinity-emb "
             f"{infinity.VERSION}, `--engine torch` (its `optimum` engine, reported not to start from a local folder with optimum 2.1, was not tried).", "",
             "| load | modelgate (inputs/s) | infinity (inputs/s) | sentence-transformers in-process (inputs/s) | "
             "vs infinity | vs sentence-transformers |",
             "|---|---:|---:|---:|---:|---:|"]
    for batch, clients, r in rows:
        load = f"{clients} concurrent requests of {batch}" if clients > 1 else f"batch {batch}"
        st = r.get("sentence-transformers")
        lines.append(f"| {load} | {r['modelgate']:.1f} | {r['infinity']:.1f} | {st:.1f} | "
                     f"{r['modelgate'] / r['infinity']:.2f} | {r['modelgate'] / st:.2f} |" if st else
                     f"| {load} | {r['modelgate']:.1f} | {r['infinity']:.1f} | - | "
                     f"{r['modelgate'] / r['infinity']:.2f} | - |")
    return "\n".join(lines)


def _timed(fn, texts: list[str], batch: int, clients: int) -> float:
    """inputs/s sending `texts` in requests of `batch` inputs from `clients` threads."""
    from concurrent.futures import ThreadPoolExecutor

    chunks = [texts[i:i + batch] for i in range(0, len(texts), batch)]
    start = time.perf_counter()
    if clients == 1:
        for chunk in chunks:
            fn(chunk)
    else:
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(fn, chunks))
    return len(texts) / (time.perf_counter() - start)
