"""The chat engine's metrics: what it records as it runs, and when that reaches Triton's metrics endpoint.

The engine thread records into plain attributes and lists (no locks, no calls into Triton) and calls
`update` once per iteration; `update` sends what changed to the sink (triton_models.metrics.TritonMetrics in
Triton) when the sequence counts changed, when the engine goes idle, or at most every `interval_s` while it
is busy (prefix-cache hits go at once). Each send is a round trip to Triton's process, so a busy engine
pays a few per interval plus one histogram observation per decode step; an idle engine's numbers are exact.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from triton_models.metrics import COUNTER, GAUGE, HISTOGRAM, LATENCY_BUCKETS, TOKEN_BUCKETS, Spec

log = logging.getLogger(__name__)

PUBLISH_EVERY_S = 0.25  # while busy: how stale a gauge on the endpoint may be

SEQUENCES = Spec("modelgate_engine_sequences", GAUGE,
                 "Sequences by state: running (in the batch or being prefilled) or waiting (queued, "
                 "preempted ones included)", label="state", values=("running", "waiting"))
KV_USED = Spec("modelgate_engine_kv_used_tokens", GAUGE,
               "KV cache token slots held by the running batch (padding included) and prompts being "
               "prefilled")
KV_CAPACITY = Spec("modelgate_engine_kv_capacity_tokens", GAUGE,
                   "KV cache token slots the scheduler may fill (max_kv_tokens)")
PREFIX_CACHE_TOKENS = Spec("modelgate_engine_prefix_cache_tokens", GAUGE,
                           "Prompt tokens whose KV the prefix cache holds for reuse")
PREEMPTIONS = Spec("modelgate_engine_preemptions_total", COUNTER,
                   "Sequences sent back to the queue for lack of KV slots (prefilled again later)")
PREFIX_HITS = Spec("modelgate_engine_prefix_cache_hit_tokens_total", COUNTER,
                   "Prompt tokens taken from the prefix cache instead of prefilled")
QUEUE_TIME = Spec("modelgate_engine_queue_time_seconds", HISTOGRAM,
                  "Time from a request's arrival in the engine to its first admission into the batch",
                  LATENCY_BUCKETS)
TIME_TO_FIRST_TOKEN = Spec("modelgate_engine_time_to_first_token_seconds", HISTOGRAM,
                           "Time from a request's arrival in the engine to its first generated token",
                           LATENCY_BUCKETS)
INTER_TOKEN_LATENCY = Spec("modelgate_engine_inter_token_latency_seconds", HISTOGRAM,
                           "Time between consecutive decode steps, each of which gives every running "
                           "sequence its next token (one observation per step)", TOKEN_BUCKETS)
SPECS = (SEQUENCES, KV_USED, KV_CAPACITY, PREFIX_CACHE_TOKENS, PREEMPTIONS, PREFIX_HITS, QUEUE_TIME,
         TIME_TO_FIRST_TOKEN, INTER_TOKEN_LATENCY)


class Sink(Protocol):
    """Where published values go: TritonMetrics in Triton, a recorder in tests."""

    def set(self, name: str, value: float, label_value: str | None = None) -> None: ...

    def increment(self, name: str, value: float) -> None: ...

    def observe(self, name: str, values: list[float]) -> None: ...


@dataclass(frozen=True)
class EngineState:
    """What the gauges show, as the engine computes it once per iteration."""

    running: int  # in the batch or being prefilled
    waiting: int
    decoding: int  # rows in the batch: 0 breaks the chain of decode steps the inter-token latency measures
    kv_used: int
    kv_capacity: int
    prefix_cache_tokens: int

    @property
    def idle(self) -> bool:
        return not (self.running or self.waiting)


class EngineMetrics:
    """The engine's recorder. Every method is called from the engine thread only."""

    def __init__(self, sink: Sink | None = None, interval_s: float = PUBLISH_EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.sink = sink  # None: record and drop (benchmarks, tests of the engine alone)
        self.interval_s = interval_s
        self.clock = clock
        self.queue_times: list[float] = []
        self.first_token_times: list[float] = []
        self.token_gaps: list[float] = []
        self.preemptions = 0
        self._last_decode: float | None = None
        self._published: dict[tuple[str, str | None], float] = {}  # gauge -> the value Triton shows
        self._published_at = float("-inf")
        self._failed = False

    # -- recording (cheap: the engine's hot loop calls these) -------------------------------------

    def queued(self, seconds: float) -> None:
        self.queue_times.append(seconds)

    def first_token(self, seconds: float) -> None:
        self.first_token_times.append(seconds)

    def decoded(self, now: float) -> None:
        """A decode step just gave every running sequence a token."""
        if self._last_decode is not None:
            self.token_gaps.append(now - self._last_decode)
        self._last_decode = now

    def preempted(self, count: int) -> None:
        self.preemptions += count

    def prefix_hit(self, tokens: int) -> None:
        """Sent at once (one call per admitted request that hit): a client that scrapes the endpoint after its
        answer sees its own hit, as tests/security/test_prefix_cache_isolation.py does."""
        if self.sink is None:
            return
        try:
            self.sink.increment(PREFIX_HITS.name, tokens)
        except Exception:  # noqa: BLE001 - a metric is not worth a request (logged once)
            self._failure()

    # -- publishing --------------------------------------------------------------------------------

    def update(self, state: EngineState) -> None:
        """Once per engine iteration: publish if the counts changed, the engine is idle or the interval
        passed."""
        if not state.decoding:
            self._last_decode = None  # the next decode step follows a gap, not a step
        now = self.clock()
        changed = (self._published.get((SEQUENCES.name, "running")) != state.running
                   or self._published.get((SEQUENCES.name, "waiting")) != state.waiting)
        if changed or state.idle or now - self._published_at >= self.interval_s:
            self._published_at = now
            self.publish(state)

    def publish(self, state: EngineState) -> None:
        """Send what changed since the last call, and everything recorded since, to the sink."""
        histograms = ((QUEUE_TIME.name, self.queue_times), (TIME_TO_FIRST_TOKEN.name, self.first_token_times),
                      (INTER_TOKEN_LATENCY.name, self.token_gaps))
        preemptions = self.preemptions
        self.queue_times, self.first_token_times, self.token_gaps = [], [], []
        self.preemptions = 0
        if self.sink is None:
            return
        gauges = {(SEQUENCES.name, "running"): state.running, (SEQUENCES.name, "waiting"): state.waiting,
                  (KV_USED.name, None): state.kv_used, (KV_CAPACITY.name, None): state.kv_capacity,
                  (PREFIX_CACHE_TOKENS.name, None): state.prefix_cache_tokens}
        try:
            if preemptions:
                self.sink.increment(PREEMPTIONS.name, preemptions)
            for name, values in histograms:
                if values:
                    self.sink.observe(name, values)
            # Gauges last: whoever sees the engine idle on the endpoint sees everything it did before.
            for key, value in gauges.items():
                if self._published.get(key) != value:
                    self.sink.set(key[0], value, key[1])
                    self._published[key] = value
        except Exception:  # noqa: BLE001 - a metric is not worth a request (logged once)
            self._failure()

    def _failure(self) -> None:
        """Say so once, keep trying."""
        if not self._failed:
            log.exception("publishing engine metrics failed")
        self._failed = True
