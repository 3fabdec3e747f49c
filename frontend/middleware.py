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
    """413 envelope for bodies over `max_bytes`: by Content-Length, or by reading a chunked body first."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = error_response(RequestTooLarge(f"request body is larger than {self.max_bytes} bytes"))
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:  # the server enforces that the body matches it
            if length.isdigit() and int(length) > self.max_bytes:
                return await too_large(scope, receive, send)
            return await self.app(scope, receive, send)
        # Chunked: buffer up to the limit (bounded memory), then replay the body to the app.
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                return await too_large(scope, receive, send)
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)
