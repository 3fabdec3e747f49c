"""Every config.pbtxt in the repository agrees with the ONNX graphs, the ensembles and the code using it."""

from __future__ import annotations

import onnx
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from export_scripts.common import read_config
from frontend.services import embeddings as embedding_service
from launcher.repository import model_names
from triton_models import tokenizer

TRITON_TO_ONNX = {mc.TYPE_FP32: onnx.TensorProto.FLOAT, mc.TYPE_INT64: onnx.TensorProto.INT64,
                  mc.TYPE_INT32: onnx.TensorProto.INT32, mc.TYPE_FP16: onnx.TensorProto.FLOAT16,
                  mc.TYPE_UINT8: onnx.TensorProto.UINT8, mc.TYPE_BOOL: onnx.TensorProto.BOOL}


def configs(repository):
    return {name: read_config(repository / name / "config.pbtxt") for name in model_names(repository)}


def test_repository_has_models(repository):
    assert configs(repository)


def test_onnx_models_match_their_config(repository):
    for name, config in configs(repository).items():
        if config.backend != "onnxruntime":
            continue
        graph = onnx.load(repository / name / "1" / (config.default_model_filename or "model.onnx"),
                          load_external_data=False).graph
        onnx_inputs = {i.name: i for i in graph.input}
        onnx_outputs = {o.name: o for o in graph.output}
        for tensor, declared in [(t, onnx_inputs) for t in config.input] + [(t, onnx_outputs) for t in config.output]:
            assert tensor.name in declared, f"{name}: {tensor.name} not in the ONNX graph"
            onnx_type = declared[tensor.name].type.tensor_type
            assert onnx_type.elem_type == TRITON_TO_ONNX[tensor.data_type], f"{name}.{tensor.name} dtype"
            rank = len(onnx_type.shape.dim)
            assert rank == len(tensor.dims) + (1 if config.max_batch_size > 0 else 0), f"{name}.{tensor.name} rank"


def test_ensemble_steps_name_real_tensors(repository):
    all_configs = configs(repository)
    for name, config in all_configs.items():
        if config.platform != "ensemble":
            continue
        produced = {t.name for t in config.input}
        for step in config.ensemble_scheduling.step:
            assert step.model_name in all_configs, f"{name}: step model {step.model_name} missing"
            step_config = all_configs[step.model_name]
            assert set(step.input_map) <= {t.name for t in step_config.input}
            assert set(step.output_map) <= {t.name for t in step_config.output}
            assert set(step.input_map.values()) <= produced, f"{name}: {step.model_name} reads unproduced tensors"
            produced |= set(step.output_map.values())
        assert {t.name for t in config.output} <= produced


def test_served_models_declare_a_known_task(repository):
    known = {"embeddings", "chat", "completions", "images", "rerank"}
    for name, config in configs(repository).items():
        if "openai_task" in config.parameters:
            assert config.parameters["openai_task"].string_value in known, name


def embedding_models(repository):
    return [(n, c) for n, c in configs(repository).items()
            if c.parameters.get("openai_task") and c.parameters["openai_task"].string_value == "embeddings"]


def test_embedding_models_speak_what_the_frontend_sends(repository):
    models = embedding_models(repository)
    assert models, "no embedding model exported"
    all_configs = configs(repository)
    for name, config in models:
        assert embedding_service.TEXT_INPUT in {t.name for t in config.input}
        assert {embedding_service.EMBEDDING, embedding_service.NUM_TOKENS} <= {t.name for t in config.output}
        for key in ("embedding_dim", "max_input_tokens", "max_inputs_per_request", "token_input_model"):
            assert config.parameters[key].string_value, f"{name}: parameter {key}"
        encoder = all_configs[config.parameters["token_input_model"].string_value]
        assert set(embedding_service.TOKEN_INPUTS) == {t.name for t in encoder.input}
        assert embedding_service.EMBEDDING in {t.name for t in encoder.output}
        assert encoder.max_batch_size >= int(config.parameters["max_inputs_per_request"].string_value)


@pytest.mark.parametrize("attr", ["input", "output"])
def test_tokenizer_models_match_the_code(repository, attr):
    for name, config in configs(repository).items():
        if config.backend == "python" and name.endswith("_tokenizer"):
            names = [t.name for t in getattr(config, attr)]
            pairs = tokenizer.PAIR_INPUT in [t.name for t in config.input]  # a cross-encoder's (rerank)
            inputs, outputs = (tokenizer.PAIR_INPUTS, tokenizer.PAIR_OUTPUTS) if pairs else \
                (tokenizer.INPUTS, tokenizer.OUTPUTS)
            assert names == list(inputs if attr == "input" else outputs)
            assert (repository / name / "1" / "model.py").read_text().count("triton_models.tokenizer") == 1
