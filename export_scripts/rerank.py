"""Cross-encoder (sequence classification, one label) -> tokenizer model + ONNX scorer + ensemble in the repository.

Three models per reranker NAME, as the embeddings export writes them:
  NAME_tokenizer  Python model (triton_models.tokenizer with `text_pair`): (text_input, text_pair) per row ->
                  input_ids, attention_mask, token_type_ids, num_input_tokens; each pair cut longest-first to the
                  context, as transformers' `truncation=True` and sentence-transformers' CrossEncoder do
  NAME_encoder    ONNX network (`backend: "onnxruntime"`, dynamic batching, response cache): token ids ->
                  `score` = sigmoid(the one logit), the relevance vLLM, TEI and CrossEncoder report for 1-label models
  NAME            ensemble; the served model (`openai_task: rerank`) behind /v1/rerank and /v1/score
Without --model: `tiny-reranker-random`, a 2-layer BertForSequenceClassification built from a config with random
weights (fixed seed) and all-MiniLM-L6-v2's tokenizer: it exercises the path; its scores mean nothing.
The export fails unless the tokenizer model's ids equal transformers' and the ONNX scores equal transformers'
sigmoid(logits) within MAX_SCORE_ERROR on fixed pairs (one of them longer than the context).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import inspect
import logging
import shutil
from pathlib import Path

import numpy as np

from export_scripts import embeddings
from export_scripts.common import (
    EXPORT_SCRIPTS, PROJECT_ROOT, ExportError, export_digest, is_current, parameters, write_config,
    write_python_shim, write_stamp,
)
from triton_models.contract import RERANK_TASK

log = logging.getLogger(__name__)

TINY_NAME = "tiny-reranker-random"
SEED = 0
# Small enough to export in seconds; initializer_range 0.2 spreads the random logits, so the pairs' scores
# differ by far more than the parity tolerance and an ordering test means something.
TINY_CONFIG = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
               "max_position_embeddings": 512, "num_labels": 1, "initializer_range": 0.2}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
OUTPUT = "score"
TYPE_IDS = "token_type_ids"
MAX_SCORE_ERROR = 1e-5
PARITY_PAIRS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("What is the capital of France?", "The giant panda is a bear species endemic to China."),
    ("hello", "world"),
    ("¿Dónde está la biblioteca?", "图书馆在哪里？"),
    ("a long query " * 200, "a long document " * 300),  # over the context: both sides cut, longest first
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="a cross-encoder (HF sequence-classification model with one label) id or "
                        f"folder, e.g. cross-encoder/ms-marco-MiniLM-L6-v2 (default: {TINY_NAME}, random weights)")
    parser.add_argument("--name", help=f"served model name (default: {TINY_NAME} or derived from --model)")
    parser.add_argument("--max-batch", type=int, default=64, help="encoder max_batch_size (pairs per call)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all cores)")
    parser.add_argument("--opset", type=int, default=17)


def run(args: argparse.Namespace) -> list[str]:
    name = args.name or (embeddings.served_name(args.model) if args.model else TINY_NAME)
    repo = Path(args.repository)
    dirs = {"ensemble": repo / name, "tokenizer": repo / f"{name}_tokenizer", "encoder": repo / f"{name}_encoder"}
    options = {"model": args.model, "name": name, "max_batch": args.max_batch, "threads": args.threads,
               "opset": args.opset}
    code = [EXPORT_SCRIPTS / "rerank.py", EXPORT_SCRIPTS / "embeddings.py", EXPORT_SCRIPTS / "common.py",
            PROJECT_ROOT / "triton_models" / "tokenizer.py"]
    if args.model is None:  # the random weights depend on the seed, the config and the libraries that draw them
        sources = [embeddings.default_model_path() / f for f in TOKENIZER_FILES]
        options.update(seed=SEED, tiny=TINY_CONFIG, torch=importlib.metadata.version("torch"),
                       transformers=importlib.metadata.version("transformers"))
    else:
        sources = [Path(args.model)] if Path(args.model).exists() else []
    digest = export_digest(code + [s for s in sources if s.exists()], options)
    if not args.force and is_current(dirs.values(), digest):
        log.info("%s is up to date", name)
        return [name]
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)
    tokenizer, model = load(args.model)
    info = export(tokenizer, model, args.model or TINY_NAME, name, dirs, args)
    write_stamp(dirs.values(), digest, info)
    return [name]


def tiny_model():
    """Tokenizer and model of tiny-reranker-random (same seed, same weights, every run)."""
    import torch  # noqa: PLC0415 - export-only
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification  # noqa: PLC0415

    tokenizer = AutoTokenizer.from_pretrained(str(embeddings.default_model_path()))
    config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **TINY_CONFIG)
    config._attn_implementation = "eager"
    torch.manual_seed(SEED)
    return tokenizer, BertForSequenceClassification(config).eval()


def load(model: str | None):
    """(tokenizer, model) of a cross-encoder id or folder, or the tiny random one."""
    if model is None:
        return tiny_model()
    from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: PLC0415

    return (AutoTokenizer.from_pretrained(model),
            AutoModelForSequenceClassification.from_pretrained(model, attn_implementation="eager").eval())


def context_length(tokenizer, model) -> int:
    """Tokens per pair: the tokenizer's limit (huge when unset) within the model's position table."""
    limit = int(getattr(model.config, "max_position_embeddings", 0) or 512)
    return min(int(tokenizer.model_max_length or limit), limit)


def token_inputs(model) -> tuple[str, ...]:
    """The graph's inputs: token types only for models that have more than one (BERT; not XLM-RoBERTa)."""
    takes_types = TYPE_IDS in inspect.signature(model.forward).parameters
    return (*embeddings.TOKEN_INPUTS, *((TYPE_IDS,) if takes_types and model.config.type_vocab_size > 1 else ()))


