"""The OpenAI Agents SDK (the suite's venv) beyond what tests/integration/test_responses.py and
test_clients_structured.py prove: what an agent with a hosted tool meets."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.compat.clients import cases
from tests.compat.report import compat

pytestmark = pytest.mark.integration


@compat("openai-agents", "hosted tools (`WebSearchTool`, `FileSearchTool`, `CodeInterpreterTool`, ...)",
        refused="400 naming `tools[0].type`: nothing runs behind them here; function tools work",
        caveat="An agent with a hosted tool (`WebSearchTool`, `FileSearchTool`, `CodeInterpreterTool`, "
               "`ImageGenerationTool`, `HostedMCPTool`, ...) fails on its first turn with a 400 naming the tool: "
               "those tools run inside OpenAI's platform. Give the agent function tools (`@function_tool`) "
               "that do the same.")
def test_an_agent_with_a_hosted_tool_is_refused_by_name(frontend):
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, WebSearchTool, set_tracing_disabled

    async def run():
        set_tracing_disabled(True)
        client = openai.AsyncOpenAI(base_url=frontend.base_url, api_key="unused", max_retries=0,
                                    default_headers=cases.NO_STORE)
        agent = Agent(name="searcher", tools=[WebSearchTool()],
                      model=OpenAIResponsesModel(model=cases.CHAT_MODEL, openai_client=client),
                      model_settings=ModelSettings(temperature=0, max_tokens=cases.MAX_TOKENS))
        await Runner.run(agent, "Search the web for the capital of France.")

    with pytest.raises(openai.BadRequestError) as refused:
        asyncio.run(run())
    assert refused.value.body["param"] == "tools[0].type" and "web_search" in refused.value.body["message"]
