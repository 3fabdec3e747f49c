"""Chat image inputs as an attacker would send them (issue 11, part 6).

Against the real stack (the session's frontend and tritonserver, tiny-llava-random): a request of four
7000x7000 PNGs (small on the wire, 196 M pixels; it once cost the LLaVA process 10 s of CPU) is refused
from the images' headers in well under a second, and so is a request whose images are each within limits
but together over the request's pixel budget; an EPS image (Ghostscript) is refused unopened.

In-process (the app with a fake backend): image URLs whose addresses are NAT64, 6to4, Teredo,
IPv4-compatible or IPv4-mapped forms are refused. The fetcher's HTTP transport there is one that records
and never connects, so a guard that let an address through fails the test without sending a packet.
"""

from __future__ import annotations

import base64
import io
import math
import struct
import time
import zlib

import httpx
import pytest
from PIL import Image

from export_scripts.llava import TINY_NAME as VLM
from frontend.app import create_app
from frontend.images_fetch import AddressGuard, ImageFetcher
from frontend.settings import Settings
from tests.api import fake_llm
from tests.api.conftest import FakeBackend, assert_error

URL = "/v1/chat/completions"


def image_param(index: int) -> str:
    return f"messages[0].content[{index}].image_url"


def grey_png(width: int, height: int) -> bytes:
    """A greyscale PNG of zeros, compressed with zlib: 7000x7000 is about 48 KB."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * ((width + 1) * height), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def chat(*urls: str, model: str = VLM) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": [
        *parts, {"type": "text", "text": "What is in these images?"}]}]}


def timed_post(http: httpx.Client, body: dict) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = http.post(URL, json=body)
    return response, time.perf_counter() - start


@pytest.mark.integration
def test_an_eps_image_is_refused(http):
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 0, 0)).save(buffer, format="EPS")  # written without Ghostscript
    response = http.post(URL, json=chat(data_uri(buffer.getvalue(), "image/eps")))
    error = assert_error(response, 400, param=image_param(0), code="invalid_image")
    assert "PNG, JPEG, WebP, GIF or BMP" in error["message"]


@pytest.mark.integration
def test_four_7000px_pngs_are_refused_in_well_under_a_second(http, frontend):
    huge = data_uri(grey_png(7000, 7000))
    body = chat(*[huge] * 4)
    assert len(httpx.Request("POST", URL, json=body).content) < 300_000  # about 260 KB on the wire
    assert 4 * 7000 * 7000 > frontend.settings.image_max_request_pixels
    http.post(URL, json=chat(data_uri(b"warm-up: the model's config is fetched and cached")))
    response, seconds = timed_post(http, body)
    error = assert_error(response, 400, param=image_param(0), code="image_pixels_exceeded")
    assert "196000000 pixels together" in error["message"]
    assert seconds < 1.0, f"refused after {seconds:.2f} s"


@pytest.mark.integration
def test_images_within_limits_one_by_one_are_refused_together(http, frontend):
    """Each image is under the per-image limit and the budget; the four together are over the budget."""
    budget = frontend.settings.image_max_request_pixels
    side = math.isqrt(budget // 3)
    assert 3 * side * side <= budget < 4 * side * side <= 4 * frontend.settings.image_max_pixels
    image = data_uri(grey_png(side, side))
    http.post(URL, json=chat(data_uri(b"warm-up")))
    response, seconds = timed_post(http, chat(*[image] * 4))
    error = assert_error(response, 400, param=image_param(3), code="image_pixels_exceeded")
    assert f"over the {budget} pixel budget" in error["message"]
    assert seconds < 1.0, f"refused after {seconds:.2f} s"


# An address of each IPv6 form that carries an IPv4 address (loopback, here).
TRANSITION = {
    "NAT64": "64:ff9b::7f00:1",
    "NAT64 local-use": "64:ff9b:1::7f00:1",
    "6to4": "2002:7f00:1::1",
    "Teredo": "2001:0:4136:e378:8000:63bf:80ff:fffe",
    "IPv4-compatible": "::7f00:1",
    "IPv4-mapped": "::ffff:127.0.0.1",
}


@pytest.fixture
async def app_client():
    backend = FakeBackend()
    backend.models["vlm"] = {**fake_llm.PARAMETERS, "supports_images": "true", "chat_template": (
        "{% for m in messages %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>"
        "{% else %}{{ p['text'] }}{% endif %}{% endfor %}{% endfor %}")}
    backend.states["vlm"] = "READY"
    sent: list[httpx.Request] = []

    def never_connect(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(502)

    app = create_app(Settings(model_index_ttl_s=0), backend=backend)
    async with app.router.lifespan_context(app):
        guard_only = ImageFetcher(AddressGuard(), transport=httpx.MockTransport(never_connect))
        app.state.services.chat.images = guard_only
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, sent


@pytest.mark.parametrize("address", TRANSITION.values(), ids=TRANSITION.keys())
async def test_addresses_that_embed_ipv4_are_refused(app_client, address):
    client, sent = app_client
    response = await client.post(URL, json=chat(f"http://[{address}]/cat.png", model="vlm"))
    error = assert_error(response, 400, param=image_param(0), code="image_url_refused")
    assert address in error["message"] and "range" in error["message"]
    assert sent == []
