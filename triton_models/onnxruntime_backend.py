"""Python-based stand-in for Triton's native `onnxruntime` backend (CPU, dynamic batching).

A model folder says `backend: "onnxruntime"` and holds `1/model.onnx`. In NVIDIA's container the native
backend serves it; on machines whose Triton build lacks that backend, this module does.
"""

from __future__ import annotations

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from triton_models import config_parameters, version_file
from triton_models.ort_runner import OrtRunner, create_session, execution_providers, thread_count


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or "model.onnx"
        version_dir = Path(args["model_repository"]) / args["model_version"]
        path = version_file(version_dir, filename, "default_model_filename")
        params = config_parameters(config)
        threads = thread_count(params)
        self.inputs = [i["name"] for i in config["input"]]
        outputs = [o["name"] for o in config["output"]]
        session = create_session(path, threads, execution_providers(params))
        self.runner = OrtRunner(session, outputs, batching=config.get("max_batch_size", 0) > 0)
        pb_utils.Logger.log_info(f"onnxruntime stand-in: loaded {path.name}, {threads or 'default'} threads, "
                                f"{session.get_providers()[0]}")

    def execute(self, requests):
        feeds = []
        for request in requests:
            tensors = {}
            for name in self.inputs:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is not None:
                    tensors[name] = tensor.as_numpy()
            feeds.append(tensors)
        responses = []
        for result in self.runner.run_many(feeds):
            if isinstance(result, Exception):
                error = pb_utils.TritonError(str(result), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                tensors = [pb_utils.Tensor(k, v) for k, v in result.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