def scorer_module(model, inputs: tuple[str, ...]):
    """The classifier with sigmoid on its one logit, taking `inputs` positionally (the ONNX graph's inputs)."""
    import torch  # noqa: PLC0415

    class Scorer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            return torch.sigmoid(self.model(**dict(zip(inputs, tensors))).logits)

    return Scorer().eval()


def check_parity(tokenizer, model, tokenizer_dir: Path, onnx_path: Path, max_length: int,
                 inputs: tuple[str, ...]) -> float:
    """Largest |ONNX score - transformers' sigmoid(logit)| on PARITY_PAIRS, after checking that the tokenizer
    model gives transformers' ids (ExportError otherwise)."""
    import torch  # noqa: PLC0415

    from triton_models.ort_runner import create_session  # noqa: PLC0415
    from triton_models.tokenizer import TextTokenizer  # noqa: PLC0415

    firsts, seconds = [list(texts) for texts in zip(*PARITY_PAIRS)]
    expected = tokenizer(firsts, seconds, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    encoded = TextTokenizer(tokenizer_dir, max_length).encode_pairs(firsts, seconds)
    ours = {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask,
            TYPE_IDS: encoded.token_type_ids}
    for key in inputs:
        if not np.array_equal(ours[key], expected[key].numpy()):
            raise ExportError(f"the tokenizer model's {key} differ from transformers' on the parity pairs")
    with torch.no_grad():
        reference = torch.sigmoid(model(**expected).logits).numpy()
    (actual,) = create_session(onnx_path).run([OUTPUT], {key: ours[key] for key in inputs})
    return float(np.abs(actual - reference).max())


def export(tokenizer, model, source: str, name: str, dirs: dict[str, Path], args: argparse.Namespace) -> dict:
    if model.config.num_labels != 1:
        raise ExportError(f"{source} has {model.config.num_labels} labels; a cross-encoder with one relevance logit "
                          "is needed")
    max_length = context_length(tokenizer, model)
    inputs = token_inputs(model)
    tokenizer_version, encoder_version = dirs["tokenizer"] / "1", dirs["encoder"] / "1"
    for version_dir in (tokenizer_version, encoder_version, dirs["ensemble"] / "1"):  # ensembles need one too
        version_dir.mkdir(parents=True)
    embeddings.write_tokenizer(tokenizer, tokenizer_version, source)
    log.info("exporting %s to ONNX", source)
    embeddings.export_onnx(scorer_module(model, inputs), encoder_version / "model.onnx", args.opset, inputs, OUTPUT)
    error = check_parity(tokenizer, model, tokenizer_version, encoder_version / "model.onnx", max_length, inputs)
    if not error <= MAX_SCORE_ERROR:  # NaN fails too
        raise ExportError(f"ONNX scores differ from transformers' sigmoid(logits) by {error:.2e} "
                          f"> {MAX_SCORE_ERROR}")
    log.info("parity with transformers: largest score difference %.2e", error)
    write_python_shim(tokenizer_version, "triton_models.tokenizer")
    write_config(dirs["tokenizer"], embeddings.tokenizer_config(dirs["tokenizer"].name, max_length, pairs=True))
    write_config(dirs["encoder"], embeddings.encoder_config(dirs["encoder"].name, 1, args.max_batch, args.threads,
                                                            inputs, OUTPUT))
    write_config(dirs["ensemble"], ensemble_config(name, dirs, inputs, max_length, args.max_batch))
    return {"source": source, "max_input_tokens": max_length, "inputs": list(inputs), "parity_max_error": error}


def ensemble_config(name: str, dirs: dict[str, Path], inputs: tuple[str, ...], max_length: int,
                    max_batch: int) -> dict:
    texts = ("text_input", "text_pair")
    return {
        "name": name, "platform": "ensemble", "max_batch_size": 0,
        "input": [{"name": t, "data_type": "TYPE_STRING", "dims": [-1]} for t in texts],
        "output": [
            {"name": OUTPUT, "data_type": "TYPE_FP32", "dims": [-1, 1]},
            {"name": "num_input_tokens", "data_type": "TYPE_INT32", "dims": [-1]},
        ],
        "ensemble_scheduling": {"step": [
            {"model_name": dirs["tokenizer"].name, "model_version": -1, "input_map": {t: t for t in texts},
             "output_map": {**{i: f"_{i}" for i in inputs}, "num_input_tokens": "num_input_tokens"}},
            {"model_name": dirs["encoder"].name, "model_version": -1, "input_map": {i: f"_{i}" for i in inputs},
             "output_map": {OUTPUT: OUTPUT}},
        ]},
        # What the frontend needs (frontend/services/rerank.py); max_inputs_per_request: pairs per call.
        "parameters": parameters(openai_task=RERANK_TASK, max_input_tokens=max_length,
                                 max_inputs_per_request=max_batch),
    }
