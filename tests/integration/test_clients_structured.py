"""Structured outputs and tools through LangChain's ChatOpenAI, unchanged, against the real stack (SmolLM2):
`with_structured_output` with a pydantic model, and a `bind_tools` agent loop with a calculator tool."""

from __future__ import annotations

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
