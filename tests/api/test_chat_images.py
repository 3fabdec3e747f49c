"""Chat with image_url content parts, in-process against FakeBackend: what reaches Triton's `image` input,
the prompt's image placeholders, and the 400s for images a model or the URL guard refuses."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from tests.api import fake_llm
from tests.api.conftest import assert_error

URL = "/v1/chat/completions"
# A multimodal template: content is a list of parts, images become <image>.
VLM_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture
def settings():
    from frontend.settings import Settings

    return Settings(model_index_ttl_s=0, max_body_bytes=1 << 20)


@pytest.fixture
def vlm(backend) -> str:
    backend.models["vlm"] = {**fake_llm.PARAMETERS, "chat_template": VLM_TEMPLATE, "supports_images": "true",
                             "max_images": "2"}
    backend.states["vlm"] = "READY"
    return "vlm"


def png(color=(255, 0, 0), size=(6, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def image_part(url: str, **extra) -> dict:
    return {"type": "image_url", "image_url": {"url": url, **extra}}


def sent(backend) -> dict:
    _model, inputs = backend.calls[-1]
    return inputs


async def test_data_uri_images_reach_the_image_input_in_prompt_order(client, backend, vlm):
    red, green, blue = png((255, 0, 0)), png((0, 255, 0)), png((0, 0, 255))
    messages = [
        {"role": "user", "content": [image_part(data_uri(red), detail="low"), {"type": "text", "text": "and"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "this"}, image_part(data_uri(green), detail="high")]},
    ]
    response = await client.post(URL, json={"model": vlm, "messages": messages, "max_tokens": 3})
    assert response.status_code == 200, response.text
    inputs = sent(backend)
    assert [base64.b64decode(b) for b in inputs["image"]] == [red, green]
    assert inputs["text_input"][0].decode() == "<|user|><image>and<|assistant|>ok<|user|>this<image><|assistant|>"
    assert blue not in [base64.b64decode(b) for b in inputs["image"]]


async def test_text_only_request_to_a_vision_model_sends_no_image_input(client, backend, vlm):
    response = await client.post(URL, json={"model": vlm, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200, response.text
    assert "image" not in sent(backend)
    assert sent(backend)["text_input"][0].decode() == "<|user|>hi<|assistant|>"


async def test_streaming_with_an_image(client, backend, vlm):
    messages = [{"role": "user", "content": [image_part(data_uri(png())), {"type": "text", "text": "?"}]}]
    async with client.stream("POST", URL, json={"model": vlm, "messages": messages, "stream": True}) as response:
        body = (await response.aread()).decode()
    assert response.status_code == 200
    assert body.rstrip().endswith("data: [DONE]")
    assert len(sent(backend)["image"]) == 1


async def test_an_image_to_a_text_only_model_is_400(client, backend):
    messages = [{"role": "user", "content": [image_part(data_uri(png()))]}]
    error = assert_error(await client.post(URL, json={"model": "llm", "messages": messages}), 400,
                         param="messages[0].content[0].type")
    assert "does not accept images" in error["message"]
    assert backend.calls == []


@pytest.mark.parametrize(("url", "code", "message"), [
    (data_uri(b"not an image"), "invalid_image", "cannot be decoded"),
    (data_uri(png(), "text/plain"), "invalid_image", "not image/"),
    ("http://127.0.0.1:9/cat.png", "image_url_refused", "127.0.0.1"),
    ("http://169.254.169.254/latest/meta-data", "image_url_refused", "169.254.169.254"),
    ("http://[::1]/x.png", "image_url_refused", "::1"),
    ("file:///etc/passwd", "image_url_refused", "http, https or data"),
])
async def test_refused_images_say_which_and_where(client, backend, vlm, url, code, message):
    messages = [{"role": "user", "content": [{"type": "text", "text": "look"}, image_part(url)]}]
    error = assert_error(await client.post(URL, json={"model": vlm, "messages": messages}), 400,
                         param="messages[0].content[1].image_url", code=code)
    assert message in error["message"]
    assert backend.calls == []


async def test_more_images_than_the_model_takes(client, backend, vlm):
    messages = [{"role": "user", "content": [image_part(data_uri(png()))] * 3}]
    error = assert_error(await client.post(URL, json={"model": vlm, "messages": messages}), 400,
                         code="too_many_images")
    assert "at most 2" in error["message"]


async def test_unknown_part_types_are_refused_for_vision_models_too(client, vlm):
    messages = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]
    assert_error(await client.post(URL, json={"model": vlm, "messages": messages}), 400,
                 param="messages[0].content[0].type")


def test_chat_with_fetched_images_is_never_answered_from_the_cache():
    from frontend.cache import cacheable

    def body(url: str) -> dict:
        return {"model": "vlm", "temperature": 0, "messages": [{"role": "user", "content": [image_part(url)]}]}

    assert cacheable("/v1/chat/completions", body(data_uri(png())))  # the bytes are in the body
    assert not cacheable("/v1/chat/completions", body("https://example.com/cat.png"))
