"""POST /v1/images/edits and /v1/images/variations in-process: multipart parsing (the openai SDK's own requests
too), what reaches the model, and every refusal a 400 naming its field."""

from __future__ import annotations

import base64
import io

import httpx
import httpx2
import numpy as np
import openai
import pytest
from PIL import Image

from frontend.app import create_app
from frontend.settings import Settings
from tests.api.conftest import assert_error
from tests.api.test_images import SD, ImageBackend, decode_png
from tests.api.test_metrics import samples, value
from triton_models.contract import EDIT_STRENGTH, INPAINT_STRENGTH, VARIATION_STRENGTH

PLAIN = "sd-plain"  # an images model exported before edits: no VAE encoder


class EditBackend(ImageBackend):
    """The fake diffusion model, editing: its pixels depend on the seed and on the image it is given."""

    def __init__(self):
        super().__init__()
        self.models[SD]["supports_edits"] = "true"
        self.models[PLAIN] = {k: v for k, v in self.models[SD].items() if k != "supports_edits"}
        self.states[PLAIN] = "READY"

    async def infer(self, model, inputs, outputs, request_id=""):
        result = await super().infer(model, inputs, outputs, request_id)
        if "image" in inputs:
            result["images"] = result["images"] ^ inputs["image"][None]
        return result


def edit_sent(backend) -> dict:
    model, inputs = backend.calls[-1]
    assert model == SD
    return {k: (v[0].decode() if v.dtype == object else v if k in ("image", "mask") else v[0].item())
            for k, v in inputs.items()}


