"""Response encoding shared by every endpoint: fast JSON (numpy arrays included) and SSE framing."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import orjson
from fastapi.responses import JSONResponse, StreamingResponse

from frontend.errors import APIError

log = logging.getLogger(__name__)


class FastJSONResponse(JSONResponse):
    """orjson, serialising numpy arrays directly (an embedding batch is thousands of floats)."""

    def render(self, content) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


async def event_stream(events: AsyncIterator[dict]) -> AsyncIterator[bytes]:
    """Server-sent events as OpenAI frames them: `data: {json}` per event, an error after the first byte as
    one more event carrying the error envelope, and `data: [DONE]` last, always."""
    try:
        async for event in events:
            yield b"data: " + orjson.dumps(event, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n\n"
    except APIError as exc:
        log.warning("stream ended by an error: %s", exc.message)
        yield b"data: " + orjson.dumps(exc.envelope()) + b"\n\n"
    except Exception:  # the status line is gone; the client still gets an envelope
        log.exception("stream failed")
        yield b"data: " + orjson.dumps(APIError("internal server error").envelope()) + b"\n\n"
    yield b"data: [DONE]\n\n"


async def named_event_stream(events: AsyncIterator[dict]) -> AsyncIterator[bytes]:
    """Server-sent events as the Responses API frames them: `event: <type>` and `data: {json}` per event, no
    `[DONE]` (the events themselves say how the stream ended, errors included)."""
    async for event in events:
        yield b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class EventStreamResponse(StreamingResponse):
    """`text/event-stream` of `frame(events)`. The events are closed however the response ends, so a client
    that disconnects closes the Triton stream behind them at once (not when garbage is collected)."""

    def __init__(self, events: AsyncIterator[dict], frame=event_stream):
        self._events = events
        super().__init__(frame(events), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()
            await self._events.aclose()
