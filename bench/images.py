"""Images: seconds per image end to end (openai SDK -> frontend -> Triton BLS pipeline) vs diffusers in-process.

The same model (the exported pipeline's source: for `tiny-sd-random`, the same random weights rebuilt from
the same seed), the same steps and guidance, the same thread count for ONNX Runtime (in Triton) and torch
(in-process), interleaved rounds, medians. Each request has a new seed, so Triton's response cache never
answers. modelgate's time includes PNG encoding, base64 and HTTP; diffusers' ends at PIL images.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

MODEL = "tiny-sd-random"
PROMPT = "a watercolor painting of a lighthouse at dawn"


def reference_pipeline(repository: Path, model: str):
    from export_scripts.common import read_config
    from export_scripts.diffusion import TINY, TINY_SEED, build_tiny_pipeline, load_pipeline

    source = read_config(repository / model / "config.pbtxt").parameters["source"].string_value
    if source == TINY:
        import torch

        torch.manual_seed(TINY_SEED)  # as the exporter does: the same random weights
        return build_tiny_pipeline()
    return load_pipeline(source)


def run(repository: Path, threads: int = 2, rounds: int = 5, sizes=(64, 256), steps: int = 10,
        model: str = MODEL) -> str:
    import torch
    from openai import OpenAI

    from bench.stack import running_stack
    from export_scripts.diffusion import served_models

    torch.set_num_threads(threads)
    load = os.getloadavg()[0]
    pipe = reference_pipeline(repository, model)
    pipe.set_progress_bar_config(disable=True)
    guidance = 7.5
    rows = []
    with running_stack(repository, served_models(model), threads) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=600)
        seed = 1000

        def ours(size):
            client.images.generate(model=model, prompt=PROMPT, size=f"{size}x{size}", response_format="b64_json",
                                   extra_body={"steps": steps, "guidance_scale": guidance, "seed": seed})

        def peer(size):
            with torch.inference_mode():
                pipe(PROMPT, height=size, width=size, num_inference_steps=steps, guidance_scale=guidance,
                     generator=torch.Generator().manual_seed(seed), output_type="pil")

        def timed(fn, size):
            start = time.perf_counter()
            fn(size)
            return time.perf_counter() - start

        for size in sizes:
            timed(ours, size), timed(peer, size)  # warm-up both
            mine, theirs = [], []
            for _ in range(rounds):
                seed += 1
                mine.append(timed(ours, size))
                theirs.append(timed(peer, size))
            rows.append((size, statistics.median(mine), statistics.median(theirs)))
    lines = [(f"Model `{model}`, {steps} steps, guidance {guidance}, n=1. Threads: {threads} (ONNX Runtime "
              f"intra-op in Triton; torch in-process). {rounds} interleaved rounds per size, a new seed each; "
              f"medians. Load average at the start: {load:.1f} on {os.cpu_count()} cores"
              + (" (other work running; torch with several threads suffers most from it, at small sizes above all)."
                 if load > 0.5 * (os.cpu_count() or 1) else ".")),
             "",
             "| size | modelgate end to end (s/image) | diffusers in-process (s/image) | ratio |",
             "|---|---:|---:|---:|"]
    lines += [f"| {s}x{s} | {o:.3f} | {p:.3f} | {o / p:.2f} |" for s, o, p in rows]
    return "\n".join(lines)