def picture(width=64, height=64, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def encoded(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()


def with_alpha(rgb: np.ndarray, transparent: np.ndarray) -> bytes:
    """A PNG of `rgb` whose pixels where `transparent` is true have alpha 0 (OpenAI's "edit here")."""
    alpha = np.where(transparent, 0, 255).astype(np.uint8)
    return encoded(np.dstack([rgb, alpha]))


def flat(width: int, height: int) -> np.ndarray:
    """A large picture that compresses small: over the pixel limits, under the byte limit."""
    return np.zeros((height, width, 3), dtype=np.uint8)


def square(height=64, width=64) -> np.ndarray:
    area = np.zeros((height, width), dtype=bool)
    area[8:40, 16:48] = True
    return area


@pytest.fixture
def backend() -> EditBackend:
    return EditBackend()


@pytest.fixture
def settings() -> Settings:
    return Settings(model_index_ttl_s=0, images_url_ttl_s=60, image_max_bytes=200_000, image_max_pixels=300_000,
                    image_max_request_pixels=400_000)


@pytest.fixture
async def client(backend, settings):
    app = create_app(settings, backend=backend)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            c.app = app
            yield c


@pytest.fixture
async def sdk(client):
    """The official openai SDK, in-process: its multipart bodies exactly as it writes them."""
    transport = httpx2.ASGITransport(app=client.app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://test") as http:
        yield openai.AsyncOpenAI(base_url="http://test/v1", api_key="unused", http_client=http, max_retries=0)


async def post_edit(client, fields: dict, files: dict, path="/v1/images/edits"):
    files = {name: (f"{name}.png", data, "image/png") for name, data in files.items()}
    return await client.post(path, data={"model": SD, **fields}, files=files)


async def test_sdk_edit_with_mask_sends_the_picture_and_the_masks_transparent_area(sdk, backend):
    rgb, area = picture(), square()
    result = await sdk.images.edit(image=("in.png", encoded(rgb), "image/png"), prompt="a red hat", model=SD,
                                   mask=("mask.png", with_alpha(picture(seed=9), area), "image/png"), n=2,
                                   size="64x64", response_format="b64_json", user="u-1", quality="high",
                                   background="opaque", extra_body={"seed": 5, "steps": 4, "strength": 0.5})
    assert len(result.data) == 2 and result.size == "64x64"
    images = [decode_png(base64.b64decode(d.b64_json)) for d in result.data]
    expected = np.random.default_rng(5).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8) ^ rgb[None]
    assert np.array_equal(np.stack(images), expected)
    sent = edit_sent(backend)
    assert (sent["prompt"], sent["seed"], sent["n"], sent["steps"], sent["strength"]) == ("a red hat", 5, 2, 4, 0.5)
    assert (sent["width"], sent["height"], sent["guidance_scale"], sent["negative_prompt"]) == (64, 64, 7.5, "")
    assert np.array_equal(sent["image"], rgb)  # the mask's colours play no part, only its alpha
    assert sent["mask"].dtype == np.uint8 and np.array_equal(sent["mask"], np.where(area, 255, 0))


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # OpenAI retired DALL-E's variations
async def test_sdk_variation_redraws_the_whole_picture_without_a_prompt(sdk, backend):
    rgba = with_alpha(picture(), square())  # transparency means nothing to a variation
    result = await sdk.images.create_variation(image=("in.png", rgba, "image/png"), model=SD, n=1,
                                               response_format="b64_json")
    assert len(result.data) == 1
    sent = edit_sent(backend)
    assert sent["prompt"] == "" and sent["strength"] == VARIATION_STRENGTH and "mask" not in sent
    assert np.array_equal(sent["image"], picture())


async def test_the_images_own_transparency_is_the_mask_and_strength_defaults_follow_it(client, backend):
    r = await post_edit(client, {"prompt": "x", "response_format": "b64_json"},
                        {"image": with_alpha(picture(), square())})
    assert r.status_code == 200, r.text
    sent = edit_sent(backend)
    assert np.array_equal(sent["mask"], np.where(square(), 255, 0)) and sent["strength"] == INPAINT_STRENGTH
    assert np.array_equal(sent["image"], picture())  # the colours under alpha 0 are kept, not blackened
    for image in (encoded(picture()), with_alpha(picture(), np.zeros((64, 64), bool))):  # no pixel transparent
        r = await post_edit(client, {"prompt": "x", "response_format": "b64_json"}, {"image": image})
        assert r.status_code == 200, r.text
        sent = edit_sent(backend)
        assert "mask" not in sent and sent["strength"] == EDIT_STRENGTH


@pytest.mark.parametrize(("image_size", "size", "sent_size"), [
    ((128, 64), None, (128, 64)),  # the image's own size, when the model draws it
    ((128, 64), "auto", (128, 64)),
    ((32, 32), None, (64, 64)),  # else the model's default
    ((64, 64), "128x64", (128, 64)),  # resized to the size asked for
])
async def test_output_size(client, backend, image_size, size, sent_size):
    fields = {"prompt": "x", "response_format": "b64_json", **({"size": size} if size else {})}
    r = await post_edit(client, fields, {"image": encoded(picture(*image_size)),
                                         "mask": with_alpha(picture(*image_size), square(*image_size[::-1]))})
    assert r.status_code == 200, r.text
    sent = edit_sent(backend)
    assert (sent["width"], sent["height"]) == sent_size and r.json()["size"] == "{}x{}".format(*sent_size)
    assert sent["image"].shape == (sent_size[1], sent_size[0], 3) and sent["mask"].shape == sent_size[::-1]
    assert set(np.unique(sent["mask"])) == {0, 255}


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "GIF", "BMP"])
async def test_other_accepted_formats(client, backend, fmt):
    r = await post_edit(client, {"prompt": "x", "response_format": "b64_json"}, {"image": encoded(picture(), fmt)})
    assert r.status_code == 200, r.text
    assert edit_sent(backend)["image"].shape == (64, 64, 3)


async def test_url_serves_each_edit_its_own_png_until_it_is_evicted(client):
    urls = {}
    for seed in (0, 1):  # same request, other picture: other images, other links
        r = await post_edit(client, {"prompt": "x", "seed": 3}, {"image": encoded(picture(seed=seed))})
        assert r.status_code == 200, r.text
        urls[seed] = r.json()["data"][0]["url"]
    assert urls[0] != urls[1]
    expected = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for seed, url in urls.items():
        png = await client.get(url)
        assert png.status_code == 200 and np.array_equal(decode_png(png.content), expected ^ picture(seed=seed))
    client.app.state.services.images.files.clear()  # an edit's link cannot be redrawn from: 410
    assert_error(await client.get(urls[0]), 410, code="image_evicted")


async def test_the_model_label_of_a_multipart_request(client):
    await post_edit(client, {"prompt": "x", "response_format": "b64_json"}, {"image": encoded(picture())})
    scraped = samples((await client.get("/metrics")).text)
    assert value(scraped, "modelgate_requests_total", endpoint="/v1/images/edits", model=SD, status="200") == 1


