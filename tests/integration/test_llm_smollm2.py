"""The exported SmolLM2 folder on the real tritonserver: chat template from the config, EOS, streaming."""

from __future__ import annotations

import asyncio

import jinja2
import pytest
from tokenizers import Tokenizer
from tritonclient.grpc.aio import InferenceServerClient

from tests.integration.test_llm_triton import infer, make_request, texts

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"


@pytest.fixture
async def client(triton):  # the session's tritonserver with every exported model
    client = InferenceServerClient(triton.grpc_url)
    yield client
    await client.close()


async def chat_prompt(client, question: str) -> str:
    """Render the prompt as the frontend does: the model's own template from its config parameters."""
    from tests.conftest import TRITON_API_SECRET  # the session's Triton restricts its model-config protocol
    from frontend.triton import TRITON_GRPC_API_METADATA

    config = (await client.get_model_config(MODEL, as_json=True,
                                            headers={TRITON_GRPC_API_METADATA: TRITON_API_SECRET}))["config"]
    params = {k: v["string_value"] for k, v in config["parameters"].items()}
    template = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(params["chat_template"])
    return template.render(messages=[{"role": "user", "content": question}], add_generation_prompt=True,
                           bos_token=params["bos_token"], eos_token=params["eos_token"])


async def test_answers_and_stops_at_end_of_sequence(client, repository):
    prompt = await chat_prompt(client, "What is 2+2?")
    (result,) = await infer(client, make_request(prompt, MODEL, max_tokens=64, temperature=0))
    text = result.as_numpy("text_output")[0].decode()
    assert "4" in text and "<|im_end|>" not in text
    assert result.as_numpy("finish_reason")[0] == b"stop"
    assert 0 < result.as_numpy("num_output_tokens")[0] < 64
    tokenizer = Tokenizer.from_file(str(repository / MODEL / "1" / "tokenizer.json"))
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False).ids
    assert result.as_numpy("num_input_tokens")[0] == len(prompt_ids)


async def test_streamed_deltas_add_up_to_the_whole_answer(client):
    prompt = await chat_prompt(client, "Write a haiku about the sea.")
    whole = texts(await infer(client, make_request(prompt, MODEL, max_tokens=40, temperature=0)))
    streamed = await infer(client, make_request(prompt, MODEL, stream=True, max_tokens=40, temperature=0))
    assert texts(streamed) == whole and len(streamed) > 1


async def test_a_batch_of_mixed_lengths_answers_as_alone(client):
    """Prompts of different lengths prefilled and decoded together give, token for token, their answers alone
    (issue 13: with left padding the int8 kernels flipped near-ties)."""
    questions = ["What is 2+2?", "Name three colors of the rainbow, please.", "Hi!"]
    prompts = [await chat_prompt(client, q) for q in questions]
    alone = [texts(await infer(client, make_request(p, MODEL, max_tokens=32, temperature=0))) for p in prompts]
    together = await asyncio.gather(*(infer(client, make_request(p, MODEL, stream=True, max_tokens=32,
                                                                  temperature=0)) for p in prompts))
    assert [texts(r) for r in together] == alone
