"""Config overrides of /admin/models/load: the model kind rule, the allow-list and its messages, the merge
into the served config, and triton_models.contract agreeing with what the models themselves read."""

from __future__ import annotations

import subprocess
import sys

import pytest

from frontend.errors import InvalidRequest
from frontend.services.admin import check_override, merge_config, path_like
from triton_models import contract
from triton_models.diffusion.pipeline import Settings as ImageSettings
from triton_models.llm.config import EngineConfig
from triton_models.ort_runner import spinning, thread_count


def config(backend="", platform="", **parameters) -> dict:
    result = {"name": "m", "parameters": {k: {"string_value": v} for k, v in parameters.items()}}
    return result | ({"backend": backend} if backend else {}) | ({"platform": platform} if platform else {})


@pytest.mark.parametrize(("model_config", "kind"), [
    (config(platform="ensemble", openai_task="embeddings"), contract.ENSEMBLE),
    (config(backend="onnxruntime", platform="onnxruntime_onnx"), contract.ONNX),
    (config(platform="onnxruntime_onnx"), contract.ONNX),
    (config(backend="python", openai_task="chat"), contract.CHAT),
    (config(backend="python", openai_task="completions"), contract.CHAT),
    (config(backend="python", openai_task="chat", supports_images="true"), contract.VISION_CHAT),
    (config(backend="python", openai_task="images"), contract.IMAGES),
    (config(backend="python", max_input_tokens="256"), contract.TOKENIZER),
    (config(backend="python", openai_task="embeddings"), contract.OTHER),
    (config(backend="vllm", openai_task="chat"), contract.OTHER),
    (config(platform="tensorrt_plan"), contract.OTHER),
])
def test_model_kind_from_the_config(model_config, kind):
    assert contract.model_kind(model_config) == kind


def refused(override: dict, kind: str) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        check_override(override, kind)
    assert caught.value.param in caught.value.message  # the message names the key too
    return caught.value


def strings(**values) -> dict:
    return {"parameters": {k: {"string_value": v} for k, v in values.items()}}


def test_the_allowed_fields_pass_as_given():
    override = {
        "instance_group": [{"count": 2, "kind": "KIND_GPU", "gpus": [0, 1]}, {"kind": "KIND_CPU"}],
        "dynamic_batching": {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 100,
                             "preserve_ordering": True, "priority_levels": 2, "default_priority_level": 1,
                             "default_queue_policy": {"timeout_action": "REJECT", "max_queue_size": 16,
                                                      "default_timeout_microseconds": 0,
                                                      "allow_timeout_override": False}},
        "max_batch_size": 32,
        **strings(intra_op_thread_count="2",
                  execution_providers="CUDAExecutionProvider, CPUExecutionProvider"),
    }
    assert check_override(override, contract.ONNX) == override


@pytest.mark.parametrize(("override", "param"), [
    ({"backend": "python"}, "config.backend"),
    ({"platform": "ensemble"}, "config.platform"),
    ({"default_model_filename": "x.onnx"}, "config.default_model_filename"),
    ({"name": "other"}, "config.name"),
    ({"input": []}, "config.input"),
    ({"file:1/model.py": "aW1wb3J0IG9z"}, "config.file:1/model.py"),
    ({"model_repository_agents": {}}, "config.model_repository_agents"),
    ({"instance_group": [{"count": 1, "profile": ["p"]}]}, "config.instance_group.0.profile"),
    ({"instance_group": [{"count": 1, "host_policy": "numa0"}]}, "config.instance_group.0.host_policy"),
    ({"instance_group": [{"secondary_devices": []}]}, "config.instance_group.0.secondary_devices"),
    ({"dynamic_batching": {"priority_queue_policy": {}}}, "config.dynamic_batching.priority_queue_policy"),
])
def test_anything_else_is_refused_by_its_key(override, param):
    error = refused(override, contract.ONNX)
    assert error.param == param and error.code == "override_not_allowed" and error.status == 400


@pytest.mark.parametrize(("override", "param"), [
    ({"instance_group": [{"count": 0}]}, "config.instance_group.0.count"),
    ({"instance_group": [{"count": "2"}]}, "config.instance_group.0.count"),
    ({"instance_group": [{"kind": "KIND_MODEL"}]}, "config.instance_group.0.kind"),
    ({"instance_group": [{"gpus": ["0"]}]}, "config.instance_group.0.gpus.0"),
    ({"instance_group": {"count": 2}}, "config.instance_group"),
    ({"max_batch_size": -1}, "config.max_batch_size"),
    ({"max_batch_size": True}, "config.max_batch_size"),
    ({"dynamic_batching": {"max_queue_delay_microseconds": "soon"}},
     "config.dynamic_batching.max_queue_delay_microseconds"),
    ({"dynamic_batching": {"default_queue_policy": {"timeout_action": "CRASH"}}},
     "config.dynamic_batching.default_queue_policy.timeout_action"),
    ({"parameters": {"intra_op_thread_count": "2"}}, "config.parameters.intra_op_thread_count"),
    ({"parameters": {"intra_op_thread_count": {"string_value": 2}}},
     "config.parameters.intra_op_thread_count.string_value"),
])
def test_values_of_the_wrong_shape_name_their_key(override, param):
    assert refused(override, contract.ONNX).param == param


