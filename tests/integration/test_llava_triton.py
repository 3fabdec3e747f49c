"""The LLaVA Triton models (decoupled Python model + vision model over BLS) on the real tritonserver.

The served greedy text for an image must equal transformers' `generate` on the full PyTorch model (the tiny
model is rebuilt from its seed), so preprocessing, the vision model, the feature placement and the engine
are all checked together.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from tritonclient.grpc import InferenceServerException, InferInput
from tritonclient.grpc.aio import InferenceServerClient

from export_scripts import llava
from export_scripts.__main__ import main as export_main
from launcher.triton import TritonServer
from tests.conftest import REPOSITORY
from triton_models.contract import INVALID_IMAGE, ModelError

pytestmark = pytest.mark.integration

MODEL, VISION = llava.TINY_NAME, f"{llava.TINY_NAME}_vision"
FLAGS = ("return_finish_reason", "return_num_input_tokens", "return_num_output_tokens")
GREEDY = {"temperature": 0, "ignore_eos": True, "max_tokens": 10}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def b64(image: Image.Image) -> bytes:
    return base64.b64encode(png(image))


def chat_prompt(text: str, images: int = 1) -> str:
    parts = [{"type": "image"}] * images + [{"type": "text", "text": text}]
    return llava.tiny_tokenizer().apply_chat_template([{"role": "user", "content": parts}], tokenize=False,
                                                      add_generation_prompt=True)


@pytest.fixture(scope="module")
def llava_triton():
    assert export_main(["llava", f"--repository={REPOSITORY}"]) == 0
    with TritonServer(REPOSITORY, [MODEL, VISION]) as server:
        yield server


@pytest.fixture
async def client(llava_triton):
    client = InferenceServerClient(llava_triton.grpc_url)
    yield client
    await client.close()


def make_request(prompt: str, images: list[bytes] = (), *, stream: bool = False, **params) -> dict:
    def tensor(name, values, dtype):
        t = InferInput(name, [len(values)], dtype)
        t.set_data_from_numpy(np.array(values, dtype=object if dtype == "BYTES" else bool))
        return t

    inputs = [tensor("text_input", [prompt.encode()], "BYTES"), tensor("stream", [stream], "BOOL"),
              tensor("sampling_parameters", [json.dumps(params).encode()], "BYTES"),
              tensor("exclude_input_in_output", [True], "BOOL"), *(tensor(f, [True], "BOOL") for f in FLAGS)]
    if images:
        inputs.append(tensor("image", list(images), "BYTES"))
    return {"model_name": MODEL, "inputs": inputs}


async def infer(client, request: dict) -> list:
    async def one():
        yield request

    results = []
    async for result, error in client.stream_infer(one()):
        if error is not None:
            raise error
        results.append(result)
    return results


def text(results) -> str:
    return "".join(r.as_numpy("text_output")[0].decode() for r in results)


@pytest.fixture(scope="module")
def reference():
    """Greedy text of the full PyTorch model for a prompt and images (transformers' processor and generate)."""
    processor, model = llava.tiny_model()

    def generate(prompt: str, images: list[Image.Image], max_tokens: int) -> tuple[str, int]:
        batch = processor(text=[prompt], images=images or None, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**batch, do_sample=False, max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                                 pad_token_id=0)
        tokens = out[0, batch["input_ids"].shape[1]:].tolist()
        return processor.tokenizer.decode(tokens, skip_special_tokens=True), batch["input_ids"].shape[1]

    return generate


async def test_image_answer_equals_transformers_generate(client, reference):
    image = llava.parity_image()
    prompt = chat_prompt("Describe the picture.")
    (result,) = await infer(client, make_request(prompt, [b64(image)], **GREEDY))
    expected, prompt_tokens = reference(prompt, [image], GREEDY["max_tokens"])
    assert result.as_numpy("text_output")[0].decode() == expected
    assert result.as_numpy("num_input_tokens")[0] == prompt_tokens  # image tokens included
    assert result.as_numpy("finish_reason")[0] == b"length"


async def test_two_images_in_order(client, reference):
    first, second = llava.parity_image(), Image.new("RGB", (50, 70), (10, 200, 90))
    prompt = chat_prompt("Compare them.", images=2)
    (result,) = await infer(client, make_request(prompt, [b64(first), b64(second)], **GREEDY))
    expected, _ = reference(prompt, [first, second], GREEDY["max_tokens"])
    assert result.as_numpy("text_output")[0].decode() == expected
    (swapped,) = await infer(client, make_request(prompt, [b64(second), b64(first)], **GREEDY))
    assert swapped.as_numpy("text_output")[0].decode() != expected


async def test_streaming_with_an_image_equals_whole(client):
    prompt, image = chat_prompt("What colour?"), b64(Image.new("RGB", (40, 40), (255, 0, 0)))
    whole = text(await infer(client, make_request(prompt, [image], **GREEDY)))
    results = await infer(client, make_request(prompt, [image], stream=True, **GREEDY))
    assert len(results) == GREEDY["max_tokens"]
    assert text(results) == whole
    assert results[-1].as_numpy("finish_reason")[0] == b"length"


async def test_the_image_changes_the_answer(client):
    prompt = chat_prompt("What colour?")
    red = text(await infer(client, make_request(prompt, [b64(Image.new("RGB", (40, 40), (255, 0, 0)))], **GREEDY)))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    other = text(await infer(client, make_request(prompt, [b64(noise)], **GREEDY)))
    assert red != other


async def test_text_and_image_requests_batch_together(client):
    prompts = [(chat_prompt(f"Question {i}") if i % 2 else f"Plain prompt {i}",
                [b64(Image.new("RGB", (30 + i, 40), (20 * i, 100, 50)))] if i % 2 else [])
               for i in range(8)]
    alone = [text(await infer(client, make_request(p, imgs, **GREEDY))) for p, imgs in prompts]
    together = await asyncio.gather(*(infer(client, make_request(p, imgs, stream=True, **GREEDY))
                                      for p, imgs in prompts))
    assert [text(r) for r in together] == alone


async def test_seeded_sampling_with_an_image_repeats(client):
    prompt, image = chat_prompt("Tell me."), b64(llava.parity_image())
    params = {"temperature": 1.0, "top_p": 0.9, "seed": 5, "max_tokens": 8, "ignore_eos": True}
    first = text(await infer(client, make_request(prompt, [image], **params)))
    assert first == text(await infer(client, make_request(prompt, [image], **params)))


@pytest.mark.parametrize(("prompt", "images", "message"), [
    (chat_prompt("Hi"), [base64.b64encode(b"not an image")], "image 0: the image cannot be decoded"),
    (chat_prompt("Hi"), [b"%%% not base64 %%%"], "image 0: the image is not valid base64"),
    (chat_prompt("Hi", images=2), [b64(Image.new("RGB", (8, 8)))], "2 <image> placeholder.* for 1 image"),
    (chat_prompt("Hi"), [], "placeholder.* but no image"),
    (chat_prompt("Hi", images=5), [b64(Image.new("RGB", (8, 8)))] * 5, "at most 4"),
])
async def test_bad_image_requests_are_invalid_arguments(client, prompt, images, message):
    with pytest.raises(InferenceServerException, match=message) as caught:
        await infer(client, make_request(prompt, images, **GREEDY))
    error = ModelError.decode(caught.value.message())  # typed: the frontend reads code and param, not prose
    assert error.status == 400 and "BytesIO" not in error.message
    if message.startswith("image 0"):
        assert (error.code, error.param) == (INVALID_IMAGE, "image")
    assert text(await infer(client, make_request("Still serving", **GREEDY)))
