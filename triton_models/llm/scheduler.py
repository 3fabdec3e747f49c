"""Admission control for continuous batching: a bounded waiting queue, a running-batch bound, a KV budget.

The engine thread asks `admit` before every step which waiting sequences join the batch, and
`rows_to_preempt` whether the batch still fits the KV budget after one more token per row. A preempted
sequence goes back to the front of the queue and is prefilled again (prompt + what it generated) later.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from triton_models.contract import OVERLOADED, ModelError


class Overloaded(ModelError, RuntimeError):
    """The waiting queue is full; the client should retry later (OVERLOADED, sent as UNAVAILABLE)."""

    def __init__(self, message: str):
        super().__init__(OVERLOADED, message)


@dataclass(frozen=True)
class Limits:
    max_num_seqs: int = 16  # rows in the running batch
    max_kv_tokens: int = 32768  # token slots in the KV cache, padding included
    max_queue: int = 64  # waiting requests
    max_prefill_tokens: int = 2048  # prompt tokens prefilled in one engine step (beyond the first sequence)

    def __post_init__(self):
        for name, value in vars(self).items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")


class Waiting(Protocol):
    """What the scheduler needs from a sequence."""

    request: object
    finished: bool

    @property
    def cache_tokens(self) -> int: ...


class Cache(Protocol):
    batch: int

    def cells_after(self, new_lengths: list[int]) -> int: ...


class Scheduler:
    """Holds the waiting sequences (FIFO) and decides admissions and preemptions."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.waiting: deque = deque()

    def waiting_requests(self) -> int:
        return len({id(s.request) for s in self.waiting if not s.finished})

    def enqueue(self, sequences: Seq[Waiting]) -> None:
        """Queue a new request's sequences, or raise Overloaded when max_queue requests already wait."""
        if self.waiting_requests() >= self.limits.max_queue:
            raise Overloaded(f"{self.limits.max_queue} requests are already waiting (max_queue); retry later")
        self.waiting.extend(sequences)

    def requeue(self, sequences: Seq[Waiting]) -> None:
        """Put preempted sequences back at the front, oldest first."""
        self.waiting.extendleft(reversed(list(sequences)))

    def fits_alone(self, cache_tokens: int) -> bool:
        return cache_tokens + 1 <= self.limits.max_kv_tokens

    def admit(self, cache: Cache) -> list[Waiting]:
        """Sequences that join the batch now, in queue order."""
        limits = self.limits
        admitted: list[Waiting] = []
        lengths: list[int] = []
        while self.waiting:
            seq = self.waiting[0]
            if seq.finished:  # cancelled while waiting
                self.waiting.popleft()
                continue
            if cache.batch + len(admitted) >= limits.max_num_seqs:
                break
            tokens = seq.cache_tokens
            if admitted and sum(lengths) + tokens > limits.max_prefill_tokens:
                break
            alone = cache.batch == 0 and not admitted
            if not alone and cache.cells_after([*lengths, tokens]) > limits.max_kv_tokens:
                break
            admitted.append(self.waiting.popleft())
            lengths.append(tokens)
        return admitted

    def rows_to_preempt(self, lengths: np.ndarray) -> int:
        """How many rows, from the bottom (the newest), must leave so the next step fits the KV budget.

        Returns len(lengths) when even the first row alone cannot grow by one token.
        """
        rows = len(lengths)
        for keep in range(rows, 0, -1):
            if keep * (int(lengths[:keep].max()) + 1) <= self.limits.max_kv_tokens:
                return rows - keep
        return rows
