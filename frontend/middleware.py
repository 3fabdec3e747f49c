"""ASGI middleware: request ids and the body size limit."""

from __future__ import annotations

import uuid

from frontend.errors import RequestTooLarge, error_response

REQUEST_ID_HEADER = b"x-request-id"


class RequestContext:
    """Gives every request an id (the client's `x-request-id` or a new one), echoed in the response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"").decode("latin-1")[:128]
        request_id = given or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((REQUEST_ID_HEADER, request_id.encode("latin-1")))
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodySizeLimit:
    """413 envelope for bodies over `max_bytes`, by Content-Length or by counting a chunked body."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = RequestTooLarge(f"request body is larger than {self.max_bytes} bytes")
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await error_response(too_large)(scope, receive, send)
        seen = 0

        async def counting_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise too_large  # raised inside the endpoint's body read, so the APIError handler answers
            return message

        await self.app(scope, counting_receive, send)
