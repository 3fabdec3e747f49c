"""Image generation end to end: openai SDK -> frontend -> real Triton (BLS pipeline over three ONNX networks)."""

from __future__ import annotations

import base64
import io
import logging
import time

import httpx
import openai
import pytest
from openai import OpenAI
from PIL import Image

from export_scripts.__main__ import main as export_main
from export_scripts.diffusion import TINY, served_models
from frontend.settings import Settings
from launcher.triton import TritonServer
from tests.conftest import REPOSITORY
from tests.stack import run_frontend

pytestmark = pytest.mark.integration
FAST = {"steps": 3}  # extension fields, through the SDK's extra_body


@pytest.fixture(scope="module")
def triton():
    """Triton with only the diffusion models (exported into model_repository/ if out of date)."""
    assert export_main(["diffusion", f"--repository={REPOSITORY}"]) == 0
    with TritonServer(REPOSITORY, served_models(TINY)) as server:
        yield server


@pytest.fixture(scope="module")
def frontend(triton):
    with run_frontend(Settings(triton_grpc_url=triton.grpc_url, model_index_ttl_s=1.0)) as running:
        yield running


@pytest.fixture(scope="module")
def openai_client(frontend) -> OpenAI:
    return OpenAI(base_url=frontend.base_url, api_key="unused", max_retries=0, timeout=120)


def png(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.format == "PNG" and image.mode == "RGB"
    return image


@pytest.mark.parametrize("size", ["64x64", "256x256"])
def test_b64_json_decodes_to_pngs_of_the_asked_size(openai_client, size):
    result = openai_client.images.generate(model=TINY, prompt="a lighthouse at dawn", size=size,
                                           response_format="b64_json", extra_body=FAST)
    assert len(result.data) == 1
    image = png(result.data[0].b64_json)
    assert f"{image.width}x{image.height}" == size
    assert max(image.getextrema()[0]) > min(image.getextrema()[0])  # not a blank picture


def test_n_two_gives_two_different_images(openai_client):
    result = openai_client.images.generate(model=TINY, prompt="two foxes", n=2, size="64x64",
                                           response_format="b64_json", extra_body=FAST)
    first, second = (png(d.b64_json).tobytes() for d in result.data)
    assert first != second


def test_same_seed_gives_identical_bytes(openai_client):
    def generate(seed):
        result = openai_client.images.generate(model=TINY, prompt="a red fox", size="64x64",
                                               response_format="b64_json", extra_body={**FAST, "seed": seed})
        return base64.b64decode(result.data[0].b64_json)

    assert generate(7) == generate(7)
    assert generate(7) != generate(8)


def test_no_seed_gives_a_new_image_each_time(openai_client):
    results = [openai_client.images.generate(model=TINY, prompt="a red fox", size="64x64",
                                             response_format="b64_json", extra_body=FAST) for _ in range(2)]
    assert results[0].data[0].b64_json != results[1].data[0].b64_json


def test_quality_style_user_and_extensions_are_accepted(openai_client):
    result = openai_client.images.generate(
        model=TINY, prompt="a castle", size="64x64", response_format="b64_json", quality="hd", style="natural",
        user="user-1", extra_body={"steps": 2, "guidance_scale": 3.0, "negative_prompt": "fog", "seed": 1})
    assert png(result.data[0].b64_json).size == (64, 64)


URL_TTL_S = 8.0  # long enough for the fetches below on a loaded 2-core machine


@pytest.fixture(scope="module")
def short_lived(triton):
    """A second frontend whose image URLs expire after URL_TTL_S seconds."""
    with run_frontend(Settings(triton_grpc_url=triton.grpc_url, images_url_ttl_s=URL_TTL_S)) as running:
        yield running, OpenAI(base_url=running.base_url, api_key="unused", max_retries=0, timeout=120)


def test_url_works_before_expiry_and_is_gone_after(short_lived):
    frontend, client = short_lived
    minted = time.monotonic()
    result = client.images.generate(model=TINY, prompt="a harbour", n=2, size="64x64", response_format="url",
                                    extra_body={**FAST, "seed": 3})
    urls = [d.url for d in result.data]
    assert all(u.startswith(f"{frontend.url}/v1/images/files/") for u in urls) and len(set(urls)) == 2
    inline = client.images.generate(model=TINY, prompt="a harbour", n=2, size="64x64", response_format="b64_json",
                                    extra_body={**FAST, "seed": 3})
    for url, expected in zip(urls, inline.data):
        response = httpx.get(url, timeout=60)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.content == base64.b64decode(expected.b64_json)
    forged = httpx.get(urls[0][:-3] + "AAA", timeout=60)
    assert forged.status_code == 404 and forged.json()["error"]["code"] == "image_not_found"
    time.sleep(max(0.0, minted + URL_TTL_S + 1.0 - time.monotonic()))
    expired = httpx.get(urls[0], timeout=60)
    assert expired.status_code == 410
    assert expired.json()["error"]["code"] == "image_url_expired"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [({"size": "1024x1024"}, "size"), ({"size": "64x128"}, "size"), ({"prompt": ""}, "prompt"),
     ({"n": 5}, "n")],
)
def test_invalid_requests_are_400_envelopes(openai_client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.generate(**{"model": TINY, "prompt": "x", "size": "64x64", **kwargs})
    assert info.value.status_code == 400
    assert info.value.body["param"] == param and info.value.body["message"]


def test_images_model_is_listed(openai_client):
    assert TINY in {m.id for m in openai_client.models.list()}


def test_a_client_that_leaves_cancels_the_generation(frontend, caplog):
    caplog.set_level(logging.INFO, logger="tritonserver")
    body = {"model": TINY, "prompt": "a slow one", "n": 2, "size": "512x512", "steps": 100, "seed": 99,
            "response_format": "b64_json"}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up after 2 s of ~30 s of work
        httpx.post(f"{frontend.base_url}/images/generations", json=body, timeout=2.0)
    deadline = time.monotonic() + 15
    while not any("cancelled before step" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, "the pipeline model never saw the cancellation"
        time.sleep(0.1)
