"""/v1/responses in-process, over the fake chat model: the response object, stored responses and their
conversation, the stream's events in order, tools and structured outputs mapped onto chat, and what is refused."""

from __future__ import annotations

import json

import httpx
import pytest

from frontend.app import create_app
from frontend.auth import hash_key
from frontend.settings import Settings
from tests.api.conftest import assert_error
from tests.api.fake_llm import FakeLLM

URL = "/v1/responses"
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


def respond(**fields) -> dict:
    return {"model": "llm", "input": "Say hi", **fields}


@pytest.fixture
def roomy(backend):
    """A context that holds the generic tool instructions."""
    backend.llm.context_length = 2000
    return backend


def events_of(body: str) -> list[dict]:
    """The events of a Responses stream, each frame checked: `event: <type>` then `data: {json}` of that type."""
    out = []
    for frame in body.split("\n\n")[:-1]:
        head, data = frame.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert head == f"event: {event['type']}"
        out.append(event)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def answered(backend) -> str:
    """What the fake model answered to its last prompt (5 words)."""
    return "".join(FakeLLM.words(backend.llm.prompts[-1], 0, None, False, 5))


def text_of(response: dict) -> str:
    return "".join(p["text"] for item in response["output"] if item["type"] == "message" for p in item["content"])


async def test_a_response_has_openais_shape_and_is_stored(client, backend):
    r = await client.post(URL, json=respond(instructions="Be brief.", metadata={"team": "a"}))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("resp_") and body["object"] == "response" and body["status"] == "completed"
    (item,) = body["output"]
    assert item["type"] == "message" and item["role"] == "assistant" and item["status"] == "completed"
    assert item["content"][0]["type"] == "output_text" and item["content"][0]["text"] == answered(backend)
    usage = body["usage"]
    assert usage["output_tokens"] == 5 and usage["total_tokens"] == usage["input_tokens"] + 5
    assert body["metadata"] == {"team": "a"} and body["instructions"] == "Be brief." and body["store"] is True
    assert backend.llm.prompts[-1].startswith("<s><|system|>Be brief.")  # instructions: the system message
    assert (await client.get(f"{URL}/{body['id']}")).json() == body
    assert (await client.delete(f"{URL}/{body['id']}")).json() == {"id": body["id"], "object": "response",
                                                                   "deleted": True}
    assert_error(await client.get(f"{URL}/{body['id']}"), 404, "response_id")
    assert_error(await client.delete(f"{URL}/{body['id']}"), 404, "response_id")


async def test_previous_response_id_continues_the_conversation_without_its_instructions(client, backend):
    first = (await client.post(URL, json=respond(instructions="Be brief."))).json()
    second = await client.post(URL, json=respond(input="And again", previous_response_id=first["id"]))
    assert second.status_code == 200, second.text
    prompt = backend.llm.prompts[-1]
    assert "Say hi" in prompt and text_of(first) in prompt and "And again" in prompt and "Be brief." not in prompt
    assert second.json()["previous_response_id"] == first["id"]
    third = await client.post(URL, json=respond(input="Once more", previous_response_id=second.json()["id"]))
    assert "Say hi" in backend.llm.prompts[-1] and third.status_code == 200  # the whole chain, not one turn
    items = (await client.get(f"{URL}/{second.json()['id']}/input_items", params={"order": "asc"})).json()
    assert [i["content"][0]["text"] for i in items["data"]] == ["And again"] and items["has_more"] is False
    assert_error(await client.post(URL, json=respond(previous_response_id="resp_nope")), 404, "previous_response_id")


async def test_store_false_keeps_nothing(client):
    body = (await client.post(URL, json=respond(store=False))).json()
    assert body["store"] is False
    assert_error(await client.get(f"{URL}/{body['id']}"), 404)


async def test_input_items_are_paged_as_openai_pages_them(client):
    items = [{"role": "user", "content": f"m{i}"} for i in range(5)]
    body = (await client.post(URL, json=respond(input=items))).json()
    page = (await client.get(f"{URL}/{body['id']}/input_items", params={"limit": 2})).json()
    assert [i["content"][0]["text"] for i in page["data"]] == ["m4", "m3"] and page["has_more"] is True
    rest = (await client.get(f"{URL}/{body['id']}/input_items", params={"limit": 10, "after": page["last_id"]})).json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["m2", "m1", "m0"] and rest["has_more"] is False
    assert page["first_id"] == page["data"][0]["id"] and all(i["id"].startswith("msg_") for i in page["data"])
    assert_error(await client.get(f"{URL}/{body['id']}/input_items", params={"after": "msg_nope"}), 400, "after")


async def test_max_output_tokens_cut_is_an_incomplete_response(client):
    body = (await client.post(URL, json=respond(max_output_tokens=2))).json()
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete" and body["usage"]["output_tokens"] == 2


