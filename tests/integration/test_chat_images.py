"""Chat with images end to end: the official openai SDK -> frontend -> real Triton (tiny-llava-random).

Images come as data URIs and from a local HTTP server on a loopback port the frontend's allowlist names.
"""

from __future__ import annotations

import base64
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
from openai import OpenAI
from PIL import Image

from export_scripts import llava
from export_scripts.__main__ import main as export_main
from frontend.settings import Settings
from launcher.triton import TritonServer
from tests.conftest import REPOSITORY
from tests.integration import llm_tiny
from tests.stack import run_frontend

pytestmark = pytest.mark.integration

VLM, TEXT_ONLY = llava.TINY_NAME, llm_tiny.NAME
GREEDY = {"max_tokens": 8, "temperature": 0, "extra_body": {"ignore_eos": True}}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


IMAGES = {"/parity.png": png(llava.parity_image()), "/green.png": png(Image.new("RGB", (50, 30), (0, 200, 0)))}


class ImageHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body = IMAGES.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "image/png" if body else "text/plain")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")


@pytest.fixture(scope="module")
def image_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ImageHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def client(tmp_path_factory, image_server):
    """Triton with tiny-llava-random (exported as `make export` does) and the tiny text-only chat model."""
    assert export_main(["llava", f"--repository={REPOSITORY}"]) == 0
    root = tmp_path_factory.mktemp("vlm-repository")
    for name in (VLM, f"{VLM}_vision"):
        (root / name).symlink_to(REPOSITORY / name, target_is_directory=True)
    llm_tiny.model_repository(root, TEXT_ONLY)
    allow = image_server.removeprefix("http://")
    with TritonServer(root, [VLM, f"{VLM}_vision", TEXT_ONLY]) as triton:
        settings = Settings(triton_grpc_url=triton.grpc_url, model_index_ttl_s=1.0, image_url_allowlist=[allow])
        with run_frontend(settings) as frontend:
            yield OpenAI(base_url=frontend.base_url, api_key="unused", max_retries=0, timeout=120)


def data_uri(path: str) -> str:
    return "data:image/png;base64," + base64.b64encode(IMAGES[path]).decode()


def ask(url: str, text: str = "What is in this image?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url, "detail": "low"}},
                                         {"type": "text", "text": text}]}]


def test_data_uri_image_answer(client):
    response = client.chat.completions.create(model=VLM, messages=ask(data_uri("/parity.png")), **GREEDY)
    choice = response.choices[0]
    assert choice.message.content and choice.finish_reason == "length"
    assert response.usage.completion_tokens == 8
    assert response.usage.prompt_tokens > 16  # the image's 16 tokens are counted


def test_streamed_answer_equals_the_whole_one(client):
    messages = ask(data_uri("/green.png"))
    whole = client.chat.completions.create(model=VLM, messages=messages, **GREEDY).choices[0].message.content
    chunks = list(client.chat.completions.create(model=VLM, messages=messages, stream=True, **GREEDY))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert chunks[-1].choices[0].finish_reason == "length"


def test_http_image_from_an_allowlisted_loopback_port(client, image_server):
    fetched = client.chat.completions.create(model=VLM, messages=ask(f"{image_server}/parity.png"), **GREEDY)
    inline = client.chat.completions.create(model=VLM, messages=ask(data_uri("/parity.png")), **GREEDY)
    other = client.chat.completions.create(model=VLM, messages=ask(f"{image_server}/green.png"), **GREEDY)
    assert fetched.choices[0].message.content == inline.choices[0].message.content
    assert other.choices[0].message.content != inline.choices[0].message.content


@pytest.mark.parametrize("url", ["http://10.0.0.1/cat.png", "http://127.0.0.1:1/cat.png",
                                 "http://169.254.169.254/latest/meta-data/"])
def test_private_addresses_are_refused(client, url):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=VLM, messages=ask(url), **GREEDY)
    assert caught.value.code == "image_url_refused"
    assert caught.value.body["param"] == "messages[0].content[0].image_url"


def test_a_missing_image_is_a_fetch_failure(client, image_server):
    with pytest.raises(openai.BadRequestError, match="HTTP 404") as caught:
        client.chat.completions.create(model=VLM, messages=ask(f"{image_server}/nope.png"), **GREEDY)
    assert caught.value.code == "image_fetch_failed"


def test_a_text_only_model_refuses_images(client):
    with pytest.raises(openai.BadRequestError, match="does not accept images") as caught:
        client.chat.completions.create(model=TEXT_ONLY, messages=ask(data_uri("/green.png")), **GREEDY)
    assert caught.value.body["param"] == "messages[0].content[0].type"


def test_an_undecodable_image_is_refused(client):
    url = "data:image/png;base64," + base64.b64encode(b"definitely not a png").decode()
    with pytest.raises(openai.BadRequestError, match="cannot be decoded") as caught:
        client.chat.completions.create(model=VLM, messages=ask(url), **GREEDY)
    assert caught.value.code == "invalid_image"


def test_text_and_image_requests_in_flight_together_all_complete(client, image_server):
    def one(i: int) -> str:
        if i % 3 == 0:
            messages = [{"role": "user", "content": f"Just text, number {i}"}]
        elif i % 3 == 1:
            messages = ask(data_uri("/green.png"), f"Image question {i}")
        else:
            messages = ask(f"{image_server}/parity.png", f"Fetched image question {i}")
        if i % 2:
            chunks = list(client.chat.completions.create(model=VLM, messages=messages, stream=True, **GREEDY))
            return chunks[-1].choices[0].finish_reason
        return client.chat.completions.create(model=VLM, messages=messages, **GREEDY).choices[0].finish_reason

    with ThreadPoolExecutor(8) as pool:
        reasons = list(pool.map(one, range(12), timeout=300))
    assert reasons == ["length"] * 12
