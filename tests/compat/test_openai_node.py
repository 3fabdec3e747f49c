"""The openai Node SDK (tests/node: pinned by its package-lock.json) beyond the basics of
tests/integration/test_node_sdk.py: the Responses API, images (generate, edit with `toFile`) and structured
outputs with zod, each answer equal to the Python SDK's (the same greedy text, the same PNG bytes for the same
seed, the same parsed object)."""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import BaseModel

from tests.compat.clients import cases
from tests.compat.envs import case_value
from tests.compat.report import compat, node_locked
from tests.node.sdk import run_script

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def node(frontend, reference) -> dict:
    spec = {"chat_model": cases.CHAT_MODEL, "question": cases.QUESTION, "max_tokens": cases.MAX_TOKENS,
            "image_model": cases.IMAGE_MODEL, "image_prompt": cases.IMAGE_PROMPT, "edit_prompt": cases.EDIT_PROMPT,
            "size": cases.IMAGE_SIZE, "image_extras": cases.IMAGE_EXTRAS, "headers": cases.NO_STORE,
            "city_question": cases.CITY_QUESTION, "city_max_tokens": cases.CITY_MAX_TOKENS,
            "png": base64.b64encode(reference["png"]).decode()}
    return run_script("compat", json.dumps(spec), base_url=frontend.base_url)


@compat("openai-node", "`responses.create`")
def test_responses_create(node, reference):
    assert case_value(node, "responses_create") == {"status": "completed", "text": reference["chat"]}


@compat("openai-node", "`responses.stream` (the SDK's helper, `finalResponse()`)")
def test_responses_stream(node, reference):
    answer = case_value(node, "responses_stream")
    assert answer == {"first": "response.created", "last": "response.completed", "deltas": reference["chat"],
                      "text": reference["chat"]}


@compat("openai-node", "`images.generate` (`b64_json`; `seed`, `steps` as extra body fields)")
def test_images_generate(node, reference):
    assert base64.b64decode(case_value(node, "images_generate")["b64_json"]) == reference["png"]


@compat("openai-node", "`images.edit` (multipart, the image from `toFile`)")
def test_images_edit(node, reference):
    assert base64.b64decode(case_value(node, "images_edit")["b64_json"]) == reference["edit_png"]


@compat("openai-node", f"`chat.completions.parse` with `zodResponseFormat` (zod {node_locked('zod')()})")
def test_chat_parse_with_zod(node, sdk):
    class City(BaseModel):
        name: str
        country: str

    python = sdk.chat.completions.parse(model=cases.CHAT_MODEL, temperature=0, max_tokens=cases.CITY_MAX_TOKENS,
                                        messages=[{"role": "user", "content": cases.CITY_QUESTION}],
                                        response_format=City).choices[0].message
    answer = case_value(node, "chat_parse_zod")
    assert answer["parsed"] == python.parsed.model_dump() and answer["parsed"]["name"] == "Tokyo"
    assert answer["content"] == python.content  # the same grammar, the same greedy tokens
