"""Triton Python model: Stable Diffusion text-to-image and image edits, calling its ONNX networks through BLS.

Inputs: prompt (STRING), seed (INT64, required: the response cache keys on the inputs), optional
negative_prompt, n, height, width, steps, guidance_scale; for an edit (when the config says supports_edits),
image (UINT8 [height, width, 3]), optional mask (UINT8 [height, width]) and strength (FP64).
Output: images UINT8 [n, height, width, 3].
Settings come from the config `parameters` the exporter writes (sizes, defaults, network model names).
Each request is answered on its own; a request whose client has gone stops between steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from triton_models import config_parameters
from triton_models.contract import INVALID_REQUEST, UNAVAILABLE, ModelError
from triton_models.diffusion import metrics
from triton_models.diffusion.pipeline import (
    EDIT_NETWORK,
    NETWORKS,
    OUTPUT,
    Cancelled,
    Settings,
    StableDiffusion,
    bind_networks,
    to_output,
)
from triton_models.errors import error_response, internal_error
from triton_models.metrics import TritonMetrics, instance_labels

STRING_INPUTS = {"prompt", "negative_prompt"}
ARRAY_INPUTS = {"image", "mask"}


class NetworkError(RuntimeError):
    """A BLS call to one of the networks failed."""


def _bls(model_name: str, inputs: dict[str, np.ndarray], output: str) -> np.ndarray:
    request = pb_utils.InferenceRequest(
        model_name=model_name,
        inputs=[pb_utils.Tensor(name, value) for name, value in inputs.items()],
        requested_output_names=[output],
        # The networks may run on a GPU in NVIDIA's container; the numpy loop wants host memory.
        preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0),
    )
    response = request.exec()
    if response.has_error():
        raise NetworkError(f"{model_name}: {response.error().message()}")
    tensor = pb_utils.get_output_tensor_by_name(response, output)
    if tensor is None:
        raise NetworkError(f"{model_name}: response has no {output!r} output")
    return np.array(tensor.as_numpy(), copy=True)  # outlive the response's shared memory


def _input_value(request, name: str):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    if name in ARRAY_INPUTS:  # their shapes are checked against the request's size by Settings.check
        return np.array(tensor.as_numpy(), copy=True)
    values = tensor.as_numpy().reshape(-1)
    if values.size != 1:
        raise ModelError(INVALID_REQUEST, f"{name} must hold exactly one value, got {values.size}", name)
    value = values[0]
    if name not in STRING_INPUTS:
        return value.item()
    try:
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError as exc:
        raise ModelError(INVALID_REQUEST, f"{name} is not valid UTF-8 (byte {exc.start})", name) from exc


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = json.loads(args["model_config"])
        params = config_parameters(self.model_config)
        self.name = self.model_config["name"]
        self.settings = Settings.from_parameters(params)
        # The VAE encoder only where the config says this model edits (an older export has none).
        parts = [part for part in NETWORKS if part != EDIT_NETWORK or self.settings.edits]
        models = {part: params[f"{part}_model"] for part in parts}
        networks = bind_networks(lambda part, inputs, output: _bls(models[part], inputs, output), parts)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.pipeline = StableDiffusion.from_directory(
            version_dir, networks,
            vae_scale_factor=int(params["vae_scale_factor"]), latent_channels=int(params["latent_channels"]),
        )
        self.logger = pb_utils.Logger
        self.metrics = TritonMetrics(pb_utils, metrics.SPECS, instance_labels(args))  # deleted in finalize
        self.logger.log_info(
            f"{self.name}: {params.get('scheduler')} over {', '.join(models.values())}; "
            f"sizes {params['sizes']}"
        )

    def execute(self, requests):
        return [self._answer(request) for request in requests]

    def _answer(self, request):
        """The request's response; every failure is a ModelError response (this model's one place for them)."""
        try:
            try:
                image_request = self.settings.request(lambda name: _input_value(request, name))
            except (ValueError, TypeError) as exc:  # a value of the wrong kind (NaN for an integer, ...)
                raise exc if isinstance(exc, ModelError) else ModelError(INVALID_REQUEST, str(exc)) from exc
            steps = []
            try:
                images = self.pipeline.generate(image_request, cancelled=request.is_cancelled,
                                                on_step=steps.append)
            finally:  # the steps a cancelled or failed request ran count too
                self.metrics.observe(metrics.STEP_TIME.name, steps)
        except ModelError as exc:
            return error_response(exc)
        except Cancelled as exc:  # nobody is waiting for the answer: Triton's own status says so
            self.logger.log_info(f"{self.name}: request {request.request_id() or '-'} {exc}")
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"request cancelled: {exc}",
                                                                         pb_utils.TritonError.CANCELLED))
        except NetworkError as exc:  # a network model unloaded or failing: say so, not its words
            self.logger.log_error(f"{self.name}: {exc}")
            return error_response(ModelError(UNAVAILABLE, "a part of this model is unavailable; retry later"))
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the model down
            self.logger.log_error(f"{self.name}: generation failed: {exc!r}")
            return error_response(internal_error())
        output = to_output(images, image_request)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(OUTPUT, output)])

    def finalize(self):
        self.metrics.close()
        self.logger.log_info(f"{self.name}: finalize")