async def test_unknown_fields_are_accepted_and_the_default_model_is_one_that_edits(client, backend):
    r = await client.post("/v1/images/edits", data={"prompt": "x", "response_format": "b64_json", "foo": "1"},
                          files={"image": ("a.png", encoded(picture()), "image/png")})
    assert r.status_code == 200, r.text
    assert backend.calls[-1][0] == SD


@pytest.mark.parametrize(
    ("fields", "files", "param", "code"),
    [
        ({"prompt": "x"}, {"image": b"not an image"}, "image", "invalid_image"),
        ({"prompt": "x"}, {"image": b""}, "image", "invalid_image"),
        ({"prompt": "x"}, {"image": b"%!PS-Adobe-3.0 EPSF-3.0\n"}, "image", "invalid_image"),
        ({"prompt": "x"}, {"image": encoded(flat(600, 600))}, "image", "image_pixels_exceeded"),
        ({"prompt": "x"}, {"image": encoded(flat(500, 500)), "mask": with_alpha(flat(500, 500), square(500, 500))},
         "mask", "image_pixels_exceeded"),
        ({"prompt": "x"}, {"image": encoded(picture(), "BMP") * 20}, "image", "invalid_image"),  # over max bytes
        ({"prompt": "x"}, {"image": encoded(picture()), "mask": with_alpha(picture(32, 32), square(32, 32))},
         "mask", "invalid_mask"),
        ({"prompt": "x"}, {"image": encoded(picture()), "mask": encoded(picture())}, "mask", "invalid_mask"),
        ({"prompt": "x"}, {"image": encoded(picture()), "mask": with_alpha(picture(), np.zeros((64, 64), bool))},
         "mask", "invalid_mask"),
        ({"prompt": "x"}, {"mask": with_alpha(picture(), square())}, "image", None),
        ({"prompt": "x", "image": "a text, not a file"}, {"attachment": b"x"}, "image", None),
        ({}, {"image": encoded(picture())}, "prompt", None),
        ({"prompt": "  "}, {"image": encoded(picture())}, "prompt", None),
        ({"prompt": "x", "n": "5"}, {"image": encoded(picture())}, "n", None),
        ({"prompt": "x", "n": "two"}, {"image": encoded(picture())}, "n", None),
        ({"prompt": "x", "size": "1024x1024"}, {"image": encoded(picture())}, "size", None),
        ({"prompt": "x", "steps": "51"}, {"image": encoded(picture())}, "steps", None),
        ({"prompt": "x", "strength": "0"}, {"image": encoded(picture())}, "strength", None),
        ({"prompt": "x", "strength": "1.5"}, {"image": encoded(picture())}, "strength", None),
        ({"prompt": "x", "seed": "-1"}, {"image": encoded(picture())}, "seed", None),
        ({"prompt": "x", "response_format": "jpeg"}, {"image": encoded(picture())}, "response_format", None),
        ({"prompt": "x", "output_format": "webp"}, {"image": encoded(picture())}, "output_format", None),
        ({"prompt": "x", "background": "transparent"}, {"image": encoded(picture())}, "background", None),
        ({"prompt": "x", "stream": "true"}, {"image": encoded(picture())}, "stream", None),
        ({"prompt": "x", "input_fidelity": "high"}, {"image": encoded(picture())}, "input_fidelity",
         "unsupported_parameter"),
        ({"prompt": "x", "partial_images": "2"}, {"image": encoded(picture())}, "partial_images",
         "unsupported_parameter"),
        ({"prompt": "x", "output_compression": "50"}, {"image": encoded(picture())}, "output_compression",
         "unsupported_parameter"),
        ({"prompt": "x", "svg[detail]": "high"}, {"image": encoded(picture())}, "svg", "unsupported_parameter"),
        ({"prompt": "x", "model": PLAIN}, {"image": encoded(picture())}, "model", "model_not_supported"),
        ({"prompt": "x", "model": "emb"}, {"image": encoded(picture())}, "model", None),
    ],
)
async def test_refusals_are_400s_naming_the_field(client, backend, fields, files, param, code):
    r = await post_edit(client, fields, files)
    assert_error(r, 400, param=param, code=code)
    assert not any(model == SD for model, _ in backend.calls)  # refused before the model was called


