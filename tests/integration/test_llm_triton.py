"""The chat-LLM Triton model (decoupled, vLLM tensor contract) on the real tritonserver, tiny random model."""

from __future__ import annotations

import asyncio
import json

import pytest
from tritonclient.grpc import InferenceServerException
from tritonclient.grpc.aio import InferenceServerClient

from launcher.triton import TritonServer
from tests.integration import llm_tiny
from tests.integration.llm_tiny import FLAGS, make_request
from triton_models.contract import CONTEXT_LENGTH_EXCEEDED, OVERLOADED, UNSUPPORTED_PARAMETER, ModelError

pytestmark = pytest.mark.integration

MODEL = llm_tiny.NAME
# One running sequence, one waiting request, a context long enough that a request never ends on its own.
SMALL = "tiny-llm-small"
ENDLESS = 60000


@pytest.fixture(scope="module")
def llm_triton(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm-repository")
    llm_tiny.model_repository(root)
    llm_tiny.model_repository(root, SMALL, context_length=2 * ENDLESS, max_kv_tokens=2 * ENDLESS,
                              max_num_seqs=1, max_queue=1)
    with TritonServer(root, [MODEL, SMALL]) as server:
        yield server


@pytest.fixture
async def client(llm_triton):
    client = InferenceServerClient(llm_triton.grpc_url)
    yield client
    await client.close()


async def one(request: dict):
    yield request


async def infer(client, request: dict) -> list:
    """All responses of one request; raises the model's error."""
    results = []
    async for result, error in client.stream_infer(one(request)):
        if error is not None:
            raise error
        results.append(result)
    return results


def texts(results) -> str:
    return "".join(r.as_numpy("text_output")[0].decode() for r in results)


async def generate(client, prompt: str, **params) -> str:
    return texts(await infer(client, make_request(prompt, **params)))


async def test_non_streaming_returns_one_response_with_counts(client):
    results = await infer(client, make_request("Hello there", max_tokens=7, temperature=0, ignore_eos=True))
    assert len(results) == 1
    (result,) = results
    assert result.as_numpy("finish_reason")[0] == b"length"
    assert result.as_numpy("num_output_tokens")[0] == 7
    assert result.as_numpy("num_input_tokens")[0] == 2  # "Hello", " there"
    assert result.as_numpy("text_output")[0].decode().strip()


async def test_streaming_sends_a_delta_per_token_and_the_reason_last(client):
    whole = await generate(client, "Tell me a story", max_tokens=6, temperature=0, ignore_eos=True)
    results = await infer(client, make_request("Tell me a story", stream=True, max_tokens=6, temperature=0,
                                               ignore_eos=True))
    assert len(results) == 6
    assert texts(results) == whole
    assert [int(r.as_numpy("num_output_tokens")[0]) for r in results] == [1] * 6
    assert all(r.as_numpy("finish_reason") is None for r in results[:-1])
    assert results[-1].as_numpy("finish_reason")[0] == b"length"


async def test_prompt_is_prepended_unless_excluded(client):
    text = await generate(client, "Hello there", exclude_input=False, max_tokens=3, temperature=0)
    assert text.startswith("Hello there") and len(text) > len("Hello there")


async def test_same_seed_same_text(client):
    params = {"max_tokens": 12, "temperature": 1.0, "top_p": 0.9, "seed": 1234, "ignore_eos": True}
    first = await generate(client, "Once upon a time", **params)
    second = await generate(client, "Once upon a time", **params)
    other = await generate(client, "Once upon a time", **{**params, "seed": 99})
    assert first == second
    assert other != first


async def test_seeded_text_does_not_depend_on_the_rest_of_the_batch(client):
    params = {"max_tokens": 10, "temperature": 0.9, "top_k": 50, "seed": 77, "ignore_eos": True}
    alone = await generate(client, "Seeded", **params)
    crowd = [infer(client, make_request(f"Other {i}", stream=True, max_tokens=12, temperature=1.0))
             for i in range(4)]
    together, *_ = await asyncio.gather(generate(client, "Seeded", **params), *crowd)
    assert together == alone


async def test_n_choices_come_as_one_array_per_output(client):
    (result,) = await infer(client, make_request("Pick", max_tokens=5, temperature=1.0, seed=3, n=2,
                                                 ignore_eos=True))
    choices = result.as_numpy("text_output")
    assert choices.shape == (2,) and choices[0] != choices[1]
    assert result.as_numpy("finish_reason").tolist() == [b"length", b"length"]
    assert result.as_numpy("num_output_tokens").tolist() == [5, 5]


async def test_stop_string_is_not_emitted(client):
    full = await generate(client, "The weather today", max_tokens=12, temperature=0, ignore_eos=True)
    stop = full[len(full) // 2: len(full) // 2 + 3]
    results = await infer(client, make_request("The weather today", max_tokens=12, temperature=0,
                                               ignore_eos=True, stop=[stop]))
    assert texts(results) == full[: full.index(stop)]
    assert results[-1].as_numpy("finish_reason")[0] == b"stop"


async def test_logprobs_as_the_vllm_backend_sends_them(client):
    request = make_request("Hi", max_tokens=3, temperature=0, logprobs=2, ignore_eos=True,
                           flags=(*FLAGS, "return_logprobs"))
    (result,) = await infer(client, request)
    entries = json.loads(result.as_numpy("logprobs")[0])
    assert len(entries) == 3
    for entry in entries:
        best = max(entry.values(), key=lambda e: e["logprob"])
        assert best["rank"] == 1 and best["logprob"] <= 0.0 and isinstance(best["decoded_token"], str)


async def test_concurrent_streams_get_what_they_get_alone(client):
    prompts = [f"Question {i}: " + "why " * i for i in range(8)]
    alone = [await generate(client, p, max_tokens=10, temperature=0, ignore_eos=True) for p in prompts]
    together = await asyncio.gather(*(
        infer(client, make_request(p, stream=True, max_tokens=10, temperature=0, ignore_eos=True))
        for p in prompts
    ))
    assert [texts(r) for r in together] == alone


async def test_more_streams_than_batch_rows_some_cancelled(client):
    """24 streams on 16 rows: 8 wait for a slot; every third leaves after its first token; the rest finish."""

    async def consume(i: int):
        stream = client.stream_infer(one(make_request(f"Stream {i}", stream=True, max_tokens=20, ignore_eos=True,
                                                      flags=("return_finish_reason", "return_num_output_tokens"))))
        tokens, reason = 0, None
        async for result, error in stream:
            assert error is None
            tokens += int(result.as_numpy("num_output_tokens")[0])
            if result.as_numpy("finish_reason") is not None:
                reason = result.as_numpy("finish_reason")[0]
            if i % 3 == 0:
                stream.cancel()
                return None
        return tokens, reason

    results = await asyncio.wait_for(asyncio.gather(*(consume(i) for i in range(24))), timeout=120)
    assert [r for i, r in enumerate(results) if i % 3] == [(20, b"length")] * 16
    assert await generate(client, "Still serving", max_tokens=3)


def model_error(caught) -> ModelError:
    """The typed error a failed call carried (the frontend decodes it the same way)."""
    error = ModelError.decode(caught.value.message())
    assert error is not None, caught.value.message()
    return error


async def test_unknown_sampling_parameter_is_named(client):
    with pytest.raises(InferenceServerException) as caught:
        await infer(client, make_request("Hi", best_of=2))
    assert (model_error(caught).code, model_error(caught).param) == (UNSUPPORTED_PARAMETER, "best_of")


async def test_prompt_over_context_length(client):
    prompt = "word " * (llm_tiny.CONTEXT_LENGTH + 10)
    # gRPC streams carry only the error message: the typed error travels inside it
    with pytest.raises(InferenceServerException) as caught:
        await infer(client, make_request(prompt, max_tokens=1))
    error = model_error(caught)
    assert error.code == CONTEXT_LENGTH_EXCEEDED and "maximum context length is 256 tokens" in error.message


async def test_cancelled_stream_frees_its_slot(client):
    endless = client.stream_infer(one(make_request("Go on", SMALL, stream=True, max_tokens=ENDLESS,
                                                   ignore_eos=True)))
    received = 0
    async for _result, error in endless:
        assert error is None
        received += 1
        if received == 3:
            break
    endless.cancel()
    # The small model runs one sequence at a time: this completes only if the endless one left the batch.
    nxt = generate(client, "Next", model=SMALL, max_tokens=4, temperature=0)
    text = await asyncio.wait_for(nxt, timeout=60)
    assert text


async def test_full_queue_is_overloaded_not_a_hang(client):
    running = client.stream_infer(one(make_request("Go on", SMALL, stream=True, max_tokens=ENDLESS,
                                                   ignore_eos=True)))
    await anext(running)  # admitted: holds the only slot
    waiting = client.stream_infer(one(make_request("Wait", SMALL, stream=True, max_tokens=4,
                                                   ignore_eos=True)))
    waiting_task = asyncio.ensure_future(anext(waiting))
    await asyncio.sleep(1.0)  # let it reach the queue
    try:
        with pytest.raises(InferenceServerException) as caught:
            await asyncio.wait_for(infer(client, make_request("One more", SMALL, max_tokens=2)), timeout=30)
        assert model_error(caught).code == OVERLOADED
    finally:
        running.cancel()
        await asyncio.wait_for(waiting_task, timeout=60)  # the waiting request is served once the slot frees
        waiting.cancel()
