"""Engine settings (from the model config's string `parameters`) and the engine's throughput counters."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from triton_models.llm.scheduler import Limits


@dataclass(frozen=True)
class EngineConfig:
    """How the engine bounds its work; `from_parameters` reads it from the model config."""

    context_length: int
    limits: Limits = field(default_factory=Limits)
    # Minimum time between is_cancelled() calls per request (0: every step). Each call is a round trip to
    # Triton's process: checked every step it took 11% of the engine thread at one sequence (py-spy), while a
    # cancelled request running 100 ms longer costs a few tokens' work.
    cancel_check_s: float = 0.1
    # Prompt tokens per prefill run. Longer prompts are prefilled a chunk per iteration, between decode
    # steps of the running batch, which bounds both their stall and the [seq, vocab] logits they allocate.
    prefill_chunk: int = 512
    # Token slots of recent prompts' KV kept for reuse by prompts starting the same way (0: off).
    prefix_cache_tokens: int = 4096

    @classmethod
    def from_parameters(cls, params: dict[str, str], default_context: int = 2048) -> EngineConfig:
        """Settings from the model config's `parameters` (string values); missing keys take defaults."""

        def integer(key: str, default: int, minimum: int = 1) -> int:
            value = params.get(key) or str(default)
            try:
                number = int(value)
            except ValueError as exc:
                raise ValueError(f"config parameter {key} must be an integer, got {value!r}") from exc
            if number < minimum:
                raise ValueError(f"config parameter {key} must be >= {minimum}, got {number}")
            return number

        limits = Limits()
        return cls(
            context_length=integer("context_length", default_context),
            limits=Limits(**{key: integer(key, getattr(limits, key)) for key in vars(limits)}),
            prefill_chunk=integer("prefill_chunk", cls.prefill_chunk),
            prefix_cache_tokens=integer("prefix_cache_tokens", cls.prefix_cache_tokens, minimum=0),
            cancel_check_s=integer("cancel_check_ms", round(cls.cancel_check_s * 1000), minimum=0) / 1000,
        )


@dataclass
class EngineStats:
    """Counters since the last stats log line."""

    generated: int = 0  # tokens sampled
    prefilled: int = 0  # prompt tokens run through the model
    reused: int = 0  # prompt tokens taken from the prefix cache instead
    preempted: int = 0  # sequences sent back to the queue for lack of KV slots
    since: float = field(default_factory=time.monotonic)