@pytest.mark.parametrize("value", ["/etc/passwd", "../../etc/passwd", "..", "a/b", "C:\\model.onnx", "~root",
                                   "model\0.onnx"])
def test_path_like_values_are_refused_whatever_the_key(value):
    for key in ("model_file", "execution_providers"):  # undeclared and declared alike
        error = refused(strings(**{key: value}), contract.CHAT)
        assert error.param == f"config.parameters.{key}" and "path" in error.message
    assert path_like(value)


def test_only_the_declared_parameters_of_the_kind_are_accepted():
    for key in ("model_file", "embeddings_file", "chat_template", "eos_token", "openai_task", "vision_model",
                "context_length", "unet_model"):
        for kind in (contract.CHAT, contract.VISION_CHAT, contract.IMAGES):
            assert refused(strings(**{key: "model.onnx"}), kind).param == f"config.parameters.{key}"
    assert refused(strings(max_images="2"), contract.CHAT).param == "config.parameters.max_images"
    assert check_override(strings(max_images="2"), contract.VISION_CHAT)
    assert refused(strings(max_input_tokens="64"), contract.TOKENIZER).param.endswith(".max_input_tokens")
    other = refused(strings(intra_op_thread_count="1"), contract.OTHER)
    assert other.param.endswith(".intra_op_thread_count")


def test_an_ensemble_takes_parameters_only():
    assert check_override(strings(max_inputs_per_request="32"), contract.ENSEMBLE)
    for field in ("instance_group", "dynamic_batching", "max_batch_size"):
        assert refused({field: {}}, contract.ENSEMBLE).param == f"config.{field}"


@pytest.mark.parametrize(("key", "value", "why"), [
    ("max_num_seqs", "many", "integer"),
    ("max_num_seqs", "0", ">= 1"),
    ("max_num_seqs", "2.5", "integer"),
    ("prefix_cache_tokens", "-1", ">= 0"),
    ("intra_op_spinning", "yes", "true or false"),
    ("execution_providers", "CUDA;rm", "names"),
])
def test_declared_parameters_are_checked_by_type(key, value, why):
    error = refused(strings(**{key: value}), contract.CHAT)
    assert error.param == f"config.parameters.{key}" and why in error.message
    assert check_override(strings(prefix_cache_tokens="0", intra_op_spinning="False", max_num_seqs="4"),
                          contract.CHAT)


def test_the_override_is_merged_into_the_served_config():
    current = {"name": "enc", "backend": "onnxruntime", "max_batch_size": 64,
               "input": [{"name": "input_ids", "data_type": "TYPE_INT64", "dims": ["-1"]}],
               "instance_group": [{"name": "enc_0", "count": 1, "kind": "KIND_CPU"}],
               "dynamic_batching": {"preferred_batch_size": [64], "max_queue_delay_microseconds": "500"},
               "parameters": {"intra_op_thread_count": {"string_value": "0"}, "keep": {"string_value": "me"}}}
    override = {"instance_group": [{"count": 2}], "dynamic_batching": {"max_queue_delay_microseconds": 100},
                **strings(intra_op_thread_count="2")}
    merged = merge_config(current, override)
    assert merged == current | {
        "instance_group": [{"count": 2}],
        "dynamic_batching": {"preferred_batch_size": [64], "max_queue_delay_microseconds": 100},
        "parameters": {"intra_op_thread_count": {"string_value": "2"}, "keep": {"string_value": "me"}}}
    assert current["parameters"]["intra_op_thread_count"] == {"string_value": "0"}  # not changed in place


def test_every_declared_chat_parameter_is_read_by_the_engine_with_the_same_minimum():
    declared = contract.PARAMETERS[contract.CHAT]
    default = EngineConfig.from_parameters({})
    engine_keys = {k for k, p in declared.items() if p.type == "int"} - {"intra_op_thread_count"}
    for key in engine_keys:
        minimum = str(int(declared[key].minimum))
        assert EngineConfig.from_parameters({key: "7"}) != default, f"{key} is declared but not read"
        EngineConfig.from_parameters({key: minimum})
        with pytest.raises(ValueError):
            EngineConfig.from_parameters({key: str(int(minimum) - 1)})
    assert thread_count({"intra_op_thread_count": "3"}) == 3
    with pytest.raises(ValueError):
        thread_count({"intra_op_thread_count": "-1"})
    for value in ("true", "FALSE", "1", "0"):
        assert declared["intra_op_spinning"].problem(value) is None
        spinning({"intra_op_spinning": value})
    assert set(declared) <= set(contract.PARAMETERS[contract.VISION_CHAT])


def test_every_declared_image_parameter_is_read_by_the_pipeline():
    base = {"sizes": "64x64"}
    default = ImageSettings.from_parameters(base)
    for key in contract.PARAMETERS[contract.IMAGES]:
        assert ImageSettings.from_parameters(base | {key: "3"}) != default, f"{key} is declared but not read"


def test_the_contract_imports_nothing_heavy():
    heavy = ("numpy", "onnxruntime", "pydantic", "tritonclient")
    code = f"import sys, triton_models.contract; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
