"""Our models' own metrics on Triton's metrics endpoint (`pb_utils.MetricFamily`), one set per model instance.

How the Python backend of the bundled tritonserver 2.51 behaves (seen on it: docs/operations.md, "Engine
metrics"; tests/integration/test_engine_metrics.py), and what each rule here answers:

- Families are process-wide in Triton: creating a family again under its name (a second instance, a reload)
  returns the same family, and a metric created again with the same labels is the same series, counted per
  creator. When one creator deletes its metric the series leaves the endpoint while the other still writes
  into it, unseen. So every series carries an `engine` label naming its model instance and stub process
  (`smollm2-135m-instruct_0_0:4242`): a reload's new instance never shares a series with the old one.
- Triton deletes nothing for a model: a series never deleted stays on the endpoint after its model is
  unloaded (a gauge frozen at its last value). `close()`, from `finalize`, deletes them, metrics first.
- Metric calls from two threads of one stub at once crashed tritonserver (SIGSEGV): every call holds a lock.
- Each call is a round trip to Triton's process (about 20 us): callers send only what changed, in batches.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
ENGINE_LABEL = "engine"  # the model instance and its process: unique among live instances

# Seconds, for request-scale latencies (queue time, time to first token, a diffusion step) and for token gaps.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1, 2.5)


@dataclass(frozen=True)
class Spec:
    """One metric family: its name (units and `_total` in it), kind, help text, histogram buckets, and for a
    family of several series the label that tells them apart and its values."""

    name: str
    kind: str
    description: str
    buckets: tuple[float, ...] = ()
    label: str | None = None
    values: tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in (COUNTER, GAUGE, HISTOGRAM):
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")
        if (self.kind == HISTOGRAM) != bool(self.buckets):
            raise ValueError(f"{self.name}: buckets are for histograms, and every histogram needs them")
        if bool(self.label) != bool(self.values):
            raise ValueError(f"{self.name}: a label needs its values, and values their label")

    def series(self) -> list[str | None]:
        """The values of `label`, one series each; [None]: the family has one series."""
        return list(self.values) if self.label else [None]


def instance_labels(args: dict) -> dict[str, str]:
    """The labels every series of a model instance carries, from `initialize`'s args."""
    return {"model": args["model_name"], "version": str(args["model_version"]),
            ENGINE_LABEL: f"{args['model_instance_name']}:{os.getpid()}"}


class TritonMetrics:
    """The series of `specs` for one model instance, created in `initialize` and deleted by `close` in
    `finalize`. `set`, `increment` and `observe` take a family name (and the value of its label, if it has
    one); after `close` they do nothing, so a late caller cannot touch deleted metrics."""

    def __init__(self, pb_utils, specs: Iterable[Spec], labels: dict[str, str]):
        kinds = {COUNTER: pb_utils.MetricFamily.COUNTER, GAUGE: pb_utils.MetricFamily.GAUGE,
                 HISTOGRAM: pb_utils.MetricFamily.HISTOGRAM}
        self._lock = threading.Lock()
        self._families = {}
        self._series = {}
        for spec in specs:
            family = pb_utils.MetricFamily(name=spec.name, description=spec.description,
                                           kind=kinds[spec.kind])
            self._families[spec.name] = family  # held: a collected family takes its metrics with it
            extra = {"buckets": list(spec.buckets)} if spec.kind == HISTOGRAM else {}
            for value in spec.series():
                series_labels = {**labels, spec.label: value} if spec.label else labels
                self._series[spec.name, value] = family.Metric(labels=series_labels, **extra)

    def set(self, name: str, value: float, label_value: str | None = None) -> None:
        with self._lock:
            if self._series:
                self._series[name, label_value].set(value)

    def increment(self, name: str, value: float) -> None:
        with self._lock:
            if self._series:
                self._series[name, None].increment(value)

    def observe(self, name: str, values: Iterable[float]) -> None:
        """One histogram observation per value."""
        with self._lock:
            if self._series:
                metric = self._series[name, None]
                for value in values:
                    metric.observe(value)

    def close(self) -> None:
        """Delete every series, then the families (the Python backend wants that order)."""
        with self._lock:
            self._series.clear()  # the last references: each metric is deleted in Triton as it goes
            self._families.clear()
