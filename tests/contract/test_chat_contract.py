"""Every chat model's config declares the tensors and parameters the chat/completions frontend relies on."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from export_scripts.common import config_from_dict, read_config
from frontend.chat_template import compile_template
from frontend.services.generation import OUTPUTS, TASKS_COMPLETIONS, triton_inputs
from launcher.repository import model_names
from tests.integration import llm_tiny

NUMPY_TO_TRITON = {np.dtype(np.object_): mc.TYPE_STRING, np.dtype(np.bool_): mc.TYPE_BOOL}


def chat_configs(repository) -> dict[str, mc.ModelConfig]:
    configs = {name: read_config(repository / name / "config.pbtxt") for name in model_names(repository)}
    return {name: c for name, c in configs.items()
            if c.parameters["openai_task"].string_value in TASKS_COMPLETIONS}


def check(config: mc.ModelConfig) -> None:
    inputs = {t.name: t for t in config.input}
    sent = triton_inputs("hi", {}, stream=True, logprobs=True)
    for name, array in sent.items():
        assert name in inputs, f"{config.name}: the frontend sends {name}, the model does not declare it"
        assert inputs[name].data_type == NUMPY_TO_TRITON[array.dtype], f"{config.name}.{name} dtype"
        assert list(inputs[name].dims) == list(array.shape), f"{config.name}.{name} dims"
    required = {t.name for t in config.input if not t.optional}
    assert required <= set(sent), f"{config.name}: required inputs {required - set(sent)} never sent"
    assert set(OUTPUTS) <= {t.name for t in config.output}, config.name
    assert config.model_transaction_policy.decoupled, f"{config.name}: the frontend streams every request"
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert int(params["context_length"]) > 0
    if params["openai_task"] == "chat":
        compile_template(params["chat_template"])  # compiles in the frontend's sandbox
        assert params["eos_token"], f"{config.name}: eos_token"


def test_exported_chat_models(repository):
    configs = chat_configs(repository)
    assert configs, "no chat model exported"
    for config in configs.values():
        check(config)


def test_tiny_test_model():
    check(config_from_dict(llm_tiny.triton_config("tiny", {"openai_task": "chat", "context_length": 256,
                                                           "chat_template": "{{ messages }}", "eos_token": "e"})))


def test_the_check_can_fail():
    config = config_from_dict(llm_tiny.triton_config("tiny", {"openai_task": "chat", "context_length": 1,
                                                              "chat_template": "x", "eos_token": "e"}))
    del config.input[[t.name for t in config.input].index("return_logprobs")]
    with pytest.raises(AssertionError, match="return_logprobs"):
        check(config)
