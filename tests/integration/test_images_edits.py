"""Image edits and variations end to end: the openai SDK -> frontend (multipart) -> the session's real Triton
(the BLS pipeline over four ONNX networks, the VAE encoder among them)."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from export_scripts.common import read_config
from export_scripts.diffusion import TINY, ort_pipeline
from triton_models.contract import INPAINT_STRENGTH
from triton_models.diffusion.pipeline import ImageRequest, to_output

pytestmark = pytest.mark.integration
FAST = {"steps": 3}  # extension fields, through the SDK's extra_body
SIZE = 64


def picture(seed: int = 0) -> np.ndarray:
    """A picture with structure (gradients and a checkerboard), so that edits have something to change."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    checks = ((x // 8 + y // 8 + seed) % 2) * 255
    return np.stack([x * 4, y * 4, checks], axis=-1).astype(np.uint8)


def area() -> np.ndarray:
    """Where to edit: a rectangle whose edges cut through latent cells."""
    where = np.zeros((SIZE, SIZE), dtype=bool)
    where[13:45, 20:51] = True
    return where


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def with_alpha(rgb: np.ndarray, transparent: np.ndarray) -> bytes:
    return png(np.dstack([rgb, np.where(transparent, 0, 255).astype(np.uint8)]))


def decoded(b64: str) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.format == "PNG" and image.mode == "RGB" and image.size == (SIZE, SIZE)
    return np.asarray(image)


def edit(client, seed=1, mask=True, **kwargs):
    options = {"mask": ("mask.png", with_alpha(picture(5), area()), "image/png")} if mask else {}
    return client.images.edit(model=TINY, image=("in.png", png(picture()), "image/png"), prompt="a red door",
                              response_format="b64_json", extra_body={**FAST, "seed": seed}, **options, **kwargs)


def test_edit_with_a_mask_changes_only_the_transparent_area(openai_client):
    result = edit(openai_client, n=2)
    assert len(result.data) == 2 and result.size == f"{SIZE}x{SIZE}"  # the image's own size, not the default
    before = picture()
    first, second = (decoded(d.b64_json) for d in result.data)
    for after in (first, second):
        assert np.array_equal(after[~area()], before[~area()])  # every kept pixel, exactly
        assert (after[area()] != before[area()]).any(axis=-1).mean() > 0.9  # the area redrawn
    assert not np.array_equal(first, second)


def test_served_edit_equals_the_onnx_runtime_pipeline(openai_client, repository):
    """Frontend (PNG decoding, alpha to mask, tensors) + Triton (BLS) against the exporter's own pipeline, which
    the export checked against diffusers' inpainting."""
    result = edit(openai_client, seed=42)
    settings = {k: v.string_value for k, v in read_config(repository / TINY / "config.pbtxt").parameters.items()}
    request = ImageRequest("a red door", seed=42, n=1, height=SIZE, width=SIZE, steps=FAST["steps"],
                           guidance_scale=float(settings["default_guidance_scale"]), image=picture(),
                           mask=np.where(area(), 255, 0).astype(np.uint8), strength=INPAINT_STRENGTH)
    pipeline = ort_pipeline(repository, TINY, settings, threads=1)
    expected = to_output(pipeline.generate(request), request)[0]
    assert np.abs(decoded(result.data[0].b64_json).astype(int) - expected.astype(int)).max() <= 1


def test_edit_without_a_mask_redraws_everything_and_the_seed_fixes_it(openai_client):
    first = decoded(edit(openai_client, seed=7, mask=False).data[0].b64_json)
    assert (first != picture()).any(axis=-1).mean() > 0.9
    assert np.array_equal(decoded(edit(openai_client, seed=7, mask=False).data[0].b64_json), first)
    assert not np.array_equal(decoded(edit(openai_client, seed=8, mask=False).data[0].b64_json), first)


def test_the_images_own_transparency_is_the_mask(openai_client):
    result = openai_client.images.edit(model=TINY, image=("in.png", with_alpha(picture(), area()), "image/png"),
                                       prompt="a window", response_format="b64_json", extra_body={**FAST, "seed": 3})
    after = decoded(result.data[0].b64_json)
    assert np.array_equal(after[~area()], picture()[~area()])
    assert (after[area()] != picture()[area()]).any(axis=-1).mean() > 0.9


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # OpenAI retired DALL-E's variations
def test_variation_url_serves_the_same_png_as_b64_json(openai_client):
    def variation(response_format):
        return openai_client.images.create_variation(
            model=TINY, image=("in.png", png(picture(1)), "image/png"), n=2, response_format=response_format,
            extra_body={**FAST, "seed": 11})

    inline = variation("b64_json")
    images = [decoded(d.b64_json) for d in inline.data]
    assert len(images) == 2 and not np.array_equal(images[0], images[1])
    assert all((image != picture(1)).any(axis=-1).mean() > 0.5 for image in images)
    for url, expected in zip([d.url for d in variation("url").data], inline.data):
        response = httpx.get(url, timeout=60)
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        assert response.content == base64.b64decode(expected.b64_json)


@pytest.mark.parametrize(
    ("kwargs", "extra", "param"),
    [
        ({"mask": ("m.png", with_alpha(np.zeros((32, 32, 3), np.uint8), np.ones((32, 32), bool)), "image/png")}, {},
         "mask"),
        ({"image": ("in.png", b"not a picture", "image/png")}, {}, "image"),
        ({}, {"steps": 2, "strength": 0.3}, "strength"),  # int(2 x 0.3) = 0 steps: refused before the model
        ({"size": "1024x1024"}, {}, "size"),
        ({"input_fidelity": "high"}, {}, "input_fidelity"),
    ],
)
def test_refusals_are_400_envelopes(openai_client, kwargs, extra, param):
    request = {"model": TINY, "image": ("in.png", png(picture()), "image/png"), "prompt": "x",
               "response_format": "b64_json", "extra_body": {**FAST, **extra}, **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.images.edit(**request)
    assert info.value.status_code == 400
    assert info.value.body["param"] == param and info.value.body["message"]
