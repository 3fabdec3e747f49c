"""ASGI layer: charges each request's exact usage to its key, and measures every request.

Before each body message leaves, the tokens the services recorded since the last message
(`RequestContext.usage`) are charged to the key's tokens-per-minute window and counted in the metrics, so a
request is fully charged before its last byte reaches the client (whose next request, on any replica
sharing the Redis, then sees it). A request whose client left is charged what it used when the app ends.
Request counts, durations and one access-log line per request come from here too.
"""

from __future__ import annotations

import logging
import time

from frontend.context import RequestContext, context_of
from frontend.metrics import OTHER_ENDPOINT

log = logging.getLogger("frontend.access")


def _endpoint(scope) -> str:
    """The route template that answered (FastAPI leaves it in the scope), "other" otherwise: bounded."""
    route = scope.get("route")
    return getattr(route, "path", None) or OTHER_ENDPOINT


class Metering:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        services = scope["app"].state.services
        ctx = context_of(scope)
        metrics = services.metrics
        metrics.in_flight.inc()
        status = 500

        async def metered(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                await self._settle(services, ctx)
            await send(message)

        try:
            await self.app(scope, receive, metered)
        finally:
            await self._settle(services, ctx)  # a client that left: what the engine did is still charged
            endpoint, elapsed = _endpoint(scope), time.perf_counter() - ctx.started
            metrics.requests.labels(endpoint, ctx.model, str(status)).inc()
            metrics.request_duration.labels(endpoint, ctx.model).observe(elapsed)
            metrics.in_flight.dec()
            log.info("%s %s %d %.3fs key=%s model=%s tokens=%d+%d%s", scope["method"], scope["path"], status,
                     elapsed, ctx.tenant or "-", ctx.model, ctx.usage.prompt_tokens, ctx.usage.completion_tokens,
                     f" cache={ctx.cache}" if ctx.cache else "")

    @staticmethod
    async def _settle(services, ctx: RequestContext) -> None:
        prompt, completion = ctx.usage.take_uncharged()
        metrics, model = services.metrics, ctx.model
        if ctx.usage.first_token_at is not None and completion and ctx.usage.completion_tokens == completion:
            metrics.time_to_first_token.labels(model).observe(ctx.usage.first_token_at - ctx.started)
        for gap in ctx.usage.take_gaps():
            metrics.inter_token_latency.labels(model).observe(gap)
        if prompt:
            metrics.prompt_tokens.labels(model).inc(prompt)
        if completion:
            metrics.completion_tokens.labels(model).inc(completion)
        if ctx.key is not None and prompt + completion:
            await services.limiter.charge_tokens(ctx.key, prompt + completion)
