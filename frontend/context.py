"""One `RequestContext` per request: who is calling, which model, what it used, what to undo when it ends.

`ContextLayer` (frontend/middleware.py) creates it before anything else runs; the admission dependency
(frontend/admission.py) fills in the key and the model; services record exact usage into it; the layers
around the app read it (metering, cache recording) and `close()` gives back what admission took (its
concurrency lease), however the response ended.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from frontend.auth import ANONYMOUS, ApiKey
from frontend.metrics import NO_MODEL
from frontend.usage import Usage

log = logging.getLogger(__name__)

STATE_KEY = "context"


@dataclass
class RequestContext:
    request_id: str
    client_host: str | None
    started: float = field(default_factory=time.perf_counter)
    key: ApiKey | None = None  # None until admitted (open paths stay None)
    model: str = NO_MODEL  # a bounded metrics label (frontend/metrics.py)
    usage: Usage = field(default_factory=Usage)
    cache: str | None = None  # "hit", "miss" or "bypass" on cacheable requests
    cache_key: str | None = None  # set on a miss that may be stored
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # x-ratelimit-*, x-cache
    _on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list, repr=False)

    @property
    def tenant(self) -> str:
        """The API key's name ("" without authentication): what per-tenant state is keyed by."""
        return self.key.name if self.key is not None else ""

    def tenant_salt(self, shared: bool) -> str | None:
        """The chat engine's `cache_salt`: prefixes are shared only between requests of one tenant (never
        the key itself, only a digest of its name), or by everyone when `shared`."""
        if shared or self.key is None or self.key.name == ANONYMOUS:  # no keys: one tenant
            return None
        return hashlib.sha256(f"modelgate-tenant:{self.key.name}".encode()).hexdigest()[:32]

    @property
    def from_loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.client_host or "").is_loopback
        except ValueError:
            return False

    def on_close(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._on_close.append(callback)

    async def close(self) -> None:
        callbacks, self._on_close = self._on_close, []
        for callback in reversed(callbacks):
            try:
                await callback()
            except Exception:  # noqa: BLE001 - one failed release must not keep the others
                log.exception("releasing a request's resources failed")


def context_of(holder) -> RequestContext:
    """The context of a Request (anything with `.scope`) or of an ASGI scope."""
    scope = getattr(holder, "scope", holder)
    return scope["state"][STATE_KEY]
