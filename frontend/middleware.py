"""ASGI middleware: the request's context (id, headers learnt on the way, resources given back at the end)
and the body size limit."""

from __future__ import annotations

import re
import uuid

from frontend.context import STATE_KEY, RequestContext
from frontend.errors import RequestTooLarge, error_response
from frontend.logs import request_id_var

REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class ContextLayer:
    """Creates the `RequestContext` of every request: its id (the client's `x-request-id` or a new one,
    echoed in the response and in every log line), the headers admission adds (x-ratelimit-*, x-cache);
    `close()`s it however the response ends, so its concurrency lease is always given back."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"").decode("latin-1")
        client = scope.get("client")
        # The client's id only if it is a plain token: it reaches every log line and Triton's error texts.
        ctx = RequestContext(given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex, client[0] if client else None)
        scope.setdefault("state", {})[STATE_KEY] = ctx
        token = request_id_var.set(ctx.request_id)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *ctx.response_headers,
                                      (REQUEST_ID_HEADER, ctx.request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        finally:
            await ctx.close()
            request_id_var.reset(token)


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
