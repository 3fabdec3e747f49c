"""What the images, compose.yaml and the chart assume about Triton, checked on the real tritonserver:
the container's flags, the probe paths, `--model-config-name=gpu` falling back to config.pbtxt, and the
metric families the prometheus-adapter rules (and so the Triton HPA) read."""

from __future__ import annotations

import re
import shutil

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from launcher.triton import TritonServer
from tests.deploy.conftest import CHART, container_flags

pytestmark = pytest.mark.integration

DTYPES = {mc.TYPE_INT64: np.int64, mc.TYPE_INT32: np.int32, mc.TYPE_FP32: np.float32}


def read_config(path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


@pytest.fixture(scope="module")
def onnx_model(repository, tmp_path_factory):
    """A one-model repository (copy of an exported ONNX model's config, its version folder linked), with a
    `gpu` variant for a second copy of the same model."""
    source = next(p.parent for p in sorted(repository.glob("*/config.pbtxt"))
                  if read_config(p).backend == "onnxruntime"
                  and all(t.data_type in DTYPES for t in read_config(p).input))
    repo = tmp_path_factory.mktemp("repository")
    for name in ("plain", "variant"):
        model = repo / name
        model.mkdir()
        config = read_config(source / "config.pbtxt")
        config.name = name
        (model / "config.pbtxt").write_text(text_format.MessageToString(config))
        (model / "1").symlink_to(source / "1", target_is_directory=True)
    variant = read_config(repo / "variant" / "config.pbtxt")
    variant.parameters["modelgate_variant"].string_value = "gpu"
    (repo / "variant" / "configs").mkdir()
    (repo / "variant" / "configs" / "gpu.pbtxt").write_text(text_format.MessageToString(variant))
    return repo, read_config(source / "config.pbtxt")


@pytest.fixture(scope="module")
def server(onnx_model):
    repo, _ = onnx_model
    flags = [f for f in container_flags() if not f.startswith(("--model-repository", "--cache-config"))]
    cache = next(f for f in container_flags() if f.startswith("--cache-config=local,size="))
    with TritonServer(repo, [], cache_bytes=int(cache.rsplit("=", 1)[1]),
                      extra_args=[*flags, "--model-config-name=gpu"]) as triton:
        yield triton
    shutil.rmtree(repo, ignore_errors=True)


def probe_paths() -> set[str]:
    text = (CHART / "templates" / "triton-deployment.yaml").read_text()
    return set(re.findall(r'list "(/v2/health/\w+)"', text))


def test_probe_paths_answer(server):
    assert probe_paths() == {"/v2/health/live", "/v2/health/ready"}
    for path in probe_paths():
        assert httpx.get(f"{server.http_url}{path}").status_code == 200


def test_load_model_star_loads_the_repository_and_gpu_variant_falls_back(server):
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    assert {m["name"] for m in client.get_model_repository_index() if m.get("state") == "READY"} == {
        "plain", "variant"}
    assert "modelgate_variant" not in client.get_model_config("plain").get("parameters", {})
    assert client.get_model_config("variant")["parameters"]["modelgate_variant"]["string_value"] == "gpu"


def test_hpa_metric_families_exist(server, onnx_model):
    _, config = onnx_model
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    inputs = []
    for tensor in config.input:
        shape = ([1] if config.max_batch_size else []) + [d if d > 0 else 8 for d in tensor.dims]
        array = np.ones(shape, dtype=DTYPES[tensor.data_type])
        inputs.append(httpclient.InferInput(tensor.name, shape, httpclient.np_to_triton_dtype(array.dtype)))
        inputs[-1].set_data_from_numpy(array)
    for _ in range(2):
        client.infer("plain", inputs)
    metrics = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text
    families = set(re.findall(r"^(nv_\w+)\{[^}]*model=\"plain\"", metrics, re.M))
    adapter = yaml.safe_load((CHART / "prometheus-adapter-values.yaml").read_text())
    used = {m for rule in adapter["rules"]["custom"] for m in re.findall(r"nv_\w+", rule["metricsQuery"])}
    assert used and used <= families
    success = re.search(r'^nv_inference_request_success\{[^}]*model="plain"[^}]*\} (\d+)', metrics, re.M)
    assert int(success.group(1)) == 2
