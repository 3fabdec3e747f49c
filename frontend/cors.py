"""CORS for web pages that call the API (the openai SDK with `dangerouslyAllowBrowser: true`): Starlette's
CORSMiddleware, told what that SDK sends and reads. Off unless `MODELGATE_CORS_ORIGINS` names origins.

Credentials are never allowed (no cookies: the API takes bearer keys), so `*` is safe to offer, but only
when asked for by name. A request from any other origin (or none) passes the middleware by and gets no CORS
header at all: its preflight is the API's own 405, and its page cannot read any answer.
"""

from __future__ import annotations

import re

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware

ANY = "*"
METHODS = ("GET", "POST", "DELETE", "OPTIONS")
# Beyond the CORS-safelisted headers: what openai-node 6.x sends from a browser (client.ts `buildHeaders`,
# internal/detect-platform.ts, its polling and stream helpers), and this server's own request headers.
HEADERS = (
    "Authorization", "Content-Type", "User-Agent", "OpenAI-Organization", "OpenAI-Project", "OpenAI-Beta",
    "Idempotency-Key", "X-Stainless-Lang", "X-Stainless-Package-Version", "X-Stainless-OS", "X-Stainless-Arch",
    "X-Stainless-Runtime", "X-Stainless-Runtime-Version", "X-Stainless-Retry-Count", "X-Stainless-Timeout",
    "X-Stainless-Helper-Method", "X-Stainless-Poll-Helper", "X-Stainless-Custom-Poll-Interval",
    "X-Request-ID", "Cache-Control", "X-Cache-Bypass",
)
# Response headers a page may read: the SDK reads x-request-id (errors, `_request_id`) and retry-after (its
# retries); the rate-limit budget and the cache verdict are ours (docs/operations.md).
EXPOSED = (
    "x-request-id", "retry-after", "x-cache",
    *(f"x-ratelimit-{what}-{kind}" for kind in ("requests", "tokens") for what in ("limit", "remaining", "reset")),
)
MAX_AGE_S = 600  # how long a browser reuses a preflight's answer

# scheme://host[:port], as a browser sends it in `Origin`: no path, no trailing slash.
_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:\d{1,5})?$", re.IGNORECASE)


def check_origins(origins: list[str]) -> list[str]:
    """The configured origins, or ValueError naming the first that a browser would never send (a trailing
    slash or a path never matches; `null` is what sandboxed pages and files send: never trust it)."""
    if ANY in origins and len(origins) > 1:
        raise ValueError("`*` allows every origin: give it alone, or list origins")
    for origin in origins:
        if origin != ANY and not _ORIGIN.match(origin):
            raise ValueError(f"`{origin}` is not an origin: scheme://host[:port], no path or trailing slash "
                             "(e.g. https://app.example.com)")
    return origins


class AllowedOriginsOnly:
    """Starlette's CORSMiddleware for requests from an allowed origin; every other request goes straight to
    the app (Starlette alone would still tell a refused origin the exposed headers, and answer its preflight
    with the allowed methods and headers)."""

    def __init__(self, app, **options):
        self.app = app
        self.cors = CORSMiddleware(app, **options)

    async def __call__(self, scope, receive, send):
        origin = Headers(scope=scope).get("origin") if scope["type"] == "http" else None
        allowed = origin is not None and self.cors.is_allowed_origin(origin)
        await (self.cors if allowed else self.app)(scope, receive, send)


def install(app: FastAPI, origins: list[str]) -> None:
    """Add CORS as the app's outermost middleware (call it last): a preflight is answered before any key is
    asked for, and every answer, errors of the layers inside included (413), carries the headers."""
    if origins:
        app.add_middleware(AllowedOriginsOnly, allow_origins=origins, allow_methods=METHODS, allow_headers=HEADERS,
                           allow_credentials=False, expose_headers=EXPOSED, max_age=MAX_AGE_S)
