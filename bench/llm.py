"""Chat LLM against llama.cpp's own `llama-server`: the same load, the same metrics, in one run.

Both are OpenAI-compatible servers loaded through `bench.serve` (streamed `/v1/completions`, greedy,
`max_tokens` tokens with `ignore_eos` on both, prompts of ~40 tokens that differ at the first token so no
prefix cache helps): modelgate as users run it (frontend -> Triton -> ONNX engine; the model's own config but
`intra_op_thread_count` = threads and the KV capacity of llama-server at 16 slots) and `llama-server` built
from llama.cpp's sources (bench/llama_cpp.py) on the GGUF the model was exported from, started for each level
with `--parallel` = the concurrency and `-c` = slots x `SLOT_CONTEXT`, same threads. Rounds are outermost and
the two servers alternate level by level. Reported: output tokens/s (median and range over rounds), TTFT, TPOT
and ITL percentiles, goodput (requests/s within TTFT <= 1 s and TPOT <= 50 ms), and each server's RSS after
its c=16 level; PNG charts next to docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
from pathlib import Path

MODEL = "smollm2-135m-instruct"
CONCURRENCY = (1, 2, 4, 8, 16, 32)
SLOT_CONTEXT = 1024  # llama-server's per-slot context; ours gets the same KV capacity at c=16
MEMORY_LEVEL = 16
DOCS = Path(__file__).resolve().parent.parent / "docs"
# modelgate / llama-server, from the issue: (measure, concurrency) -> (direction, ratio)
TARGETS = {("decode", 1): (">=", 1.0), ("decode", 16): (">=", 1.5), ("decode", 32): (">=", 1.5),
           ("ttft p50", 1): ("<=", 0.7), ("ttft p50", 16): ("<=", 0.7), ("goodput", 16): (">=", 1.5),
           ("rss", MEMORY_LEVEL): ("<=", 1.2)}
SIDES = ("modelgate", "llama-server")


def served_repository(repository: Path, model: str, threads: int, root: Path, **parameters) -> Path:
    """A repository holding `model` with intra_op_thread_count = threads and these config parameters
    (its files linked, not copied)."""
    from export_scripts.common import read_config, write_config

    config = read_config(repository / model / "config.pbtxt")
    for key, value in {"intra_op_thread_count": threads, **parameters}.items():
        config.parameters[key].string_value = str(value)
    target = root / model
    target.mkdir(parents=True)
    for entry in (repository / model).iterdir():
        if entry.name != "config.pbtxt":
            (target / entry.name).symlink_to(entry.resolve())
    write_config(target, config)
    return root


def chat_stub_rss_mib(model: str) -> float:
    from bench.soak import rss_mib, stack_processes

    return rss_mib(stack_processes())[f"stub {model}"]


def measure_both(url: str, gguf: Path, model: str, threads: int, concurrency: tuple[int, ...], rounds: int,
                 max_tokens: int, requests_per_client: int):
    """Per side, per level, the rounds' (results, wall time); and each side's RSS after MEMORY_LEVEL."""
    import psutil

    from bench import llama_cpp, serve

    collected = {side: {c: [] for c in concurrency} for side in SIDES}
    rss: dict[str, float] = {}
    prompts = serve.Prompts()

    def level(side_url: str, c: int):
        return asyncio.run(serve.run_level(side_url, model, c, prompts, max_tokens=max_tokens,
                                           requests_per_client=requests_per_client, ignore_eos=True,
                                           api_key=None))

    level(url, 1)  # warm-up: first runs allocate
    for round_index in range(rounds):
        for c in concurrency:
            print(f"round {round_index + 1}/{rounds}, concurrency {c}", flush=True)
            collected["modelgate"][c].append(level(url, c))
            if c == MEMORY_LEVEL and round_index == 0:
                rss["modelgate"] = chat_stub_rss_mib(model)
            with llama_cpp.server(gguf, threads, slots=c, slot_context=SLOT_CONTEXT) as (peer, process):
                level(peer, 1)
                collected["llama-server"][c].append(level(peer, c))
                if c == MEMORY_LEVEL and round_index == 0:
                    rss["llama-server"] = psutil.Process(process.pid).memory_info().rss / 2**20
    return collected, rss


def plot(levels: dict[str, list], path_prefix: Path) -> list[Path]:
    """Throughput, and TTFT and ITL percentiles, against concurrency for each side."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    written = []
    charts = [("throughput", "output tokens/s", lambda lv: [statistics.median(x.output_tokens_per_s) for x in lv],
               None),
              ("ttft", "time to first token (ms)", lambda lv: [x.ttft_ms for x in lv], ("p50", "p95")),
              ("itl", "inter-token latency (ms)", lambda lv: [x.itl_ms for x in lv], ("p50", "p99"))]
    for name, label, values, quantiles in charts:
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
        for side, color in zip(SIDES, ("tab:blue", "tab:orange")):
            xs = [x.concurrency for x in levels[side]]
            if quantiles is None:
                ax.plot(xs, values(levels[side]), marker="o", color=color, label=side)
            else:
                for q, style in zip(quantiles, ("-", "--")):
                    ax.plot(xs, [v[q] for v in values(levels[side])], style, marker="o", color=color,
                            label=f"{side} {q}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("concurrent requests")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = path_prefix.with_name(f"{path_prefix.name}-{name}.png")
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def run(repository: Path, threads: int = 2, rounds: int = 3, max_tokens: int = 64, model: str = MODEL,
        concurrency: tuple[int, ...] = CONCURRENCY, requests_per_client: int = 2, charts: Path | None = DOCS) -> str:
    from bench import serve
    from bench.stack import running_stack
    from export_scripts.llm import resolve_source

    source = resolve_source(None)
    gguf = Path(source.model) / source.gguf_file
    load_before = os.getloadavg()
    kv = MEMORY_LEVEL * SLOT_CONTEXT
    with tempfile.TemporaryDirectory(prefix="bench-llm-") as tmp:
        repo = served_repository(repository, model, threads, Path(tmp), max_kv_tokens=kv,
                                 max_num_seqs=max(concurrency))
        with running_stack(repo, [model], threads) as url:
            collected, rss = measure_both(url, gguf, model, threads, concurrency, rounds, max_tokens,
                                          requests_per_client)
    load_after = os.getloadavg()
    levels = {side: [serve.summarise(c, collected[side][c], 1.0, 0.05) for c in concurrency] for side in SIDES}
    lines = [f"`{model}` (served `model_q4.onnx`) vs llama.cpp's `llama-server` (built from llama.cpp "
             f"{_llama_version()}, `--parallel` = concurrency, `-c` = slots x {SLOT_CONTEXT}) on `{gguf.name}`; "
             f"{threads} threads each. Streamed `/v1/completions`, greedy, {max_tokens} tokens per request "
             f"(`ignore_eos`), {requests_per_client} requests per client per round, {rounds} rounds (the servers "
             f"alternate level by level). Goodput SLO: TTFT <= 1 s and TPOT <= 50 ms. Load average (1, 5, 15 min) "
             f"before {_load(load_before)}, after {_load(load_after)}, {os.cpu_count()} cores. "
             f"`python -m bench serve` runs the same load against any server.", ""]
    for side in SIDES:
        lines += [f"**{side}**", "", serve.table(levels[side]), ""]
    lines += ["| measure | modelgate | llama-server | ratio | target | met |", "|---|---:|---:|---:|---|---|"]
    for (measure, c), (direction, goal) in TARGETS.items():
        if c not in concurrency:
            continue
        ours, peer = (_value(measure, levels[side][concurrency.index(c)], rss.get(side)) for side in SIDES)
        unit = {"decode": "tok/s", "ttft p50": "ms", "goodput": "req/s", "rss": "MiB"}[measure]
        if not peer and not ours:  # goodput: neither server met the SLO at this level
            lines.append(f"| {measure} ({unit}), c={c} | 0 | 0 | - | {direction} {goal}x | neither met the SLO |")
            continue
        ratio = ours / peer if peer else float("inf")
        met = ratio >= goal if direction == ">=" else ratio <= goal
        lines.append(f"| {measure} ({unit}), c={c} | {ours:.1f} | {peer:.1f} | {ratio:.2f} | {direction} {goal}x | "
                     f"{'yes' if met else '**no**'} |")
    lines.append("")
    lines.append(f"RSS after the c={MEMORY_LEVEL} level at equal KV capacity ({kv} tokens: our `max_kv_tokens`, "
                 f"llama-server's {MEMORY_LEVEL} slots x {SLOT_CONTEXT}): the chat model's Triton stub process vs "
                 f"the llama-server process.")
    if charts is not None:
        for path in plot(levels, charts / "bench-llm"):
            lines += ["", f"![{path.stem}]({path.name})"]
    return "\n".join(lines)


def _value(measure: str, level, rss: float | None) -> float:
    if measure == "decode":
        return statistics.median(level.output_tokens_per_s)
    if measure == "ttft p50":
        return level.ttft_ms["p50"]
    if measure == "goodput":
        return statistics.median(level.goodput)
    return rss or float("nan")


def _load(values) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _llama_version() -> str:
    from bench import llama_cpp

    return f"b{llama_cpp.VERSION.split('.')[0]}"
