"""Structured outputs and tools through LangChain's ChatOpenAI, unchanged, against the real stack (SmolLM2):
`with_structured_output` with a pydantic model, and a `bind_tools` agent loop with a calculator tool."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, Field

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"


@pytest.fixture
def chat(frontend):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=frontend.base_url, api_key="unused", model=MODEL, temperature=0, max_tokens=120,
                      max_retries=0, default_headers={"Cache-Control": "no-store"})


class Country(BaseModel):
    """A country and its capital."""

    name: str = Field(max_length=40)
    capital: str = Field(max_length=40)
    continent: str = Field(max_length=20)


def test_with_structured_output_returns_the_pydantic_object(chat):
    answer = chat.with_structured_output(Country).invoke("Tell me about France.")
    assert isinstance(answer, Country) and answer.name and answer.capital


def test_bind_tools_agent_loop_with_a_calculator(chat):
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool

    @tool
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    messages = [HumanMessage("What is 6 times 7? Use the multiply tool.")]
    reply = chat.bind_tools([multiply], tool_choice="multiply", parallel_tool_calls=False).invoke(messages)
    (call,) = reply.tool_calls
    assert call["name"] == "multiply" and set(call["args"]) == {"a", "b"}
    assert all(isinstance(v, int) for v in call["args"].values())
    messages += [reply, ToolMessage(str(multiply.invoke(call["args"])), tool_call_id=call["id"])]
    final = chat.bind_tools([multiply], tool_choice="none").invoke(messages)
    assert final.content and not final.tool_calls  # the loop ends with the model's own answer


def test_the_agents_sdk_on_chat_completions_with_a_tool_and_an_output_type(frontend):
    """The OpenAI Agents SDK's chat-completions model class: a forced tool call whose output ends the run, and
    an agent whose final output is a pydantic object."""
    import asyncio

    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    @function_tool
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    async def run():
        set_tracing_disabled(True)
        client = AsyncOpenAI(base_url=frontend.base_url, api_key="unused", max_retries=0,
                             default_headers={"Cache-Control": "no-store"})
        model = OpenAIChatCompletionsModel(model=MODEL, openai_client=client)
        calculator = Agent(name="calculator", instructions="Use the multiply tool.", tools=[multiply], model=model,
                           tool_use_behavior="stop_on_first_tool",
                           model_settings=ModelSettings(temperature=0, max_tokens=60, tool_choice="multiply",
                                                        parallel_tool_calls=False))
        geographer = Agent(name="geographer", instructions="Describe the country.", output_type=Country,
                           model=model, model_settings=ModelSettings(temperature=0, max_tokens=120))
        return await Runner.run(calculator, "What is 6 times 7?"), await Runner.run(geographer, "France")

    product, country = asyncio.run(run())
    arguments = json.loads(product.new_items[0].raw_item.arguments)
    assert product.final_output == str(arguments["a"] * arguments["b"])
    assert isinstance(country.final_output, Country) and country.final_output.capital
