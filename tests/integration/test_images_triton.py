"""The tiny Stable Diffusion BLS pipeline in a real tritonserver, over gRPC (tritonclient)."""

from __future__ import annotations

import logging
import queue
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from export_scripts.__main__ import main as export_main
from export_scripts.common import read_config
from export_scripts.diffusion import TINY, ort_pipeline, served_models
from launcher.triton import TritonServer
from tests.conftest import REPOSITORY
from triton_models.contract import INVALID_REQUEST, ModelError
from triton_models.diffusion.pipeline import ImageRequest, to_uint8

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sd_repository() -> Path:
    """model_repository/ with the diffusion models exported (a no-op when they are up to date)."""
    assert export_main(["diffusion", f"--repository={REPOSITORY}"]) == 0
    return REPOSITORY


@pytest.fixture(scope="module")
def triton(sd_repository):
    """Triton with only the diffusion models: other models' state cannot break these tests."""
    with TritonServer(sd_repository, served_models(TINY)) as server:
        yield server


@pytest.fixture(scope="module")
def client(triton):
    with grpcclient.InferenceServerClient(triton.grpc_url) as c:
        yield c


def inputs(prompt: str, seed: int | None, **options) -> list[grpcclient.InferInput]:
    kinds = {"n": ("INT32", np.int32), "height": ("INT32", np.int32), "width": ("INT32", np.int32),
             "steps": ("INT32", np.int32), "guidance_scale": ("FP32", np.float32), "seed": ("INT64", np.int64)}
    values = {"prompt": prompt, **({"seed": seed} if seed is not None else {}), **options}
    result = []
    for name, value in values.items():
        if isinstance(value, str):
            datatype, array = "BYTES", np.array([value.encode()], dtype=np.object_)
        else:
            datatype, dtype = kinds[name]
            array = np.array([value], dtype=dtype)
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        result.append(tensor)
    return result


def generate(client, prompt="a lighthouse at dawn", seed=1, **options) -> np.ndarray:
    return client.infer(TINY, inputs(prompt, seed, **options)).as_numpy("images")


@pytest.mark.parametrize(("width", "height"), [(64, 64), (256, 256)])
def test_images_have_the_asked_size(client, width, height):
    images = generate(client, width=width, height=height, steps=4)
    assert images.shape == (1, height, width, 3) and images.dtype == np.uint8
    assert images.std() > 10  # a picture, not an empty or constant tensor


def test_matches_the_onnx_runtime_pipeline(client, sd_repository):
    settings = {k: v.string_value for k, v in read_config(sd_repository / TINY / "config.pbtxt").parameters.items()}
    request = ImageRequest("a red fox in snow", seed=42, negative_prompt="blurry", n=2, height=64, width=64,
                           steps=6, guidance_scale=5.0)
    expected = to_uint8(ort_pipeline(sd_repository, TINY, settings, threads=1).generate(request))
    got = generate(client, request.prompt, request.seed, negative_prompt=request.negative_prompt, n=2,
                   height=64, width=64, steps=6, guidance_scale=5.0)
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # rounding at .5 may differ by one


def test_n_two_gives_two_different_images(client):
    images = generate(client, seed=3, n=2, width=64, height=64, steps=3)
    assert images.shape == (2, 64, 64, 3)
    assert not np.array_equal(images[0], images[1])


def test_same_seed_gives_identical_bytes(client):
    # Different inputs (n given or defaulted) so the second request is computed again, not a cache hit.
    first = generate(client, "same seed", seed=11, width=64, height=64, steps=3)
    second = generate(client, "same seed", seed=11, n=1, width=64, height=64, steps=3)
    assert first.tobytes() == second.tobytes()
    assert generate(client, "same seed", seed=12, width=64, height=64, steps=3).tobytes() != first.tobytes()


def cache_hits(server: TritonServer) -> float:
    metrics = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text
    for line in metrics.splitlines():
        if line.startswith("nv_cache_num_hits_per_model") and f'model="{TINY}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_repeated_request_is_served_from_the_cache(client, triton):
    before = cache_hits(triton)
    first = generate(client, "cached", seed=5, width=64, height=64, steps=3)
    second = generate(client, "cached", seed=5, width=64, height=64, steps=3)
    assert first.tobytes() == second.tobytes()
    assert cache_hits(triton) == before + 1


@pytest.mark.parametrize(
    ("prompt", "seed", "options", "message", "param"),
    [
        ("a cat", 1, {"width": 64, "height": 65}, "size 64x65 is not supported", "size"),
        ("   ", 1, {}, "prompt must not be empty", "prompt"),
        ("a cat", 1, {"n": 9}, "n must be between 1 and 4", "n"),
        ("a cat", 1, {"steps": 0}, "steps must be between", "steps"),
        ("a cat", None, {}, "seed", None),  # a required input: Triton refuses it before the model runs
    ],
)
def test_invalid_requests(client, prompt, seed, options, message, param):
    with pytest.raises(InferenceServerException, match=message) as info:
        generate(client, prompt, seed, **options)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    if param is not None:
        error = ModelError.decode(info.value.message())
        assert (error.code, error.param) == (INVALID_REQUEST, param)


def test_cancelled_request_stops_between_steps(client, triton, caplog):
    caplog.set_level(logging.INFO, logger="tritonserver")
    done: queue.Queue = queue.Queue()
    # ~45 s of work on two CPU cores if nothing stopped it.
    call = client.async_infer(TINY, inputs("a long one", 1, n=2, width=512, height=512, steps=100),
                              callback=lambda result, error: done.put(error))
    time.sleep(2.0)
    call.cancel()
    error = done.get(timeout=10)
    assert error is not None and "CANCELLED" in str(error.status())
    started = time.monotonic()
    images = generate(client, "after the cancel", seed=2, width=64, height=64, steps=2)
    assert images.shape == (1, 64, 64, 3)
    assert time.monotonic() - started < 20, "the cancelled request kept the model busy"
    deadline = time.monotonic() + 10
    while not any("cancelled before step" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, "the model did not log the cancellation"
        time.sleep(0.1)
