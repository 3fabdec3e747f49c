"""The Responses API against the real stack (SmolLM2 through Triton), through the official openai SDK and the
OpenAI Agents SDK's default model class, unchanged."""

from __future__ import annotations

import asyncio
import json

import pytest
from openai import AsyncOpenAI
from pydantic import BaseModel, Field

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
NO_STORE = {"Cache-Control": "no-store"}
MULTIPLY = {"type": "function", "name": "multiply", "description": "Multiply two integers.",
            "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                           "required": ["a", "b"], "additionalProperties": False}}


def test_create_retrieve_continue_and_delete(openai_client):
    first = openai_client.responses.create(model=MODEL, input="What is the capital of France?",
                                           instructions="Answer in one sentence.", max_output_tokens=24,
                                           temperature=0)
    assert first.status in ("completed", "incomplete") and first.output_text.strip()
    assert first.usage.input_tokens > 10 and 0 < first.usage.output_tokens <= 24
    assert openai_client.responses.retrieve(first.id).output_text == first.output_text
    second = openai_client.responses.create(model=MODEL, input="And of Italy?", previous_response_id=first.id,
                                            max_output_tokens=24, temperature=0)
    assert second.previous_response_id == first.id and second.output_text.strip()
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens  # the whole chain
    items = openai_client.responses.input_items.list(second.id)
    assert [i.content[0].text for i in items.data] == ["And of Italy?"]
    openai_client.responses.delete(first.id)
    with pytest.raises(Exception) as gone:
        openai_client.responses.retrieve(first.id)
    assert getattr(gone.value, "status_code", None) == 404


def test_streamed_events_assemble_into_the_final_response(openai_client):
    events = list(openai_client.responses.create(model=MODEL, input="Name three colours.", max_output_tokens=24,
                                                  temperature=0, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas and deltas == final.output_text
    assert openai_client.responses.retrieve(final.id).output_text == final.output_text
    with openai_client.responses.stream(model=MODEL, input="Say hello.", max_output_tokens=60,
                                        temperature=0) as stream:  # the SDK's helper needs `completed`
        assert stream.get_final_response().output_text.strip()


class City(BaseModel):
    name: str = Field(max_length=40)
    country: str = Field(max_length=40)


def test_parse_with_a_pydantic_text_format(openai_client):
    parsed = openai_client.responses.parse(model=MODEL, input="Name a big city in Japan.", text_format=City,
                                           max_output_tokens=60, temperature=0, extra_headers=NO_STORE)
    assert isinstance(parsed.output_parsed, City) and parsed.output_parsed.name


def test_a_forced_function_call_and_its_output_round_trip(openai_client):
    first = openai_client.responses.create(model=MODEL, input="What is 6 times 7?", tools=[MULTIPLY],
                                           tool_choice={"type": "function", "name": "multiply"},
                                           parallel_tool_calls=False, max_output_tokens=60, temperature=0)
    (call,) = [item for item in first.output if item.type == "function_call"]
    arguments = json.loads(call.arguments)
    assert call.name == "multiply" and set(arguments) == {"a", "b"}
    assert all(isinstance(v, int) for v in arguments.values())
    final = openai_client.responses.create(
        model=MODEL, previous_response_id=first.id, tools=[MULTIPLY], tool_choice="none", max_output_tokens=24,
        temperature=0, input=[{"type": "function_call_output", "call_id": call.call_id,
                               "output": str(arguments["a"] * arguments["b"])}])
    assert final.status in ("completed", "incomplete") and final.output_text.strip()


def responses_served(http) -> float:
    """POST /v1/responses answered so far, from the frontend's metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for family in text_string_to_metric_families(http.get("/metrics").text)
               for s in family.samples if s.name == "modelgate_requests_total"
               and s.labels.get("endpoint") == "/v1/responses" and s.labels.get("status") == "200")


def test_the_agents_sdk_runs_with_its_default_model_class(frontend, http):
    from agents import Agent, ModelSettings, Runner, function_tool, set_default_openai_client, set_tracing_disabled

    @function_tool
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    async def run():
        set_tracing_disabled(True)
        client = AsyncOpenAI(base_url=frontend.base_url, api_key="unused", max_retries=0, default_headers=NO_STORE)
        set_default_openai_client(client, use_for_tracing=False)
        chat = Agent(name="assistant", instructions="Answer in one short sentence.", model=MODEL,
                     model_settings=ModelSettings(temperature=0, max_tokens=24))
        answer = await Runner.run(chat, "What is the capital of France?")
        assert isinstance(answer.final_output, str) and answer.final_output.strip()
        structured = Agent(name="extractor", instructions="Extract the city.", model=MODEL, output_type=City,
                           model_settings=ModelSettings(temperature=0, max_tokens=60))
        city = await Runner.run(structured, "I live in Osaka, Japan.")
        assert isinstance(city.final_output, City) and city.final_output.name
        calculator = Agent(name="calculator", instructions="Use the multiply tool.", model=MODEL, tools=[multiply],
                           tool_use_behavior="stop_on_first_tool",
                           model_settings=ModelSettings(temperature=0, max_tokens=60, tool_choice="multiply",
                                                         parallel_tool_calls=False))
        product = await Runner.run(calculator, "What is 6 times 7?")
        call = product.new_items[0].raw_item
        assert call.name == "multiply"
        arguments = json.loads(call.arguments)
        assert product.final_output == str(arguments["a"] * arguments["b"])  # the tool's output, as text
        streamed = Runner.run_streamed(chat, "Say hello.")
        kinds = [event.type async for event in streamed.stream_events()]
        assert "raw_response_event" in kinds and streamed.final_output.strip()

    before = responses_served(http)
    asyncio.run(run())
    assert responses_served(http) >= before + 4  # every turn went through /v1/responses
