"""/v1/models and readiness, both straight from the registry."""

from __future__ import annotations

from frontend.errors import ServiceUnavailable
from frontend.protocol.models import Model, ModelList
from frontend.registry import ModelRegistry, ServedModel
from frontend.triton import Backend

# Which parameter holds a model's context length, per task.
_CONTEXT_KEYS = ("context_length", "max_input_tokens")


def context_length(served: ServedModel) -> int | None:
    """The model's `max_model_len`: tokens its prompt (and completion) may hold; None when it publishes none."""
    return next((served.int_param(k) for k in _CONTEXT_KEYS if served.parameters.get(k)), None)


def to_model(served: ServedModel) -> Model:
    return Model(id=served.name, created=served.created, task=served.task, max_model_len=context_length(served))


class ModelService:
    def __init__(self, backend: Backend, registry: ModelRegistry, required: list[str]):
        self.backend = backend
        self.registry = registry
        self.required = required

    async def list(self) -> ModelList:
        return ModelList(data=[to_model(m) for m in await self.registry.list() if m.ready])

    async def retrieve(self, name: str) -> Model:
        return to_model(await self.registry.get(name))

    async def readiness(self) -> dict:
        if not await self.backend.server_ready():
            raise ServiceUnavailable("Triton is not ready")
        models = await self.registry.refresh()
        ready = sorted(name for name, m in models.items() if m.ready)
        missing = [name for name in self.required if name not in ready]
        if missing or not ready:
            raise ServiceUnavailable(f"models not ready: {', '.join(missing) or 'none served yet'}")
        return {"status": "ready", "models": ready}
