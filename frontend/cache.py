"""Response cache: exact-match, deterministic requests only, per API key by default.

`ResponseCache` is an LRU with a time to live (cachetools.TTLCache, sized in bytes). A cached response is
the status, the headers and the body chunks exactly as the app sent them, so a hit is byte for byte
the miss, and a hit on a streaming request replays the same SSE events. The lookup runs after
authentication and admission (frontend/admission.py calls `lookup`); a hit raises `CacheHit`, answered by
replaying it; a miss is recorded on its way out by `CacheRecorder`. It applies to every path in `POLICIES`:
an endpoint that lands later gets caching by adding one line there.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from cachetools import TTLCache
from starlette.responses import Response

from frontend.context import RequestContext, context_of
from frontend.metrics import Metrics
from frontend.registry import ServedModel

CACHE_HEADER = b"x-cache"

# Fields that never change the output; everything else is part of the key (model version included).
IGNORED_FIELDS = frozenset({"user", "metadata"})
SSE_DONE = b"data: [DONE]\n\n"


def _sampling_is_deterministic(body: dict) -> bool:
    return body.get("temperature") == 0 or body.get("seed") is not None


def _fetches_images(body: dict) -> bool:
    """http(s) image_url parts: what the URL serves may change, so the body alone does not fix the answer."""
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else ():
            image = part.get("image_url") if isinstance(part, dict) else None
            url = image.get("url") if isinstance(image, dict) else None
            if isinstance(url, str) and not url.startswith("data:"):
                return True
    return False


# Which requests may be answered from the cache: path -> "is this request deterministic?"
POLICIES: dict[str, Callable[[dict], bool]] = {
    "/v1/embeddings": lambda body: True,
    # Rerank and score, vLLM's aliases included (frontend/routers/rerank.py): deterministic, as embeddings.
    **dict.fromkeys(("/v1/rerank", "/rerank", "/v2/rerank", "/v1/score", "/score"), lambda body: True),
    "/v1/chat/completions": lambda body: _sampling_is_deterministic(body) and not _fetches_images(body),
    "/v1/completions": _sampling_is_deterministic,
    # b64_json only: a `url` answer names the host it was asked through and expires, so it is never replayed.
    "/v1/images/generations": lambda body: body.get("seed") is not None and body.get("response_format") == "b64_json",
}


# Endpoints whose `model` is optional: the first ready model of this task answers (as the service picks it).
DEFAULT_MODEL_TASKS = {"/v1/images/generations": "images"}


def cacheable(path: str, body: object) -> bool:
    policy = POLICIES.get(path)
    return policy is not None and isinstance(body, dict) and policy(body)


@dataclass(frozen=True)
class CachedResponse:
    model: str
    status: int
    headers: tuple[tuple[bytes, bytes], ...]  # as the app sent them (outer layers add theirs again)
    chunks: tuple[bytes, ...]

    @property
    def size(self) -> int:
        return sum(len(c) for c in self.chunks) + 256  # + bookkeeping

    @property
    def streamed(self) -> bool:
        return dict(self.headers).get(b"content-type", b"").startswith(b"text/event-stream")


class ResponseRecorder:
    """Collects what the app sends for one request; `result()` is the response if it is worth keeping."""

    def __init__(self, model: str):
        self.model = model
        self.status = 0
        self.headers: tuple[tuple[bytes, bytes], ...] = ()
        self.chunks: list[bytes] = []
        self.complete = False

    def observe(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = tuple((bytes(k), bytes(v)) for k, v in message.get("headers", []))
        elif message["type"] == "http.response.body":
            if message.get("body"):
                self.chunks.append(message["body"])
            self.complete = not message.get("more_body", False)

    def result(self) -> CachedResponse | None:
        """Only whole 200 responses; a stream only if it ended with [DONE] and carried no error event."""
        if self.status != 200 or not self.complete:
            return None
        response = CachedResponse(self.model, self.status, self.headers, tuple(self.chunks))
        if response.streamed:
            body = b"".join(self.chunks)
            if not body.endswith(SSE_DONE) or b'data: {"error"' in body:
                return None
        return response


class ResponseCache:
    """TTL + LRU over whole responses, bounded in bytes; `scope="key"` keeps each API key's entries apart."""

    def __init__(self, max_bytes: int, ttl_s: float, scope: str = "key", timer: Callable[[], float] = time.monotonic):
        if scope not in ("key", "global"):
            raise ValueError(f"cache scope must be 'key' or 'global', not {scope!r}")
        self.scope = scope
        self.max_bytes = max_bytes
        self._entries: TTLCache = TTLCache(maxsize=max_bytes, ttl=ttl_s, timer=timer,
                                           getsizeof=lambda r: r.size)

    def key(self, tenant: str, model: str, version: str, path: str, body: dict) -> str | None:
        """Exact-match key: tenant (unless global), path, model and version, every output-changing field."""
        fields = {k: v for k, v in body.items() if k not in IGNORED_FIELDS and k != "model"}
        try:
            canonical = orjson.dumps([tenant if self.scope == "key" else "", path, model, version, fields],
                                     option=orjson.OPT_SORT_KEYS)
        except TypeError:  # not JSON orjson can write (an integer past 64 bits): never cached
            return None
        return hashlib.sha256(canonical).hexdigest()

    def get(self, key: str) -> CachedResponse | None:
        return self._entries.get(key)

    def put(self, key: str, response: CachedResponse) -> bool:
        if response.size > self.max_bytes:
            return False
        self._entries[key] = response
        return True

    def clear(self, model: str | None = None) -> None:
        """Drop every entry, or those of one model (it was reloaded, perhaps with another config)."""
        if model is None:
            self._entries.clear()
            return
        for key, response in list(self._entries.items()):
            if response.model == model:
                self._entries.pop(key, None)

    @property
    def bytes(self) -> int:
        self._entries.expire()
        return int(self._entries.currsize)

    def __len__(self) -> int:
        return len(self._entries)


