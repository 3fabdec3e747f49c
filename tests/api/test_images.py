"""POST /v1/images/generations and image URLs, in-process against a fake Triton backend."""

from __future__ import annotations

import asyncio
import base64
import struct
import zlib

import httpx
import numpy as np
import pytest

from frontend.app import create_app
from frontend.errors import ClientClosedRequest
from frontend.services.images import ImageLinks, cancel_on_disconnect, encode_png
from frontend.settings import Settings
from tests.api.conftest import FakeBackend, assert_error

SD = "sd"
SD_PARAMS = {"openai_task": "images", "sizes": "64x64,128x64", "default_size": "64x64", "default_steps": "10",
             "default_guidance_scale": "7.5", "max_n": "4", "max_steps": "50"}


class ImageBackend(FakeBackend):
    """FakeBackend plus a diffusion pipeline model whose pixels are a function of its inputs."""

    def __init__(self):
        super().__init__()
        self.models[SD] = dict(SD_PARAMS)
        self.models[f"{SD}_unet"] = {}
        self.states = {name: "READY" for name in self.models}
        self.delay_s = 0.0
        self.cancelled = False

    async def infer(self, model, inputs, outputs, request_id=""):
        if model != SD:
            return await super().infer(model, inputs, outputs, request_id)
        self.calls.append((model, inputs))
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        n, h, w = int(inputs["n"][0]), int(inputs["height"][0]), int(inputs["width"][0])
        rng = np.random.default_rng(int(inputs["seed"][0]))
        return {"images": rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)}


def decode_png(data: bytes) -> np.ndarray:
    """Enough of a PNG reader for what encode_png writes (8-bit RGB, filter 0)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2)
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + width * 3)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(height, width, 3)


@pytest.fixture
def backend() -> ImageBackend:
    return ImageBackend()


@pytest.fixture
async def client(backend):
    app = create_app(Settings(model_index_ttl_s=0, images_url_ttl_s=60), backend=backend)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            c.app = app
            yield c


def sent(backend) -> dict:
    model, inputs = backend.calls[-1]
    assert model == SD
    return {k: (v[0].decode() if v.dtype == object else v[0].item()) for k, v in inputs.items()}


def test_png_encoder_round_trip():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(decode_png(encode_png(image)), image)


async def test_b64_json_gives_pngs_of_the_generated_pixels(client, backend):
    r = await client.post("/v1/images/generations", json={"model": SD, "prompt": "a fox", "n": 2, "size": "128x64",
                                                          "response_format": "b64_json", "seed": 9})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"created", "data", "size", "output_format"} and body["size"] == "128x64"
    images = [decode_png(base64.b64decode(d["b64_json"])) for d in body["data"]]
    expected = np.random.default_rng(9).integers(0, 256, (2, 64, 128, 3), dtype=np.uint8)
    assert np.array_equal(np.stack(images), expected)
    assert sent(backend) == {"prompt": "a fox", "negative_prompt": "", "seed": 9, "n": 2, "height": 64,
                             "width": 128, "steps": 10, "guidance_scale": 7.5}


async def test_every_input_is_sent_with_model_defaults_and_extensions(client, backend):
    r = await client.post("/v1/images/generations", json={
        "prompt": "a fox", "response_format": "b64_json", "steps": 20, "guidance_scale": 3.0,
        "negative_prompt": "blurry", "quality": "hd", "style": "vivid", "user": "u-1"})
    assert r.status_code == 200, r.text
    values = sent(backend)
    assert (values["steps"], values["guidance_scale"], values["negative_prompt"]) == (20, 3.0, "blurry")
    assert (values["width"], values["height"], values["n"]) == (64, 64, 1)  # the model's defaults


async def test_without_a_seed_each_request_draws_one(client, backend):
    for _ in range(2):
        r = await client.post("/v1/images/generations", json={"model": SD, "prompt": "x", "response_format": "b64_json"})
        assert r.status_code == 200
    seeds = [int(inputs["seed"][0]) for _, inputs in backend.calls]
    assert seeds[0] != seeds[1] and all(0 <= s < 2**63 for s in seeds)


async def test_url_serves_the_png_until_it_expires(client, backend):
    r = await client.post("/v1/images/generations", json={"model": SD, "prompt": "a fox", "n": 2, "seed": 4})
    assert r.status_code == 200, r.text
    urls = [d["url"] for d in r.json()["data"]]
    assert all(u.startswith("http://test/v1/images/files/") for u in urls) and urls[0] != urls[1]
    expected = np.random.default_rng(4).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    for i, url in enumerate(urls):
        image = await client.get(url)
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert image.headers["cache-control"].startswith("private, max-age=")
        assert np.array_equal(decode_png(image.content), expected[i])

    links: ImageLinks = client.app.state.services.images.links
    now = links.clock()
    links.clock = lambda: now + 61
    assert_error(await client.get(urls[0]), 410, code="image_url_expired")


@pytest.mark.parametrize("mangle", [lambda t: t[:-2] + "AA", lambda t: "x" + t, lambda t: "nothing"])
async def test_forged_or_garbled_url_is_404(client, mangle):
    r = await client.post("/v1/images/generations", json={"model": SD, "prompt": "a fox", "seed": 1})
    token = r.json()["data"][0]["url"].rsplit("/", 1)[1]
    assert_error(await client.get(f"/v1/images/files/{mangle(token)}"), 404, code="image_not_found")


async def test_links_signed_with_another_secret_are_404():
    ours, theirs = ImageLinks(b"a" * 32, 60), ImageLinks(b"b" * 32, 60)
    token = theirs.sign({"m": SD, "v": {}, "i": 0})
    assert ours.verify(ImageLinks(b"a" * 32, 60).sign({"i": 1}))[0]["i"] == 1
    with pytest.raises(Exception, match="No such image"):
        ours.verify(token)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"prompt": "x", "size": "1024x1024"}, 400, "size"),
        ({"prompt": "x", "size": "64x128"}, 400, "size"),
        ({"prompt": ""}, 400, "prompt"),
        ({"prompt": "   "}, 400, "prompt"),
        ({"prompt": "x", "n": 5}, 400, "n"),
        ({"prompt": "x", "n": 11}, 400, "n"),
        ({"prompt": "x", "steps": 51}, 400, "steps"),
        ({"prompt": "x", "seed": -1}, 400, "seed"),
        ({"prompt": "x", "response_format": "jpeg"}, 400, "response_format"),
        ({"prompt": "x", "output_format": "jpeg"}, 400, "output_format"),
        ({"prompt": "x", "model": "nope"}, 404, "model"),
        ({"prompt": "x", "model": "emb"}, 400, "model"),
    ],
)
async def test_invalid_requests(client, body, status, param):
    assert_error(await client.post("/v1/images/generations", json={"model": SD, **body}), status, param=param)


async def test_no_images_model(client, backend):
    backend.states.pop(SD)
    assert_error(await client.post("/v1/images/generations", json={"prompt": "x"}), 404, code="model_not_found")


async def test_a_client_that_leaves_cancels_the_triton_call():
    backend = ImageBackend()
    backend.delay_s = 30

    async def gone():
        return True

    with pytest.raises(ClientClosedRequest):
        await asyncio.wait_for(cancel_on_disconnect(backend.infer(SD, {}, ["images"]), gone), 5)
    await asyncio.sleep(0)
    assert backend.cancelled


async def test_a_client_that_stays_gets_the_result():
    async def here():
        return False

    async def work():
        await asyncio.sleep(0.6)
        return 42

    assert await cancel_on_disconnect(work(), here) == 42
