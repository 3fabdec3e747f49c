"""/v1/models and readiness, both straight from the registry.

With on-demand loading, repository models that are not loaded are listed too, with `status.value`
"unloaded" (llama.cpp router's shape): a request for one loads it. Without it, only loaded models are listed,
as before; a client reading only `id` sees what it can use either way.
"""

from __future__ import annotations

from frontend.errors import ModelNotReady, ServiceUnavailable
from frontend.protocol.models import LoadStatus, Model, ModelList
from frontend.registry import READY, ModelRegistry, ServedModel
from frontend.services.generation import TASKS_CHAT
from frontend.services.images import model_sizes
from frontend.triton import Backend
from triton_models.contract import SUPPORTS_EDITS

_STATUS = {READY: "loaded", "LOADING": "loading", "UNLOADING": "unloading"}  # any other state: "unloaded"

# Which parameter holds a model's context length, per task.
_CONTEXT_KEYS = ("context_length", "max_input_tokens")


def context_length(served: ServedModel) -> int | None:
    """The model's `max_model_len`: tokens its prompt (and completion) may hold; None when it publishes none."""
    return next((served.int_param(k) for k in _CONTEXT_KEYS if served.parameters.get(k)), None)


def to_model(served: ServedModel) -> Model:
    return Model(id=served.name, created=served.created, task=served.task, max_model_len=context_length(served),
                 status=LoadStatus(value=_STATUS.get(served.state, "unloaded")), **capabilities(served))


def capabilities(served: ServedModel) -> dict:
    """The extension fields of the model's task (none for other tasks: they stay null)."""
    if served.task in TASKS_CHAT:
        return {"supports_images": served.parameters.get("supports_images") == "true"}
    if served.task == "images":
        return {"sizes": model_sizes(served), "max_n": served.int_param("max_n"),
                "supports_edits": served.parameters.get(SUPPORTS_EDITS) == "true"}
    return {}


class ModelService:
    def __init__(self, backend: Backend, registry: ModelRegistry, required: list[str], on_demand: bool = False):
        self.backend = backend
        self.registry = registry
        self.required = required
        self.on_demand = on_demand  # list (and retrieve) models that load on the first request

    async def list(self) -> ModelList:
        return ModelList(data=[to_model(m) for m in await self.registry.list() if m.ready or self.on_demand])

    async def retrieve(self, name: str) -> Model:
        served = await self.registry.find(name)
        if not served.ready and not self.on_demand:
            raise ModelNotReady(f"The model `{name}` is {served.state.lower()}; try again shortly", param="model")
        return to_model(served)

    async def readiness(self) -> dict:
        if not await self.backend.server_ready():
            raise ServiceUnavailable("Triton is not ready")
        models = await self.registry.refresh()
        ready = sorted(name for name, m in models.items() if m.ready)
        missing = [name for name in self.required if name not in ready]
        if missing or not (ready or self.on_demand and models):  # on demand, an empty Triton is ready to load
            raise ServiceUnavailable(f"models not ready: {', '.join(missing) or 'none served yet'}")
        return {"status": "ready", "models": ready}
