"""The door of every non-open route, as a FastAPI dependency: who is calling, may they, within their limits.

Routers are included with `dependencies=[admitted(SCOPE)]` (frontend/app.py); open routes (health, docs,
signed image files) are included without it. In order: authenticate the bearer key and authorize the scope
(frontend/auth.py), label the request with its model (a bounded metrics label), admit it against the key's
limits (frontend/ratelimit.py; the concurrency lease is given back when the context closes), hold its model
in use (frontend/residency.py: not evicted while the request runs), then answer
it from the response cache when it may be (frontend/cache.py). Everything learnt goes into the request's
`RequestContext`, so nothing parses the body twice or asks twice who the caller is.
"""

from __future__ import annotations

import logging

from fastapi import Depends, Request

from frontend.auth import INFERENCE, METRICS, ApiKey, KeyStore
from frontend.cache import DEFAULT_MODEL_TASKS, lookup
from frontend.context import RequestContext, context_of
from frontend.errors import (
    APIError,
    AuthenticationError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RateLimited,
    check_unicode,
)
from frontend.metrics import NO_MODEL, UNKNOWN_MODEL, Metrics
from frontend.ratelimit import RateLimiter
from frontend.registry import ModelRegistry, ServedModel

log = logging.getLogger(__name__)


def admitted(scope: str):
    """The dependency for routes of `scope` (auth.INFERENCE, ADMIN or METRICS)."""

    async def admit(request: Request) -> None:
        services = request.app.state.services
        if scope == METRICS and services.settings.metrics_public:
            return
        ctx = context_of(request)
        try:
            key = services.keys.authenticate(request.headers.get("authorization"))
            services.keys.authorize(key, scope, ctx.from_loopback)
        except (AuthenticationError, PermissionDenied) as error:
            services.metrics.auth_failures.labels(str(error.status)).inc()
            log.info("refused %s %s: %s", request.method, request.url.path, error.code)
            raise
        body = await _json_body(request)
        check_unicode(body)  # before the cache key or a label is made of it: a lone surrogate is the client's
        model = await _label(services.registry, ctx, request.url.path, body)
        units = _units(request.url.path, body)
        if units > services.settings.completions_max_prompts:  # refused before it costs the key anything
            raise InvalidRequest(f"at most {services.settings.completions_max_prompts} prompts per request, got "
                                 f"{units}", param="prompt")
        await admit_key(services.limiter, services.metrics, ctx, key, units)
        if scope == INFERENCE:
            await services.residency.hold(ctx)  # its model is in use (never evicted) until the request ends
        if body is not None:
            lookup(services.cache, services.metrics, ctx, model, request.url.path, body,
                   request.headers.get("cache-control", ""), request.headers.get("x-cache-bypass"))

    return Depends(admit)


async def admit_key(limiter: RateLimiter, metrics: Metrics, ctx: RequestContext, key: ApiKey,
                    units: int = 1) -> None:
    """Count the request (as `units` requests) against `key`'s limits (RateLimited when over one) and make it
    the request's key."""
    try:
        headers, release = await limiter.admit(key, units)
    except RateLimited as error:
        metrics.rate_limited.labels(getattr(error, "kind", "requests")).inc()
        log.info("rate limited %s: %s", key.name, error.message)
        raise
    ctx.key = key
    ctx.on_close(release)
    ctx.response_headers.extend(headers)


def named_key_admission(keys: KeyStore, limiter: RateLimiter, metrics: Metrics):
    """`admit(ctx, name)` for requests whose credential names a key (signed image URLs): that key's limits
    apply; a key that no longer exists gets the same 404 as a forged link."""

    async def admit(ctx: RequestContext, name: str) -> None:
        key = keys.named(name)
        if key is None:
            raise NotFound("No such image", code="image_not_found")
        await admit_key(limiter, metrics, ctx, key)

    return admit


def _units(path: str, body: dict | None) -> int:
    """How many requests one HTTP request counts as: each prompt of a completion is a generation of its own,
    so a list of prompts cannot buy N generations for the price of one request."""
    prompt = body.get("prompt") if body is not None and path == "/v1/completions" else None
    return max(len(prompt), 1) if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt) else 1


async def _json_body(request: Request) -> dict | None:
    """The JSON object FastAPI already parsed for the route (Starlette keeps it on the request)."""
    if request.method != "POST":
        return None
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def _label(registry: ModelRegistry, ctx: RequestContext, path: str, body: dict | None) -> ServedModel | None:
    """Set `ctx.model` to the served model's name, "unknown" or "none"; the model when it is served and ready.
    Endpoints whose `model` is optional (DEFAULT_MODEL_TASKS) are labelled with the model that will answer."""
    name = body.get("model") if body is not None else None
    if name is None and (body is None or path not in DEFAULT_MODEL_TASKS):
        ctx.model = NO_MODEL
        return None
    try:
        served = await registry.list()  # one read serves the default model's choice and the label
    except APIError:
        served = []
    if name is None:
        name = next((m.name for m in served if m.task == DEFAULT_MODEL_TASKS[path] and m.ready), None)
    if name is None:
        ctx.model = NO_MODEL
        return None
    model = next((m for m in served if m.name == name), None)
    ctx.model = model.name if model is not None else UNKNOWN_MODEL
    return model if model is not None and model.ready else None
