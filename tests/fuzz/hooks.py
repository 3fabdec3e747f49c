"""schemathesis hooks and checks for fuzzing the published OpenAPI (tests/fuzz, and `st run` by hand).

Importing this module registers them globally (schemathesis' `before_call` hooks are global only):
`SCHEMATHESIS_HOOKS=tests.fuzz.hooks st run http://127.0.0.1:8000/openapi.json` runs the same fuzzing
against a stack started by `make serve`.

The hooks keep each request cheap without hiding a failure: only values the server would accept anyway
are lowered (a valid `max_tokens` of 9000 becomes 4; `max_tokens: 0`, `-1` or `"9"` go out unchanged), and
most generated model names are swapped for a served model of the operation's kind so that fuzzing reaches
the engines instead of stopping at 404 (a stable hash keeps one in four random, and the choice seeded).
"""

from __future__ import annotations

import json
import re
import zlib
from collections import Counter

import schemathesis

MAX_TOKENS = 4  # per choice: enough to run prefill, a decode step and the detokeniser
MAX_STEPS = 2  # diffusion steps per image
# Served models per operation (the session's repository); chat-capable models answer completions too.
MODELS = {
    "/v1/embeddings": ("all-minilm-l6-v2",),
    "/v1/chat/completions": ("smollm2-135m-instruct", "tiny-llava-random"),
    "/v1/completions": ("smollm2-135m-instruct", "tiny-llava-random"),
    "/v1/images/generations": ("tiny-sd-random",),
    "/v1/images/edits": ("tiny-sd-random",),
    "/v1/images/variations": ("tiny-sd-random",),
}
TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")
ENVELOPE_KEYS = {"message", "type", "param", "code"}
# Internals that must never reach a client: object reprs, tracebacks, gRPC peer addresses.
LEAKS = re.compile(r"object at 0x[0-9a-f]+|Traceback \(most recent call last\)|ipv[46]:|StatusCode\.")


def _capped(value, cap: int):
    """`value` lowered to `cap` where the server would take it as a larger count (null and absent mean "up
    to the model's limit"); anything else (0, -1, 5.5, "9", true) goes out as generated. An integral float
    stays a float, so that whether the server accepts `4.0` for an integer is still tested."""
    if value is None:
        return cap
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= cap:
        return value
    if isinstance(value, float):
        return float(cap) if value.is_integer() else value
    return cap


@schemathesis.hook
def before_call(context, case, kwargs):
    path = case.operation.path
    body = case.body
    if path not in MODELS or not isinstance(body, dict):
        return
    model = body.get("model")
    if isinstance(model, str) and zlib.crc32(model.encode("utf-8", "surrogatepass")) % 4:
        choices = MODELS[path]
        body["model"] = choices[zlib.crc32(model.encode("utf-8", "surrogatepass")) % len(choices)]
    if path in ("/v1/chat/completions", "/v1/completions"):
        for field in [f for f in TOKEN_FIELDS if f in body] or ["max_tokens"]:
            body[field] = _capped(body.get(field), MAX_TOKENS)
    elif path == "/v1/images/generations":
        body["steps"] = _capped(body.get("steps"), MAX_STEPS)
    elif body.get("steps") is not None:  # edits, variations: a form has no null, a generated one stays invalid
        body["steps"] = _capped(body["steps"], MAX_STEPS)


# What the fuzzing sent and got, by status class ("2xx", "4xx", "5xx"): the run's summary line reports it.
ANSWERS: Counter = Counter()


@schemathesis.check
def openai_error_envelope(ctx, response, case):
    """Every 4xx/5xx is OpenAI's `{"error": {"message", "type", "param", "code"}}`, with no internals."""
    ANSWERS[f"{response.status_code // 100}xx"] += 1
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"{response.status_code} answer is not JSON: {response.content[:200]!r}") \
            from None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(error) != ENVELOPE_KEYS or set(body) != {"error"}:
        raise AssertionError(f"{response.status_code} answer is not OpenAI's error envelope: {body!r:.300}")
    if not isinstance(error["message"], str) or not error["message"] or not isinstance(error["type"], str):
        raise AssertionError(f"error message and type must be non-empty strings: {error!r:.300}")
    leak = LEAKS.search(error["message"])
    if leak:
        raise AssertionError(f"error message leaks internals ({leak.group()!r}): {error['message']!r:.300}")
    return True
