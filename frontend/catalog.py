"""What each repository model is, also while Triton has it unloaded.

Triton's repository index names every model in the repository, but a model that is not loaded has no config
to read (Triton answers NOT_FOUND). To list such a model, check a request's task against it before loading
it, and load what it uses, the registry remembers the config of every model it saw READY (`learn`); with
MODELGATE_REDIS_URL the knowledge is shared, so a replica started after a model was unloaded knows it too;
with MODELGATE_MODEL_REPOSITORY (the repository folder as this frontend sees it, read-only) the config.pbtxt of
a model nobody has seen loaded is read from there. Triton's own config wins whenever the model is loaded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import redis.asyncio as aioredis
from google.protobuf import json_format, text_format
from redis.exceptions import RedisError
from tritonclient.grpc import model_config_pb2

from triton_models import config_parameters
from triton_models.contract import model_kind

log = logging.getLogger(__name__)

REDIS_KEY = "modelgate:catalog"
MISS_TTL_S = 30.0  # a name no source knew is looked up again after this


@dataclass(frozen=True)
class ModelSpec:
    """The parts of a model's config the frontend acts on."""

    name: str
    kind: str
    parameters: dict[str, str] = field(hash=False)
    steps: tuple[str, ...] = ()  # an ensemble's composing models: Triton loads them with it

    @property
    def task(self) -> str:
        return self.parameters.get("openai_task", "")

    @property
    def uses(self) -> tuple[str, ...]:
        """Models this one names in a `*_model` parameter (a BLS pipeline's networks, an ensemble's tokenizer):
        Triton does not load the BLS ones with it, so frontend.residency does."""
        return tuple(sorted({v for k, v in self.parameters.items() if k.endswith("_model") and v and v != self.name}))

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(sorted(set(self.steps) | set(self.uses)))

    @classmethod
    def from_config(cls, name: str, config: dict) -> "ModelSpec":
        steps = [s.get("model_name", "") for s in config.get("ensemble_scheduling", {}).get("step", [])]
        return cls(name, model_kind(config), config_parameters(config), tuple(sorted({s for s in steps if s})))

    def to_json(self) -> bytes:
        return orjson.dumps({"kind": self.kind, "parameters": self.parameters, "steps": list(self.steps)})

    @classmethod
    def from_json(cls, name: str, data: bytes) -> "ModelSpec":
        raw = orjson.loads(data)
        return cls(name, raw["kind"], dict(raw["parameters"]), tuple(raw.get("steps", ())))


def read_repository_config(repository: Path, name: str) -> ModelSpec | None:
    """The spec in `<repository>/<name>/config.pbtxt`, None when absent or unreadable."""
    if not name or any(c in name for c in "/\\\0") or name in (".", ".."):
        return None
    path = repository / name / "config.pbtxt"
    try:
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    except FileNotFoundError:
        return None
    except (OSError, text_format.ParseError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return None
    return ModelSpec.from_config(name, json_format.MessageToDict(config, preserving_proto_field_name=True))


class ModelCatalog:
    """Specs by model name: this process's, then Redis, then the repository folder."""

    def __init__(self, redis_url: str = "", repository: str = ""):
        self._specs: dict[str, ModelSpec] = {}
        self._missed: dict[str, float] = {}  # name -> when every source last failed to know it
        self._redis = aioredis.Redis.from_url(redis_url) if redis_url else None
        self._repository = Path(repository) if repository else None

    def get(self, name: str) -> ModelSpec | None:
        return self._specs.get(name)

    async def learn(self, spec: ModelSpec) -> None:
        """Remember `spec`, read from Triton while the model is loaded (shared when it changed)."""
        self._missed.pop(spec.name, None)
        if self._specs.get(spec.name) == spec:
            return
        self._specs[spec.name] = spec
        if self._redis is not None:
            try:
                await self._redis.hset(REDIS_KEY, spec.name, spec.to_json())
            except RedisError as exc:
                log.error("the model catalog in Redis is unavailable: %s", exc)

    async def lookup(self, names: list[str]) -> None:
        """Try the shared sources for `names` this process does not know (each at most every MISS_TTL_S)."""
        now = time.monotonic()
        wanted = [n for n in names if n not in self._specs and now - self._missed.get(n, float("-inf")) > MISS_TTL_S]
        if not wanted:
            return
        if self._redis is not None:
            try:
                found = await self._redis.hmget(REDIS_KEY, wanted)
            except RedisError as exc:
                log.error("the model catalog in Redis is unavailable: %s", exc)
                found = [None] * len(wanted)
            for name, data in zip(wanted, found):
                if data is not None:
                    self._specs[name] = ModelSpec.from_json(name, data)
        for name in wanted:
            if name not in self._specs and self._repository is not None:
                spec = read_repository_config(self._repository, name)
                if spec is not None:
                    self._specs[name] = spec
            if name not in self._specs:
                self._missed[name] = now

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
