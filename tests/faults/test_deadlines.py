"""A request that runs past MODELGATE_REQUEST_TIMEOUT_S is a 504 (an error event once streaming), never a 503,
and its generation stops; against the session's real tritonserver and SmolLM2."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from frontend.settings import Settings
from tests.stack import run_frontend

pytestmark = pytest.mark.integration

CHAT = "smollm2-135m-instruct"
ENDLESS = {"model": CHAT, "messages": [{"role": "user", "content": "Count to one thousand."}],
           "max_tokens": 1500, "ignore_eos": True}


@pytest.fixture(scope="module")
def impatient(triton):
    settings = Settings(triton_grpc_url=triton.grpc_url, triton_api_secret=triton.api_secret or "",
                        request_timeout_s=1.0, cache_enabled=False)
    with run_frontend(settings) as running:
        yield running


def test_a_deadline_is_504_with_the_envelope(impatient):
    started = time.monotonic()
    r = httpx.post(f"{impatient.base_url}/chat/completions", json=ENDLESS, timeout=60)
    assert r.status_code == 504, r.text
    assert r.json()["error"]["code"] == "timeout" and time.monotonic() - started < 10


def test_a_deadline_while_streaming_is_an_error_event_then_done(impatient):
    with httpx.stream("POST", f"{impatient.base_url}/chat/completions", json={**ENDLESS, "stream": True},
                      timeout=60) as r:
        assert r.status_code == 200  # the first token came in time
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == "timeout" and set(error) == {"message", "type", "param", "code"}
