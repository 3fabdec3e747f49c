"""The Backend the inference services call: a model gone between the registry's check and Triton's answer is
a 503 (or is loaded again on demand), never a 404.

Triton answers NOT_FOUND for a call on a model it does not have loaded. The services only call models the
registry reported READY, so that answer means the model was unloaded meanwhile: by an operator, another
replica or an idle sweep (frontend/residency.py). Seen once under load in tests/integration/test_admin.py:
the registry still had the ensemble READY within its TTL while Triton was unloading it.
"""

from __future__ import annotations

from contextlib import aclosing

from frontend.errors import ModelNotFound
from frontend.residency import Residency
from frontend.triton import Backend


class GuardedBackend:
    """The Backend the inference services call. A call that finds its model gone (Triton's NOT_FOUND for a
    model the registry had ready: unloaded meanwhile by an operator, another replica or an idle sweep) is
    retried once after an on-demand load when that is on, else answered 503 + Retry-After, never 404."""

    def __init__(self, backend: Backend, residency: Residency):
        self._backend = backend
        self._residency = residency

    def __getattr__(self, name: str):
        return getattr(self._backend, name)

    async def infer(self, model: str, inputs, outputs: list[str], request_id: str = ""):
        try:
            return await self._backend.infer(model, inputs, outputs, request_id=request_id)
        except ModelNotFound:
            await self._residency.gone(model)
        try:
            return await self._backend.infer(model, inputs, outputs, request_id=request_id)
        except ModelNotFound:
            raise self._residency.gone_error(model) from None

    async def stream(self, model: str, inputs, outputs: list[str], request_id: str = ""):
        yielded = False
        try:
            async with aclosing(self._backend.stream(model, inputs, outputs, request_id=request_id)) as responses:
                async for response in responses:
                    yielded = True
                    yield response
            return
        except ModelNotFound:
            if yielded:
                raise self._residency.gone_error(model) from None
        await self._residency.gone(model)
        try:
            async with aclosing(self._backend.stream(model, inputs, outputs, request_id=request_id)) as responses:
                async for response in responses:
                    yield response
        except ModelNotFound:
            raise self._residency.gone_error(model) from None
