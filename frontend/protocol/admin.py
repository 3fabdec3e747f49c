"""/admin/models: Triton's explicit model control, as this server's own (non-OpenAI) JSON.

A load's `config` override is allow-listed: `ConfigOverride` holds every field a load may change, each
closed to other keys (in Triton's JSON shape); which `parameters` a model accepts is declared per model
kind in triton_models/contract.py and checked by frontend.services.admin.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from frontend.protocol.common import Strict, StrictRequest

Count = Annotated[StrictInt, Field(ge=0)]
Positive = Annotated[StrictInt, Field(ge=1)]


class Closed(Strict):
    model_config = ConfigDict(extra="forbid")  # our own API: a misspelt field is an error, not ignored


class ClosedRequest(StrictRequest):
    model_config = ConfigDict(extra="forbid")


class InstanceGroup(Closed):
    """How many instances, and where: no `profile`, host policy or secondary devices."""

    count: Positive | None = None  # None: Triton's defaults (1, KIND_AUTO)
    kind: Literal["KIND_CPU", "KIND_GPU", "KIND_AUTO"] | None = None
    gpus: list[Count] | None = None


class QueuePolicy(Closed):
    timeout_action: Literal["REJECT", "DELAY"] | None = None
    default_timeout_microseconds: Count | None = None
    allow_timeout_override: StrictBool | None = None
    max_queue_size: Count | None = None


class DynamicBatching(Closed):
    """Merged into the model's current `dynamic_batching`: fields left out keep their values."""

    preferred_batch_size: list[Positive] | None = None
    max_queue_delay_microseconds: Count | None = None
    preserve_ordering: StrictBool | None = None
    priority_levels: Count | None = None
    default_priority_level: Count | None = None
    default_queue_policy: QueuePolicy | None = None


class StringParameter(Closed):
    string_value: StrictStr


class ConfigOverride(Closed):
    """What a load may change in the model's current config; the rest of that config is kept."""

    instance_group: list[InstanceGroup] | None = None
    dynamic_batching: DynamicBatching | None = None
    max_batch_size: Count | None = None
    parameters: dict[str, StringParameter] | None = None


class LoadRequest(ClosedRequest):
    model: str = Field(min_length=1)
    # A ConfigOverride in Triton's JSON shape (e.g. {"instance_group": [{"count": 2, "kind": "KIND_CPU"}]}),
    # checked by the admin service against the model's kind, so that a refusal names the exact key.
    config: dict[str, Any] | None = None


class UnloadRequest(ClosedRequest):
    model: str = Field(min_length=1)
    unload_dependents: bool = False


class Footprint(BaseModel):
    """Memory of the model's processes and its parts' (frontend/footprint.py), plus tritonserver's growth at
    its last load on demand; `measured`: "now" (loaded) or "at_last_load" (not loaded: its estimate)."""

    host_bytes: int | None = None
    gpu_bytes: int | None = None  # None: no nvidia-smi that sees Triton's processes
    measured: Literal["now", "at_last_load"]


class ModelResidency(BaseModel):
    """A served model's place in Triton's memory (docs/operations.md, Models on demand)."""

    pinned: bool
    idle_unload_s: float | None = None  # None: never unloaded for idleness
    last_used: int | None = None  # unix seconds: Triton's last inference, or a request through this frontend
    in_flight: int = 0  # requests on it now (every replica's, with Redis)
    footprint: Footprint | None = None  # None: Triton's processes are not visible from this frontend
    load_seconds: float | None = None  # its last load on demand


class ModelStatus(BaseModel):
    name: str
    version: str | None = None
    state: str  # Triton's: READY, LOADING, UNLOADING, UNAVAILABLE
    reason: str = ""
    task: str | None = None  # the config's openai_task; None for internal models (tokenizers, encoders)


class ListedModel(ModelStatus):
    """A model in GET /admin/models: its status, and its residency when it is a served model."""

    residency: ModelResidency | None = None


class TritonMemory(BaseModel):
    """Triton as a whole against the budgets (None: no such budget, or not measurable from here)."""

    load_on_demand: bool
    loaded_models: int
    max_loaded_models: int | None = None
    host_bytes: int | None = None
    host_budget_bytes: int | None = None
    gpu_bytes: int | None = None
    gpu_budget_bytes: int | None = None


class ModelStatusList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ListedModel]
    memory: TritonMemory | None = None
