"""Operations applied to every route as ASGI middleware, so an endpoint that lands later gets them for free.

Order, outermost first (frontend/app.py): RequestContext (request id) -> `Gate` (request id in logs,
metrics, API key and scope, rate limits and their headers, token metering) -> BodySizeLimit ->
`CacheLayer` (model label, response cache) -> the routers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import orjson

from frontend.auth import ApiKey, KeyStore, Limits, required_scope
from frontend.cache import DEFAULT_MODEL_TASKS, ResponseCache, ResponseRecorder, cacheable
from frontend.errors import APIError, AuthenticationError, PermissionDenied, RateLimited, error_response
from frontend.logs import request_id_var
from frontend.metrics import NO_MODEL, OTHER_ENDPOINT, UNKNOWN_MODEL, Metrics
from frontend.ratelimit import RateLimiter
from frontend.registry import ModelRegistry
from frontend.settings import Settings
from frontend.usage import Tally, UsageMeter

log = logging.getLogger(__name__)

CACHE_HEADER = b"x-cache"


@dataclass
class Operations:
    """Keys, limiter, cache and metrics of one app (built in its lifespan, with the other services)."""

    keys: KeyStore
    limiter: RateLimiter
    cache: ResponseCache | None
    metrics: Metrics
    metrics_public: bool

    @classmethod
    def build(cls, settings: Settings) -> Operations:
        defaults = Limits(settings.default_requests_per_minute, settings.default_tokens_per_minute,
                          settings.default_max_concurrent)
        keys = KeyStore.load(settings.api_keys_file, settings.api_keys.get_secret_value(), defaults)
        if keys.enabled and not keys.keys:
            log.warning("the API keys file %s holds no keys: every request that needs a key is refused",
                        settings.api_keys_file)
        elif keys.enabled:
            log.info("API keys: %s", ", ".join(k.name for k in keys.keys))
        else:
            log.warning("AUTHENTICATION IS OFF: no API keys configured (MODELGATE_API_KEYS_FILE, "
                        "MODELGATE_API_KEYS); every client may call every endpoint, admin included")
        cache = (ResponseCache(settings.cache_max_bytes, settings.cache_ttl_s, settings.cache_scope)
                 if settings.cache_enabled and settings.cache_max_bytes else None)
        limiter = RateLimiter(settings.redis_url, settings.request_timeout_s)
        log.info("rate limits in %s; response cache %s", "redis" if limiter.shared else "memory",
                 f"{settings.cache_max_bytes} bytes, {settings.cache_ttl_s:g}s, per {settings.cache_scope}"
                 if cache is not None else "off")
        return cls(keys, limiter, cache, Metrics(), settings.metrics_public)

    async def scrape(self, backend) -> bytes:
        """The metrics text, with Triton's reachability and the cache size measured now."""
        self.metrics.triton_up.set(1 if await backend.server_ready() else 0)
        self.metrics.cache_bytes.set(self.cache.bytes if self.cache is not None else 0)
        return self.metrics.render()

    def clear_cache(self, model: str | None = None) -> None:
        if self.cache is not None:
            self.cache.clear(model)

    async def model_label(self, registry: ModelRegistry, name: object) -> str:
        """A bounded label: the name if the repository serves it, else "unknown" ("none" when absent)."""
        if name is None:
            return NO_MODEL
        try:
            served = {m.name for m in await registry.list()}
        except APIError:
            return UNKNOWN_MODEL
        return name if isinstance(name, str) and name in served else UNKNOWN_MODEL


def _header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _endpoint(scope) -> str:
    """The route template that answered (FastAPI leaves it in the scope); for requests answered before
    routing (refused, cache hits) the path if it is a documented one; else "other". Bounded either way."""
    route = scope.get("route")
    if getattr(route, "path", None):
        return route.path
    try:
        documented = scope["app"].openapi().get("paths", {})
    except Exception:  # noqa: BLE001 - a label is not worth failing the request for
        documented = {}
    return scope["path"] if scope["path"] in documented else OTHER_ENDPOINT


