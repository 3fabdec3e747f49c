"""Python-based stand-in for Triton's native `onnxruntime` backend (CPU, dynamic batching).

A model folder says `backend: "onnxruntime"` and holds `1/model.onnx`. In NVIDIA's container the native
backend serves it; on machines whose Triton build lacks that backend, this module does.
"""

from __future__ import annotations

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from triton_models import config_parameters, version_file
from triton_models.contract import ModelError
from triton_models.errors import error_response, internal_error
from triton_models.ort_runner import OrtRunner, create_session, execution_providers, thread_count, token_id_inputs


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or "model.onnx"
        version_dir = Path(args["model_repository"]) / args["model_version"]
        path = version_file(version_dir, filename, "default_model_filename")
        params = config_parameters(config)
        threads = thread_count(params)
        self.name = config["name"]
        self.inputs = [i["name"] for i in config["input"]]
        outputs = [o["name"] for o in config["output"]]
        session = create_session(path, threads, execution_providers(params))
        vocab = token_id_inputs(path)  # token ids are checked against the vocabulary before any run
        self.runner = OrtRunner(session, outputs, batching=config.get("max_batch_size", 0) > 0, vocab_sizes=vocab)
        pb_utils.Logger.log_info(f"onnxruntime stand-in: loaded {path.name}, {threads or 'default'} threads, "
                                 f"{session.get_providers()[0]}, token ids checked on {vocab or 'no inputs'}")

    def execute(self, requests):
        feeds = []
        for request in requests:
            tensors = {}
            for name in self.inputs:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is not None:
                    tensors[name] = tensor.as_numpy()
            feeds.append(tensors)
        return [self._response(result) for result in self.runner.run_many(feeds)]

    def _response(self, result):
        """The one place this backend's failures become responses: a ModelError as it is, anything else (ONNX
        Runtime's own words, node names) logged and reported without its details."""
        if isinstance(result, ModelError):
            return error_response(result)
        if isinstance(result, Exception):
            pb_utils.Logger.log_error(f"{self.name}: run failed: {result!r}")
            return error_response(internal_error())
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in result.items()])
