"""The published OpenAPI, truthful: each operation lists the errors it can answer (OpenAI's envelope), streams
are `text/event-stream`, and FastAPI's default 422 is gone (validation errors are 400s, frontend/errors.py)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from frontend.protocol.common import ErrorResponse

_WHY = {
    400: "Invalid request: `error.param` names the field, `error.message` says what is wrong with it",
    401: "Missing or incorrect API key",
    403: "The API key lacks the scope this endpoint needs",
    404: "No such model (`model_not_found`) or resource",
    409: "Another load or unload of this model is in progress",
    410: "The resource has expired",
    413: "The request body is over the size limit",
    429: "A rate limit of the API key was reached; retry after `Retry-After` seconds",
    503: "Triton or the model is not ready, or the model is overloaded; retry shortly",
    504: "The request's deadline passed before the model answered",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}

# What every inference operation can answer besides 200: the request (400, 413), the key (401, 403, 429),
# the model (404, 503) and the deadline (504).
INFERENCE = (400, 401, 403, 404, 413, 429, 503, 504)
# Before OpenAPI 3.2 (FastAPI writes 3.1), an event stream's `schema` describes one event, as SSE parses it.
SERVER_SENT_EVENTS = {"text/event-stream": {"schema": {
    "type": "object", "required": ["data"],
    "description": "with `stream: true`: one `data:` event per chunk, an error after the first byte as one more "
                   "event carrying the error envelope, and `data: [DONE]` last",
    "properties": {"data": {"type": "string", "description": "a chunk object as JSON, or `[DONE]`"},
                   "event": {"type": "string"}, "id": {"type": "string"}, "retry": {"type": "integer"}}}}}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` for these error statuses, each with OpenAI's error envelope as its body."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        responses[status] = {"model": ErrorResponse, "description": _WHY[status]}
        if status in (429, 503):
            responses[status]["headers"] = _RETRY_AFTER
    return responses


def streaming(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`errors(*statuses)`, and a 200 that is JSON or, when the request asks to stream, server-sent events."""
    return {200: {"description": "The answer (JSON), or its stream (server-sent events)",
                  "content": SERVER_SENT_EVENTS}, **errors(*statuses)}


def install(app: FastAPI) -> None:
    """Publish the schema without FastAPI's 422 responses and their schemas, which this server never sends."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            schemas = schema.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