async def test_a_stream_is_the_responses_events_in_order(client, backend):
    r = await client.post(URL, json=respond(stream=True))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = events_of(r.text)
    types = [e["type"] for e in events]
    assert types[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    done = events[-1]["response"]
    assert deltas == answered(backend) == text_of(done) and done["usage"]["output_tokens"] == 5
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    item_id = events[2]["item"]["id"]
    assert all(e.get("item_id", item_id) == item_id for e in events[2:-1])
    assert (await client.get(f"{URL}/{done['id']}")).json() == done  # stored as the last event has it


async def test_tools_become_function_call_items_and_stream_as_their_events(client, roomy):
    backend = roomy
    backend.llm.script = ["Checking.", "\n", CALL[:20], CALL[20:]]
    body = (await client.post(URL, json=respond(tools=[WEATHER]))).json()
    message, call = body["output"]
    assert text_of(body) == "Checking." and call["type"] == "function_call" and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris"} and call["call_id"].startswith("call_")
    assert body["tools"][0]["name"] == "get_weather" and body["tool_choice"] == "auto"
    events = events_of((await client.post(URL, json=respond(tools=[WEATHER], stream=True))).text)
    kinds = [e["type"] for e in events]
    start = kinds.index("response.function_call_arguments.delta")
    assert kinds[start - 1] == "response.output_item.added" and events[start - 1]["item"]["arguments"] == ""
    assert kinds[start + 1:] == ["response.function_call_arguments.done", "response.output_item.done",
                                 "response.completed"]
    assert events[start + 1]["arguments"] == call["arguments"] and events[start + 1]["name"] == "get_weather"


async def test_calls_and_their_outputs_round_trip_as_input_items(client, roomy):
    backend = roomy
    items = [{"role": "user", "content": "Weather in Paris?"},
             {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
             {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21 C"}]
    r = await client.post(URL, json=respond(input=items, tools=[WEATHER], tool_choice="none"))
    assert r.status_code == 200, r.text
    prompt = backend.llm.prompts[-1]
    assert CALL in prompt and "<tool_response>" in prompt and "sunny, 21 C" in prompt


async def test_text_format_and_tool_choice_reach_the_engine(client, roomy):
    backend = roomy
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    fmt = {"type": "json_schema", "name": "out", "schema": schema, "strict": True}
    body = (await client.post(URL, json=respond(text={"format": fmt}))).json()
    (_, inputs), *_ = [c for c in reversed(backend.calls) if c[0] == "llm"]
    assert json.loads(inputs["sampling_parameters"][0])["structured_outputs"]["json"] == schema
    assert body["text"] == {"format": fmt}
    await client.post(URL, json=respond(tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"}))
    (_, inputs), *_ = [c for c in reversed(backend.calls) if c[0] == "llm"]
    assert json.loads(inputs["sampling_parameters"][0])["structured_outputs"]["grammar"].startswith("start: call")


@pytest.mark.parametrize("fields, param", [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "name": "bad name"}]}, "tools[0]"),
    ({"include": ["reasoning.encrypted_content"]}, "include"),
    ({"reasoning": {"effort": "high"}}, "reasoning.effort"),
    ({"background": True}, "background"),
    ({"truncation": "auto"}, "truncation"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input[0].content[0].image_url"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0].type"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
    ({"input": []}, "input"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format"),
    ({"tool_choice": "required"}, "tool_choice"),
])
async def test_what_cannot_be_honoured_is_a_400_naming_it(client, fields, param):
    assert_error(await client.post(URL, json=respond(**fields)), 400, param)


async def test_neutral_values_of_unsupported_fields_are_accepted(client):
    r = await client.post(URL, json=respond(background=False, service_tier="auto", include=[], tools=[]))
    assert r.status_code == 200, r.text


async def test_a_prompt_over_the_context_names_input(client):
    assert_error(await client.post(URL, json=respond(input="word " * 100)), 400, "input",
                 code="context_length_exceeded")


async def test_stored_responses_belong_to_their_key(backend, tmp_path):
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [{"name": n, "key_sha256": hash_key(f"sk-{n}")} for n in "ab"]}))
    app = create_app(Settings(model_index_ttl_s=0, api_keys_file=str(keys)), backend=backend)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            a, b = {"Authorization": "Bearer sk-a"}, {"Authorization": "Bearer sk-b"}
            body = (await c.post(URL, json=respond(), headers=a)).json()
            assert (await c.get(f"{URL}/{body['id']}", headers=a)).status_code == 200
            assert_error(await c.get(f"{URL}/{body['id']}", headers=b), 404)
            assert_error(await c.post(URL, json=respond(previous_response_id=body["id"]), headers=b), 404)
            assert_error(await c.delete(f"{URL}/{body['id']}", headers=b), 404)
            assert (await c.get(f"{URL}/{body['id']}", headers=a)).status_code == 200