class CacheHit(Exception):  # noqa: N818 - not an error: a route answered from the cache
    """Raised by the lookup on a hit; the app's handler answers with `ReplayedResponse(hit)`."""

    def __init__(self, response: CachedResponse):
        super().__init__("cache hit")
        self.response = response


class ReplayedResponse(Response):
    """A cached response sent again, chunk for chunk, with `x-cache: hit`."""

    def __init__(self, cached: CachedResponse):
        super().__init__()
        self.cached = cached

    async def __call__(self, scope, receive, send) -> None:
        headers = [(k, v) for k, v in self.cached.headers if k not in (CACHE_HEADER, b"x-request-id")]
        await send({"type": "http.response.start", "status": self.cached.status,
                    "headers": [*headers, (CACHE_HEADER, b"hit")]})
        for chunk in self.cached.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def lookup(cache: ResponseCache | None, metrics: Metrics, ctx: RequestContext, model: ServedModel | None,
           path: str, body: dict, cache_control: str, bypass_header: str | None) -> None:
    """Answer from the cache (raises CacheHit) or mark the request to be recorded on its way out.

    Bypass: `Cache-Control: no-cache` or `x-cache-bypass: 1` (the fresh answer is stored), `Cache-Control:
    no-store` (nothing read or stored). Responses say `x-cache: hit|miss|bypass` on cacheable paths.
    """
    if cache is None or model is None or not cacheable(path, body):
        return
    directives = cache_control.lower()
    no_store = "no-store" in directives
    bypass = no_store or "no-cache" in directives or bypass_header in ("1", "true")
    # The config's digest too: a reload with another config keeps the version number.
    key = cache.key(ctx.tenant, model.name, f"{model.version}/{model.digest}", path, body)
    if key is None:
        return
    if not bypass:
        hit = cache.get(key)
        if hit is not None:
            metrics.cache_hits.labels(path).inc()
            ctx.cache = "hit"
            raise CacheHit(hit)
        metrics.cache_misses.labels(path).inc()
    ctx.cache = "bypass" if bypass else "miss"
    ctx.cache_key = None if no_store else key
    ctx.response_headers.append((CACHE_HEADER, ctx.cache.encode()))


class CacheRecorder:
    """ASGI layer: records the response of a request the lookup marked (`ctx.cache_key`) and stores it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        ctx = context_of(scope)
        recorder: ResponseRecorder | None = None

        async def recording(message):
            nonlocal recorder
            if message["type"] == "http.response.start" and ctx.cache_key is not None:
                recorder = ResponseRecorder(ctx.model)
            if recorder is not None:
                recorder.observe(message)
            await send(message)

        await self.app(scope, receive, recording)
        services = scope["app"].state.services
        cache: ResponseCache | None = services.cache
        response = recorder.result() if recorder is not None else None
        if cache is not None and response is not None and cache.put(ctx.cache_key, response):
            services.metrics.cache_stores.labels(scope["path"]).inc()
            services.metrics.cache_bytes.set(cache.bytes)
