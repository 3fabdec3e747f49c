"""The exported chat-LLM folder matches the contract that triton_models/llm and the frontend rely on."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import onnx
import pytest
from tokenizers import Tokenizer
from tritonclient.grpc import model_config_pb2 as mc

from export_scripts import llm, llm_check
from export_scripts.__main__ import main as export_main
from export_scripts.common import STAMP, read_config
from tests.conftest import REPOSITORY
from triton_models.llm.decoder import KV_LAYOUT, KV_LAYOUT_KEY

INPUTS = {
    "text_input": ("TYPE_STRING", False),
    "stream": ("TYPE_BOOL", True),
    "sampling_parameters": ("TYPE_STRING", True),
    "exclude_input_in_output": ("TYPE_BOOL", True),
    "return_finish_reason": ("TYPE_BOOL", True),
    "return_num_input_tokens": ("TYPE_BOOL", True),
    "return_num_output_tokens": ("TYPE_BOOL", True),
    "return_logprobs": ("TYPE_BOOL", True),
}
OUTPUTS = {
    "text_output": ("TYPE_STRING", [-1]),
    "finish_reason": ("TYPE_STRING", [-1]),
    "num_input_tokens": ("TYPE_UINT32", [1]),
    "num_output_tokens": ("TYPE_UINT32", [1]),
    "logprobs": ("TYPE_STRING", [-1]),
}
PARAMETERS = {
    "openai_task",
    "model_file",
    "context_length",
    "max_num_seqs",
    "max_kv_tokens",
    "max_queue",
    "intra_op_thread_count",
    "chat_template",
    "tool_call_parser",
    "bos_token",
    "eos_token",
}
FILES = [
    "model.py",
    llm.FP32_FILE,
    llm.QUANT_FILE,
    "tokenizer.json",
    "tokenizer_config.json",
    "config.json",
    "generation_config.json",
]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    """The default chat model, exported into model_repository/ (a no-op when its stamp is current)."""
    assert export_main(["llm", f"--repository={REPOSITORY}"]) == 0, "llm export failed"
    return REPOSITORY / llm.MODEL_NAME


@pytest.fixture(scope="module")
def config(model_dir) -> mc.ModelConfig:
    return read_config(model_dir / "config.pbtxt")


@pytest.fixture(scope="module")
def hf_config(model_dir) -> dict:
    return json.loads((model_dir / "1" / "config.json").read_text())


def params(config) -> dict[str, str]:
    return {k: v.string_value for k, v in config.parameters.items()}


def test_config_is_a_decoupled_python_model_on_cpu(config):
    assert (config.name, config.backend, config.max_batch_size) == (llm.MODEL_NAME, "python", 0)
    assert config.model_transaction_policy.decoupled
    assert [(g.kind, g.count) for g in config.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 1)]


def test_config_speaks_the_vllm_backend_tensors(config):
    assert {i.name: (mc.DataType.Name(i.data_type), i.optional) for i in config.input} == INPUTS
    assert all(list(i.dims) == [1] for i in config.input)
    assert {o.name: (mc.DataType.Name(o.data_type), list(o.dims)) for o in config.output} == OUTPUTS


def test_config_parameters(config, model_dir, hf_config):
    values = params(config)
    assert set(values) == PARAMETERS
    assert values["openai_task"] == "chat"
    assert values["model_file"] == llm.QUANT_FILE and (model_dir / "1" / values["model_file"]).is_file()
    assert int(values["context_length"]) == hf_config["max_position_embeddings"]
    for key in ("max_num_seqs", "max_kv_tokens", "max_queue", "intra_op_thread_count"):
        assert int(values[key]) > 0
    assert "<|im_start|>" in values["chat_template"] and "add_generation_prompt" in values["chat_template"]
    assert values["tool_call_parser"] == "hermes"  # SmolLM2's template renders no tools: the generic format


def test_special_tokens_match_tokenizer_and_generation_config(config, model_dir):
    values = params(config)
    tokenizer = Tokenizer.from_file(str(model_dir / "1" / "tokenizer.json"))
    generation = json.loads((model_dir / "1" / "generation_config.json").read_text())
    assert tokenizer.token_to_id(values["eos_token"]) == generation["eos_token_id"]
    assert tokenizer.token_to_id(values["bos_token"]) == generation["bos_token_id"]


def test_version_folder_has_every_file_and_the_shim(model_dir):
    for name in FILES:
        assert (model_dir / "1" / name).is_file(), name
    shim = (model_dir / "1" / "model.py").read_text()
    assert f"from {llm.SHIM_MODULE} import TritonPythonModel" in shim
    assert importlib.util.find_spec(llm.SHIM_MODULE) is not None


def value_infos(values) -> dict[str, tuple[int, list]]:
    dims = lambda t: [d.dim_param or d.dim_value for d in t.type.tensor_type.shape.dim]  # noqa: E731
    return {v.name: (v.type.tensor_type.elem_type, dims(v)) for v in values}


@pytest.mark.parametrize("file_name", [llm.FP32_FILE, llm.QUANT_FILE])
def test_onnx_decoder_signature(model_dir, hf_config, file_name):
    graph = onnx.load(str(model_dir / "1" / file_name), load_external_data=False).graph
    layers, kv_heads = hf_config["num_hidden_layers"], hf_config["num_key_value_heads"]
    head_dim = hf_config.get("head_dim") or hf_config["hidden_size"] // hf_config["num_attention_heads"]
    inputs, outputs = value_infos(graph.input), value_infos(graph.output)
    kv = [f"{i}.{k}" for i in range(layers) for k in ("key", "value")]
    assert list(inputs) == ["input_ids", "attention_mask", "position_ids", "logits_index"] + [
        f"past_key_values.{n}" for n in kv
    ]
    assert list(outputs) == ["logits"] + [f"present.{n}" for n in kv]
    int64, fp32 = onnx.TensorProto.INT64, onnx.TensorProto.FLOAT
    assert inputs["input_ids"] == (int64, ["batch", "sequence"])
    assert inputs["attention_mask"] == (int64, ["batch", "total_sequence"])
    assert inputs["position_ids"] == (int64, ["batch", "sequence"])
    assert inputs["logits_index"] == (int64, ["batch", "logits_positions"])
    assert outputs["logits"] == (fp32, ["batch", "logits_positions", hf_config["vocab_size"]])
    model = onnx.load(str(model_dir / "1" / file_name), load_external_data=False)
    assert {p.key: p.value for p in model.metadata_props}[KV_LAYOUT_KEY] == KV_LAYOUT
    for n in kv:
        assert inputs[f"past_key_values.{n}"] == (fp32, ["batch", kv_heads, "past_sequence", head_dim])
        assert outputs[f"present.{n}"] == (fp32, ["batch", kv_heads, "total_sequence", head_dim])


def test_quantised_graph_has_no_fp32_weight_matmul_left(model_dir):
    graph = onnx.load(str(model_dir / "1" / llm.QUANT_FILE), load_external_data=False).graph
    weights = {
        i.name for i in graph.initializer if len(i.dims) == 2 and i.data_type == onnx.TensorProto.FLOAT
    }
    ops = [n.op_type for n in graph.node]
    assert ops.count("MatMulNBits") > 0 and "GatherBlockQuantized" in ops
    assert not [
        n.name
        for n in graph.node
        if n.op_type in ("MatMul", "Gather")
        and weights & set(n.input)
        and not n.name.endswith(".CorrectionMatMul")
    ]


def test_stamp_records_the_checks_that_passed(model_dir):
    info = json.loads((model_dir / STAMP).read_text())
    assert info["parity_cases"] >= 2
    assert info["top1_agreement"] >= llm_check.MIN_TOP1 and info["mean_kl"] <= llm_check.MAX_KL
