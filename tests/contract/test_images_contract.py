"""Every images model in the repository speaks what the frontend sends and what its BLS code calls."""

from __future__ import annotations

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from export_scripts.common import read_config
from frontend.services import images as image_service
from launcher.repository import model_names
from triton_models.contract import SUPPORTS_EDITS
from triton_models.diffusion.pipeline import EDIT_NETWORK, NETWORKS, OUTPUT

NUMPY_TO_TRITON = {np.int64: mc.TYPE_INT64, np.int32: mc.TYPE_INT32, np.float32: mc.TYPE_FP32,
                   np.float64: mc.TYPE_FP64, np.uint8: mc.TYPE_UINT8}
FRONTEND_PARAMETERS = ("sizes", "default_size", "default_steps", "default_guidance_scale", "max_n", "max_steps")


def image_models(repository):
    configs = {name: read_config(repository / name / "config.pbtxt") for name in model_names(repository)}
    served = {n: c for n, c in configs.items()
              if "openai_task" in c.parameters and c.parameters["openai_task"].string_value == "images"}
    assert served, "no images model exported"
    return served, configs


def test_pipeline_inputs_are_what_the_frontend_sends(repository):
    served, _ = image_models(repository)
    for name, config in served.items():
        inputs = {t.name: t for t in config.input}
        for field in image_service.STRING_INPUTS:
            assert inputs[field].data_type == mc.TYPE_STRING, f"{name}.{field}"
        for field, dtype in {**image_service.INPUT_TYPES, **image_service.EDIT_INPUT_TYPES}.items():
            assert inputs[field].data_type == NUMPY_TO_TRITON[dtype], f"{name}.{field}"
        for field in image_service.EDIT_INPUT_TYPES:
            assert inputs[field].optional, f"{name}.{field}: a generation does not send it"
        assert set(inputs) == {*image_service.STRING_INPUTS, *image_service.INPUT_TYPES,
                               *image_service.EDIT_INPUT_TYPES}
        assert [t.name for t in config.output] == [image_service.OUTPUT] == [OUTPUT]
        assert config.output[0].data_type == mc.TYPE_UINT8
        for key in FRONTEND_PARAMETERS:
            assert config.parameters[key].string_value, f"{name}: parameter {key}"
        assert config.parameters["default_size"].string_value in config.parameters["sizes"].string_value.split(",")


def test_pipeline_calls_networks_by_their_config_names(repository):
    served, configs = image_models(repository)
    for name, config in served.items():
        assert (repository / name / "1" / "model.py").read_text().count("triton_models.diffusion.model") == 1
        edits = config.parameters[SUPPORTS_EDITS].string_value == "true" if SUPPORTS_EDITS in config.parameters \
            else False
        for part, (inputs, output) in NETWORKS.items():
            if part == EDIT_NETWORK and not edits:
                assert f"{part}_model" not in config.parameters, f"{name}: an encoder but no edits"
                continue
            network = configs[config.parameters[f"{part}_model"].string_value]
            assert [t.name for t in network.input] == list(inputs), f"{name}: {part} inputs"
            assert [t.name for t in network.output] == [output], f"{name}: {part} output"
            # classifier-free guidance sends 2n latents in one BLS request
            assert network.max_batch_size >= 2 * int(config.parameters["max_n"].string_value), part
