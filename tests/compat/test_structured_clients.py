"""Structured outputs and tools through instructor and LlamaIndex, unchanged, against the real stack.

Each client runs in its own venv (envs.py: their pins clash with the suite's) as a script in clients/; a
client that fails (no valid object, an answer cut by max_tokens) fails its test with the script's traceback
and the server's raw answer. Values are checked, not only types: the grammar guarantees the types, and
SmolLM2 answers these prompts right at temperature 0."""

from __future__ import annotations

import pytest

from tests.compat.envs import run_client
from tests.compat.report import compat

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
JOHN = {"name": "John Smith", "age": 31}  # from "John Smith is 31 years old."


def instructor(frontend, mode: str) -> dict:
    return run_client("instructor", "instructor_structured.py", mode, base_url=frontend.base_url, model=MODEL)


def llamaindex(frontend, case: str) -> dict:
    return run_client("llamaindex", "llamaindex_structured.py", case, base_url=frontend.base_url, model=MODEL)


@compat("instructor", "`from_openai(mode=Mode.JSON_SCHEMA)`: `response_format` json_schema",
        caveat="instructor 1.17 pins `jiter<0.15`, which takes openai back to 3.3: give it its own venv, or "
               "expect that downgrade.")
def test_instructor_json_schema_mode(frontend):
    out = instructor(frontend, "json_schema")
    assert out["sent"]["response_format"]["type"] == "json_schema" and not out["sent"]["tools"]
    assert out["user"] == JOHN


@compat("instructor", "`from_openai(mode=Mode.TOOLS)`: one forced function call")
def test_instructor_tools_mode(frontend):
    out = instructor(frontend, "tools")
    assert out["sent"]["tool_choice"] == {"type": "function", "function": {"name": "User"}}
    assert out["tool_calls"] == 1  # a named tool_choice forces exactly one call (OpenAI's function calling)
    assert out["user"] == JOHN


@compat("llamaindex-llm", "`structured_predict` by function calling (`is_function_calling_model=True`)")
def test_llamaindex_structured_predict_with_function_calling(frontend):
    out = llamaindex(frontend, "function_calling")
    assert out["sent"]["tool_choice"] == "required" and out["sent"]["parallel_tool_calls"] is False
    assert out["type"] == "User" and out["answer"] == JOHN


@compat("llamaindex-llm", "`structured_predict` by structured outputs (`should_use_structured_outputs=True`: "
                          "`response_format` json_schema)")
def test_llamaindex_structured_predict_with_structured_outputs(frontend):
    out = llamaindex(frontend, "structured_outputs")
    assert out["sent"]["response_format"]["type"] == "json_schema" and not out["sent"]["tools"]
    assert out["type"] == "User" and out["answer"] == JOHN


@compat("llamaindex-llm", "`as_structured_llm(...).chat`")
def test_llamaindex_as_structured_llm(frontend):
    out = llamaindex(frontend, "as_structured_llm")
    assert out["sent"]["tools"][0]["function"]["name"] == "Country"
    assert out["type"] == "Country" and out["answer"] == {"name": "France", "capital": "Paris"}
