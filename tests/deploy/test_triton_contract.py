"""What the images, compose.yaml and the chart assume about Triton, checked on the real tritonserver:
the container's flags with the restricted protocols (the chart's and compose's are launcher's, see
test_helm_security), the probe paths, `--model-config-name=gpu` falling back to config.pbtxt, and the
metric families the prometheus-adapter rules (and so the Triton HPA) read. Probes and scrapers need no
secret."""

from __future__ import annotations

import re

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from frontend.triton import TRITON_API_HEADER
from launcher.triton import TritonServer
from tests.deploy.conftest import CHART, container_flags

pytestmark = pytest.mark.integration
SECRET = "deploy-contract-secret"


def tiny_onnx(path) -> None:
    """y = x + 1 over a dynamic batch: enough for Triton to load, batch, count and time requests."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])], "plus_one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every ONNX Runtime Triton ships
    path.parent.mkdir(parents=True)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    """A repository of two copies of one ONNX model; `variant` also has a `gpu` config variant."""
    repo = tmp_path_factory.mktemp("repository")
    config = json_format.ParseDict({
        "backend": "onnxruntime", "max_batch_size": 8, "dynamic_batching": {},
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [4]}],
    }, mc.ModelConfig())
    for name in ("plain", "variant"):
        config.name = name
        (repo / name).mkdir()
        (repo / name / "config.pbtxt").write_text(text_format.MessageToString(config))
        tiny_onnx(repo / name / "1" / "model.onnx")
    config.parameters["modelgate_variant"].string_value = "gpu"
    (repo / "variant" / "configs").mkdir()
    (repo / "variant" / "configs" / "gpu.pbtxt").write_text(text_format.MessageToString(config))
    return repo


@pytest.fixture(scope="module")
def server(onnx_model):
    repo = onnx_model
    flags = [f for f in container_flags() if not f.startswith(("--model-repository", "--cache-config"))]
    cache = next(f for f in container_flags() if f.startswith("--cache-config=local,size="))
    with TritonServer(repo, [], cache_bytes=int(cache.rsplit("=", 1)[1]), api_secret=SECRET,
                      extra_args=[*flags, "--model-config-name=gpu"]) as triton:
        yield triton


def probe_paths() -> set[str]:
    text = (CHART / "templates" / "triton-deployment.yaml").read_text()
    return set(re.findall(r'list "(/v2/health/\w+)"', text))


def test_probe_paths_answer(server):
    assert probe_paths() == {"/v2/health/live", "/v2/health/ready"}
    for path in probe_paths():
        assert httpx.get(f"{server.http_url}{path}").status_code == 200


def test_load_model_star_loads_the_repository_and_gpu_variant_falls_back(server):
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    key = {TRITON_API_HEADER: SECRET}
    index = client.get_model_repository_index(headers=key)
    assert {m["name"] for m in index if m.get("state") == "READY"} == {"plain", "variant"}
    assert "modelgate_variant" not in client.get_model_config("plain", headers=key).get("parameters", {})
    variant = client.get_model_config("variant", headers=key)
    assert variant["parameters"]["modelgate_variant"]["string_value"] == "gpu"
    assert httpx.post(f"{server.http_url}/v2/repository/index").status_code == 403  # restricted without it


def test_hpa_metric_families_exist(server):
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    inputs = [httpclient.InferInput("x", list(x.shape), "FP32")]
    inputs[0].set_data_from_numpy(x)
    for _ in range(2):
        np.testing.assert_array_equal(client.infer("plain", inputs).as_numpy("y"), x + 1)
    metrics = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text
    families = set(re.findall(r"^(nv_\w+)\{[^}]*model=\"plain\"", metrics, re.M))
    adapter = yaml.safe_load((CHART / "prometheus-adapter-values.yaml").read_text())
    used = {m for rule in adapter["rules"]["custom"] for m in re.findall(r"nv_\w+", rule["metricsQuery"])}
    assert used and used <= families
    success = re.search(r'^nv_inference_request_success\{[^}]*model="plain"[^}]*\} (\d+)', metrics, re.M)
    assert int(success.group(1)) == 2
