"""Tool calls in the Llama 3 JSON format, end to end: a tiny model whose chat template renders tools as Llama
3.1's does (its `tool_call_parser`, llama3_json, picked from the template as the exporter picks it), served by a
real tritonserver, called through the openai SDK. The model has random weights: every call it writes is valid
only because the engine's grammar allows nothing else."""

from __future__ import annotations

import json

import jsonschema
import pytest
from openai import OpenAI

from export_scripts.common import tool_call_parser
from frontend.settings import Settings
from launcher.triton import TritonServer
from tests.integration import llm_tiny
from tests.stack import run_frontend

pytestmark = pytest.mark.integration

MODEL = "tiny-llama3-tools"
# Written in the style of Llama 3.1's template: tools as JSON in the system turn, calls as
# {"name": ..., "parameters": ...}, results as `ipython` turns.
TEMPLATE = (
    "{{ bos_token }}<|start_header_id|>system<|end_header_id|>\n\n"
    "{% if tools %}Answer with a JSON function call {\"name\": function name, \"parameters\": arguments}.\n"
    "{% for t in tools %}{{ t | tojson }}\n{% endfor %}{% endif %}<|eot_id|>"
    "{% for m in messages %}{% set role = 'ipython' if m.role == 'tool' else m.role %}"
    "<|start_header_id|>{{ role }}<|end_header_id|>\n\n"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}"
    "{\"name\": \"{{ c.function.name }}\", \"parameters\": {{ c.function.arguments | tojson }}}"
    "{% endfor %}{% else %}{{ m.content }}{% endif %}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
FORECAST = {"type": "object", "additionalProperties": False, "required": ["unit", "days"],
            "properties": {"unit": {"enum": ["celsius", "fahrenheit"]},
                           "days": {"type": "integer", "minimum": 1, "maximum": 7}}}
TOOLS = [{"type": "function", "function": {"name": "forecast", "description": "Weather forecast",
                                           "parameters": FORECAST}},
         {"type": "function", "function": {"name": "alarm", "parameters": {
             "type": "object", "properties": {"hour": {"type": "integer", "minimum": 0, "maximum": 23}},
             "required": ["hour"], "additionalProperties": False}}}]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "Weather for the next days?"}]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("tool-formats")
    llm_tiny.model_repository(root, MODEL, chat_template=TEMPLATE, tool_call_parser=tool_call_parser("auto", TEMPLATE),
                              context_length=1024, max_kv_tokens=8 * 1024)
    with TritonServer(root, [MODEL]) as triton, \
            run_frontend(Settings(triton_grpc_url=triton.grpc_url, cache_enabled=False)) as frontend:
        yield OpenAI(base_url=frontend.base_url, api_key="unused", max_retries=0, timeout=120)


def valid(calls) -> list[str]:
    """The names of the calls, after checking each one's arguments against its function's schema."""
    for call in calls:
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    return [call.function.name for call in calls]


def test_the_format_is_picked_from_the_template():
    assert tool_call_parser("auto", TEMPLATE) == "llama3_json"


@pytest.mark.parametrize("seed", range(4))
def test_a_named_tool_is_called_with_valid_arguments(client, seed):
    r = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=64, temperature=1.0,
                                       seed=seed, tool_choice={"type": "function", "function": {"name": "alarm"}},
                                       parallel_tool_calls=False)
    (choice,) = r.choices
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert valid(choice.message.tool_calls) == ["alarm"] and choice.message.tool_calls[0].id.startswith("call_")


def test_parallel_calls_stream_as_deltas_the_sdk_assembles_into_the_same_calls(client):
    """The random model writes calls until max_tokens cuts one: the whole calls before the cut are calls, streamed
    or not, and the cut one is content, in both."""
    fields = dict(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=64, temperature=1.0,
                  seed=1)
    whole = client.chat.completions.create(**fields).choices[0]
    calls: dict[int, dict] = {}
    content, finish = "", None
    for chunk in client.chat.completions.create(**fields, stream=True):
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for part in delta.tool_calls or []:
            call = calls.setdefault(part.index, {"id": part.id, "name": part.function.name, "arguments": ""})
            call["arguments"] += part.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert len(calls) >= 2 and sorted(calls) == list(range(len(calls)))  # parallel calls, indexed in order
    assert valid(whole.message.tool_calls) == [c["name"] for c in calls.values()]
    assert [c.function.arguments for c in whole.message.tool_calls] == [c["arguments"] for c in calls.values()]
    assert all(c["id"].startswith("call_") for c in calls.values())
    assert finish == whole.finish_reason and content == (whole.message.content or "")


def test_earlier_calls_and_results_round_trip_through_the_template(client):
    first = client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required",
                                           parallel_tool_calls=False, max_tokens=64, temperature=0)
    (call,) = first.choices[0].message.tool_calls
    messages = [*ASK, first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    again = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="required",
                                           parallel_tool_calls=False, max_tokens=64, temperature=0)
    assert valid(again.choices[0].message.tool_calls)
    assert again.usage.prompt_tokens > first.usage.prompt_tokens + len(call.function.arguments) // 4
