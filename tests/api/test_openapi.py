"""The published OpenAPI tells the truth (issue 12, part 7): error answers with OpenAI's envelope, SSE for
streams, integer bounds, and no 422 (validation errors are 400s)."""

from __future__ import annotations

import pytest

from triton_models.contract import MAX_N

ENVELOPE = "#/components/schemas/ErrorResponse"
INFERENCE = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/images/generations")


@pytest.fixture
async def schema(client) -> dict:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


async def test_no_operation_lists_422(schema):
    assert all("422" not in op["responses"] for _, _, op in operations(schema))
    assert "HTTPValidationError" not in schema["components"]["schemas"]


async def test_every_error_response_is_the_envelope(schema):
    errors = [(path, status, response) for path, _, op in operations(schema)
              for status, response in op["responses"].items() if not status.startswith("2")]
    assert errors
    for path, status, response in errors:
        assert response["content"]["application/json"]["schema"] == {"$ref": ENVELOPE}, (path, status)
        assert response["description"], (path, status)
    assert set(schema["components"]["schemas"]["ErrorDetail"]["required"]) >= {"message", "type"}


@pytest.mark.parametrize("path", INFERENCE)
async def test_inference_operations_document_their_errors(schema, path):
    responses = schema["paths"][path]["post"]["responses"]
    assert {"400", "401", "403", "404", "413", "429", "503", "504"} <= set(responses)
    assert "Retry-After" in responses["429"]["headers"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_streaming_operations_publish_server_sent_events(schema, path):
    content = schema["paths"][path]["post"]["responses"]["200"]["content"]
    assert "text/event-stream" in content and "application/json" in content


async def test_every_operation_that_authenticates_documents_401_and_403(schema):
    open_paths = {"/health", "/health/ready", "/v1/images/files/{token}"}
    for path, method, op in operations(schema):
        if path not in open_paths:
            assert {"401", "403"} <= set(op["responses"]), (method, path)


def _field(schema: dict, model: str, name: str) -> dict:
    field = schema["components"]["schemas"][model]["properties"][name]
    return next((option for option in field.get("anyOf", [field]) if option.get("type") == "integer"), field)


async def test_integer_bounds_are_published(schema):
    n = _field(schema, "ChatCompletionRequest", "n")
    assert (n["minimum"], n["maximum"]) == (1, MAX_N)
    assert _field(schema, "EmbeddingRequest", "truncate_prompt_tokens")["minimum"] == -1
    assert _field(schema, "CompletionRequest", "max_tokens")["minimum"] == 1