async def test_two_images_or_two_prompts_are_refused(client):
    picture_file = ("a.png", encoded(picture()), "image/png")
    r = await client.post("/v1/images/edits", data={"prompt": "x"},
                          files=[("image[]", picture_file), ("image[]", picture_file)])
    assert "one image per request" in assert_error(r, 400, param="image")["message"]
    r = await client.post("/v1/images/edits", data={"prompt": ["x", "y"]}, files={"image": picture_file})
    assert_error(r, 400, param="prompt")


async def test_a_json_body_is_refused(client):
    r = await client.post("/v1/images/edits", json={"prompt": "x", "image": "data:image/png;base64,AAAA"})
    assert "multipart/form-data" in assert_error(r, 400, code="invalid_content_type")["message"]


async def test_unknown_model_is_404(client):
    r = await post_edit(client, {"prompt": "x", "model": "nope"}, {"image": encoded(picture())})
    assert_error(r, 404, param="model")


async def test_variation_refusals(client):
    r = await post_edit(client, {"strength": "2"}, {"image": encoded(picture())}, path="/v1/images/variations")
    assert_error(r, 400, param="strength")
    r = await post_edit(client, {}, {"image": b"GIF89a"}, path="/v1/images/variations")
    assert_error(r, 400, param="image", code="invalid_image")
    r = await post_edit(client, {"model": PLAIN}, {"image": encoded(picture())}, path="/v1/images/variations")
    assert_error(r, 400, param="model")


async def test_no_model_that_edits(client, backend):
    backend.states.pop(SD)
    r = await client.post("/v1/images/variations", files={"image": ("a.png", encoded(picture()), "image/png")})
    assert_error(r, 404, code="model_not_found")


async def test_openapi_publishes_the_multipart_bodies(client):
    schema = (await client.get("/openapi.json")).json()
    for path, required in (("/v1/images/edits", {"image", "prompt"}), ("/v1/images/variations", {"image"})):
        operation = schema["paths"][path]["post"]
        body = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert set(body["required"]) == required
        assert body["properties"]["image"] == {"type": "string", "format": "binary", "title": "Image"}
        assert body["properties"]["strength"]["maximum"] == 1
        assert {"400", "401", "404", "413", "429", "503"} <= set(operation["responses"])


@pytest.mark.parametrize(("strength", "steps"), [(None, 2), ("0.5", 2), ("0.3", 4), ("1", 1)])
async def test_a_one_step_default_schedule_grows_until_the_edit_runs_a_step(client, backend, strength, steps):
    backend.models[SD]["default_steps"] = "1"  # as sd-turbo's: int(1 x 0.8) would run nothing
    fields = {"prompt": "x", "response_format": "b64_json", **({"strength": strength} if strength else {})}
    r = await post_edit(client, fields, {"image": encoded(picture())})
    assert r.status_code == 200, r.text
    assert edit_sent(backend)["steps"] == steps


@pytest.mark.parametrize(("strength", "steps", "param"), [
    ("0.5", "1", "strength"), ("0.3", "3", "strength"), (None, "1", "steps"),  # int(steps x strength) = 0
    ("0.01", None, "strength"), ("5e-324", None, "strength"),  # even max_steps (50) runs none
])
async def test_an_edit_that_would_run_no_step_is_refused_before_the_model(client, backend, strength, steps, param):
    """Refused by the frontend: a refusal by the model would be kept by Triton's response cache as an answer
    without images."""
    backend.models[SD]["default_steps"] = "1"
    calls = len(backend.calls)
    fields = {"prompt": "x", **({"strength": strength} if strength else {}), **({"steps": steps} if steps else {})}
    assert_error(await post_edit(client, fields, {"image": encoded(picture())}), 400, param)
    assert len(backend.calls) == calls


async def test_edit_urls_need_the_png_cache(backend):
    app = create_app(Settings(model_index_ttl_s=0, images_file_cache_bytes=0), backend=backend)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert_error(await post_edit(client, {"prompt": "x"}, {"image": encoded(picture())}), 400,
                         param="response_format")
            r = await post_edit(client, {"prompt": "x", "response_format": "b64_json"}, {"image": encoded(picture())})
            assert r.status_code == 200, r.text