class Gate:
    """Logs and metrics for every request; API keys, scopes and rate limits for every non-open path."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        ops: Operations = scope["app"].state.services.ops
        state = scope.setdefault("state", {})
        context = request_id_var.set(state.get("request_id", "-"))
        started = time.perf_counter()
        ops.metrics.in_flight.inc()
        status = [500]
        try:
            await self._guarded(ops, scope, receive, send, state, status, started)
        finally:
            endpoint, model = _endpoint(scope), state.get("model", NO_MODEL)
            ops.metrics.requests.labels(endpoint, model, str(status[0])).inc()
            ops.metrics.request_duration.labels(endpoint, model).observe(time.perf_counter() - started)
            ops.metrics.in_flight.dec()
            request_id_var.reset(context)

    async def _guarded(self, ops: Operations, scope, receive, send, state: dict, status: list, started: float):
        key, limit_headers = None, []
        needed = required_scope(scope["path"], ops.metrics_public)
        if needed is not None:
            try:
                key = ops.keys.authenticate(_header(scope, b"authorization"))
                ops.keys.authorize(key, needed)
                limit_headers = await ops.limiter.admit(key)
            except APIError as error:
                if isinstance(error, (AuthenticationError, PermissionDenied)):
                    ops.metrics.auth_failures.labels(str(error.status)).inc()
                    log.info("refused %s %s: %s", scope["method"], scope["path"], error.code)
                elif isinstance(error, RateLimited):
                    ops.metrics.rate_limited.labels(_limit_kind(error)).inc()
                    log.info("rate limited %s: %s", key.name if key else "-", error.message)
                status[0] = error.status
                return await error_response(error, getattr(error, "headers", None))(scope, receive, send)
            state["api_key"] = key
        meter = UsageMeter(started)
        finished = False

        async def observed(message):
            nonlocal finished
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), *limit_headers]
                meter.start(message["headers"])
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    await self._count(ops, state, key, meter.feed(message["body"], time.perf_counter()))
                if not message.get("more_body", False):
                    # Charged before the last byte leaves: the client's next request (on any replica) sees it.
                    finished = True
                    await self._count(ops, state, key, meter.finish())
            await send(message)

        try:
            await self.app(scope, receive, observed)
            if not finished:  # the app ended without a final body message (client gone)
                await self._count(ops, state, key, meter.finish())
        finally:
            if key is not None:
                await ops.limiter.release(key)

    @staticmethod
    async def _count(ops: Operations, state: dict, key: ApiKey | None, tally: Tally) -> None:
        if state.get("cache") == "hit":  # replayed: no model work, no tokens, no latency to measure
            return
        model = state.get("model", NO_MODEL)
        m = ops.metrics
        if tally.first_token_s is not None:
            m.time_to_first_token.labels(model).observe(tally.first_token_s)
        for gap in tally.inter_token_s:
            m.inter_token_latency.labels(model).observe(gap)
        if tally.prompt_tokens:
            m.prompt_tokens.labels(model).inc(tally.prompt_tokens)
        if tally.completion_tokens:
            m.completion_tokens.labels(model).inc(tally.completion_tokens)
        if key is not None and tally.tokens:
            await ops.limiter.charge_tokens(key, tally.tokens)


def _limit_kind(error: RateLimited) -> str:
    message = error.message
    return "tokens" if "tokens per minute" in message else "concurrent" if "concurrent" in message else "requests"


async def _buffered(receive):
    """The whole request body (BodySizeLimit, outside, bounds it) and a receive that replays it."""
    messages, chunks = [], []
    while True:
        message = await receive()
        messages.append(message)
        chunks.append(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body"):
            break

    async def replay():
        return messages.pop(0) if messages else await receive()

    return b"".join(chunks), replay


class CacheLayer:
    """Labels the request with its model, and answers deterministic requests from the response cache.

    Bypass: `Cache-Control: no-cache` or `x-cache-bypass: 1` (the fresh answer is stored), `Cache-Control:
    no-store` (nothing read or stored). Responses say `x-cache: hit|miss|bypass` on cacheable paths.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        services = scope["app"].state.services
        ops: Operations = services.ops
        raw, receive = await _buffered(receive)
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        path = scope["path"]
        name = body.get("model") if isinstance(body, dict) else None
        if name is None and isinstance(body, dict) and path in DEFAULT_MODEL_TASKS:
            name = await _default_model(services.registry, DEFAULT_MODEL_TASKS[path])
        state = scope.setdefault("state", {})
        state["model"] = await ops.model_label(services.registry, name)
        if ops.cache is None or not cacheable(path, body) or state["model"] in (NO_MODEL, UNKNOWN_MODEL):
            return await self.app(scope, receive, send)
        try:
            model = await services.registry.get(name)
        except APIError:  # not ready, say: the endpoint answers with its own envelope
            return await self.app(scope, receive, send)
        directives = (_header(scope, b"cache-control") or "").lower()
        no_store = "no-store" in directives
        bypass = no_store or "no-cache" in directives or _header(scope, b"x-cache-bypass") in ("1", "true")
        key = state.get("api_key")
        cache_key = ops.cache.key(key.name if key else "", model.name, model.version, path, body)
        if not bypass:
            hit = ops.cache.get(cache_key)
            if hit is not None:
                ops.metrics.cache_hits.labels(path).inc()
                state["cache"] = "hit"
                return await _replay(hit, send)
            ops.metrics.cache_misses.labels(path).inc()
        state["cache"] = "bypass" if bypass else "miss"
        recorder = ResponseRecorder(model.name)

        async def recording(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (CACHE_HEADER, state["cache"].encode())]
            recorder.observe(message)
            await send(message)

        await self.app(scope, receive, recording)
        response = recorder.result()
        if response is not None and not no_store and ops.cache.put(cache_key, response):
            ops.metrics.cache_stores.labels(path).inc()
            ops.metrics.cache_bytes.set(ops.cache.bytes)


async def _default_model(registry: ModelRegistry, task: str) -> str | None:
    try:
        return next((m.name for m in await registry.list() if m.task == task and m.ready), None)
    except APIError:
        return None


async def _replay(response, send) -> None:
    headers = [(k, v) for k, v in response.headers if k != CACHE_HEADER]
    await send({"type": "http.response.start", "status": response.status,
                "headers": [*headers, (CACHE_HEADER, b"hit")]})
    for chunk in response.chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
