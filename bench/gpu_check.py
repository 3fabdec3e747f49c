"""GPU check: parity and throughput for CPU vs CUDA vs TensorRT, per network and end to end.

`python -m bench.gpu_check --repository R` (scripts/gpu_check.sh sets up the wheels, exports and builds the
engines first; README "GPU"). Two tables, printed as markdown:
  * networks: every ONNX network at its engine profile's opt shape on ONNX Runtime CPU (fp32, the reference),
    CUDA, ORT's TensorRT provider, and the TensorRT engine (`model.plan`, when built): max relative error and
    median milliseconds per run;
  * served: the product (openai SDK -> frontend -> bundled tritonserver) with the Python engines and the
    onnxruntime stand-in on each provider (MODELGATE_ORT_PROVIDERS): embeddings, greedy chat and one image;
    parity against the CPU run and requests per second.
A provider this onnxruntime build lacks is reported as such, so the script also runs (CPU only) without a GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
PROVIDERS = {"cpu": [CPU], "cuda": [CUDA, CPU], "ort-tensorrt": [TRT, CUDA, CPU]}
EMBEDDINGS, CHAT, IMAGES = "all-minilm-l6-v2", "smollm2-135m-instruct", "tiny-sd-random"
TEXTS = [f"GPU check sentence {i}: the lighthouse keeper counts {i} ships at dawn." for i in range(32)]


def _median_ms(fn, rounds: int) -> float:
    fn()  # warm-up (CUDA kernels, ORT's TensorRT provider builds its engine here)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def network_rows(repository: Path, rounds: int) -> list[str]:
    import onnxruntime as ort

    from export_scripts import engines, trt_build
    from triton_models.ort_runner import create_session

    available = ort.get_available_providers()
    parser = argparse.ArgumentParser()
    engines.add_arguments(parser)
    args = parser.parse_args([])
    args.repository = repository
    rows = ["| network | opt shape | provider | max rel. error vs CPU fp32 | ms / run |", "|---|---|---|---:|---:|"]
    for plan in engines.plan_engines(args):
        cpu = create_session(plan.onnx, providers=[CPU])
        feeds = trt_build.sample_inputs(cpu, plan.profile)
        names = [o.name for o in cpu.get_outputs()]
        reference = dict(zip(names, cpu.run(names, feeds)))
        shape = " ".join("x".join(map(str, s[1])) for s in plan.profile.values())
        for label, providers in PROVIDERS.items():
            if providers[0] not in available:
                rows.append(f"| {plan.name} | {shape} | {label} | not in this onnxruntime | |")
                continue
            session = cpu if label == "cpu" else create_session(plan.onnx, providers=providers)
            got = dict(zip(names, session.run(names, feeds)))
            ms = _median_ms(lambda s=session, n=names, f=feeds: s.run(n, f), rounds)
            rows.append(f"| {plan.name} | {shape} | {label} | {trt_build.relative_error(reference, got):.1e} "
                        f"| {ms:.2f} |")
        if plan.plan.exists() and trt_build.runtime_available():
            got, seconds = trt_build.run_engine(plan.plan.read_bytes(), feeds, repeats=rounds)
            rows.append(f"| {plan.name} | {shape} | engine ({plan.precision}) "
                        f"| {trt_build.relative_error(reference, got):.1e} | {1000 * seconds:.2f} |")
        else:
            rows.append(f"| {plan.name} | {shape} | engine | no model.plan (or no tensorrt wheel / libcudart) | |")
    return rows


def _served(client, rounds: int, with_chat: bool = True) -> dict:
    """One provider's answers to fixed requests (for parity), then requests per second of each kind; timed
    requests differ from each other so that no response cache answers them."""
    import base64
    import io

    from PIL import Image

    count = iter(range(1, 1 << 30))
    result = {}

    def embed(n=None):
        texts = TEXTS if n is None else [f"{t} ({n})" for t in TEXTS]
        return client.embeddings.create(model=EMBEDDINGS, input=texts)

    def chat(n=None):
        question = "What is the capital of France?" + ("" if n is None else f" ({n})")
        return client.chat.completions.create(model=CHAT, temperature=0, max_tokens=32,
                                              messages=[{"role": "user", "content": question}])

    def image(n=None):
        return client.images.generate(model=IMAGES, prompt="a lighthouse at dawn", size="64x64",
                                      response_format="b64_json", extra_body={"seed": n or 0, "steps": 10})

    result["embeddings"] = np.array([d.embedding for d in embed().data])
    result["embeddings/s"] = len(TEXTS) * 1000 / _median_ms(lambda: embed(next(count)), rounds)
    if with_chat:
        answer = chat()
        result["chat"] = answer.choices[0].message.content
        tokens = []
        ms = _median_ms(lambda: tokens.append(chat(next(count)).usage.completion_tokens), rounds)
        result["chat tokens/s"] = statistics.median(tokens) * 1000 / ms
    png = base64.b64decode(image().data[0].b64_json)
    result["image"] = np.asarray(Image.open(io.BytesIO(png)), np.float64)
    result["images/s"] = 1000 / _median_ms(lambda: image(next(count)), rounds)
    return result


def served_rows(repository: Path, rounds: int) -> list[str]:
    import onnxruntime as ort
    from openai import OpenAI

    from bench.stack import running_stack
    from export_scripts.diffusion import served_models

    models = [EMBEDDINGS, CHAT, *served_models(IMAGES)]
    header = ("| providers | embeddings (min cos vs CPU) | embeddings/s | chat = CPU text | chat tokens/s "
              "| image max abs diff vs CPU (0-255) | images/s |")
    rows = [header, "|---|---:|---:|---|---:|---:|---:|"]
    baseline = None
    for label, providers in PROVIDERS.items():
        if providers[0] not in ort.get_available_providers():
            rows.append(f"| {label} | not in this onnxruntime | | | | | |")
            continue
        os.environ["MODELGATE_ORT_PROVIDERS"] = ",".join(providers)  # the Triton stubs inherit it
        try:
            with running_stack(repository, models, threads=0, extra_env={"MODELGATE_CACHE_ENABLED": "false"}) as url:
                client = OpenAI(base_url=f"{url}/v1", api_key="gpu-check", max_retries=0, timeout=600)
                # ORT's TensorRT provider builds an engine per new input shape: every decode step of the LLM.
                got = _served(client, rounds, with_chat=label != "ort-tensorrt")
        finally:
            os.environ.pop("MODELGATE_ORT_PROVIDERS", None)
        baseline = baseline or got
        cosine = float(np.min(np.sum(got["embeddings"] * baseline["embeddings"], axis=1)))
        chat = (f"{got['chat'] == baseline['chat']} | {got['chat tokens/s']:.1f}" if "chat" in got
                else "not run (engine per KV length) |")
        rows.append(f"| {label} | {cosine:.6f} | {got['embeddings/s']:.1f} | {chat} "
                    f"| {np.abs(got['image'] - baseline['image']).max():.0f} | {got['images/s']:.2f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--skip-served", action="store_true", help="networks only (no Triton, no frontend)")
    args = parser.parse_args(argv)
    print("## networks\n\n" + "\n".join(network_rows(args.repository, args.rounds)) + "\n", flush=True)
    if not args.skip_served:
        print("## served\n\n" + "\n".join(served_rows(args.repository, args.rounds)) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
