"""The onnxruntime stand-in inside the real tritonserver takes its execution providers from the config's
`execution_providers` parameter: a provider this ONNX Runtime lacks refuses the load with its name."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from export_scripts.common import read_config, write_config
from launcher.triton import TritonServer
from tests.unit.test_engines import repository  # noqa: F401 - the fixture: a `relu` ONNX model folder


def copy_with_providers(repository, name: str, providers: str) -> None:  # noqa: F811
    shutil.copytree(repository / "relu", repository / name)
    config = read_config(repository / "relu" / "config.pbtxt")
    config.name = name
    config.parameters["execution_providers"].string_value = providers
    write_config(repository / name, config)


def test_providers_from_the_config_parameter(repository):  # noqa: F811
    copy_with_providers(repository, "relu_cpu", "CPUExecutionProvider")
    copy_with_providers(repository, "relu_missing", "NoSuchExecutionProvider")
    with TritonServer(repository, ["relu_cpu"]) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        x = np.array([[-1.0, 2.0]], np.float32)
        request = grpcclient.InferInput("x", list(x.shape), "FP32")
        request.set_data_from_numpy(x)
        result = client.infer("relu_cpu", [request]).as_numpy("y")
        np.testing.assert_array_equal(result, [[0.0, 2.0]])
        with pytest.raises(InferenceServerException, match="NoSuchExecutionProvider"):
            client.load_model("relu_missing")
