"""Engine metrics without Triton: the series one model instance creates and deletes (a stand-in pb_utils),
what the chat engine's recorder publishes and when, the diffusion pipeline's step timings, and the Grafana
dashboard naming only metrics that exist."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import pytest

from frontend.metrics import Metrics
from tests.unit.test_diffusion_pipeline import make, request
from triton_models.diffusion import metrics as diffusion_metrics
from triton_models.llm import metrics as llm_metrics
from triton_models.llm.metrics import (
    INTER_TOKEN_LATENCY,
    KV_CAPACITY,
    KV_USED,
    PREEMPTIONS,
    PREFIX_CACHE_TOKENS,
    PREFIX_HITS,
    QUEUE_TIME,
    SEQUENCES,
    TIME_TO_FIRST_TOKEN,
    EngineMetrics,
    EngineState,
)
from triton_models.metrics import COUNTER, GAUGE, HISTOGRAM, Spec, TritonMetrics, instance_labels

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
ARGS = {"model_name": "chat", "model_version": "1", "model_instance_name": "chat_0_0"}


class FakePbUtils:
    """MetricFamily and Metric as the Python backend's stub has them, recording every call and deletion."""

    def __init__(self):
        self.events: list[tuple] = []
        self.inside = 0  # calls in progress: more than one at once is what crashed tritonserver
        self.overlapped = False
        fake = self

        class Metric:
            def __init__(self, family, labels, buckets=None):
                self.family, self.labels, self.buckets = family, labels, buckets
                fake.events.append(("metric", family.name, tuple(sorted(labels.items())), buckets))

            def _call(self, op, value):
                fake.inside += 1
                fake.overlapped |= fake.inside > 1
                time.sleep(0.0005)
                fake.events.append((op, self.family.name, self.labels.get("state"), value))
                fake.inside -= 1

            def set(self, value):
                self._call("set", value)

            def increment(self, value):
                self._call("increment", value)

            def observe(self, value):
                self._call("observe", value)

            def __del__(self):
                fake.events.append(("delete metric", self.family.name))

        class MetricFamily:
            COUNTER, GAUGE, HISTOGRAM = "COUNTER", "GAUGE", "HISTOGRAM"

            def __init__(self, name, description, kind):
                self.name, self.kind = name, kind
                fake.events.append(("family", name, kind))

            def Metric(self, labels, buckets=None):  # the Python backend's name
                return Metric(self, labels, buckets)

            def __del__(self):
                fake.events.append(("delete family", self.name))

        self.MetricFamily = MetricFamily

    def of(self, kind: str) -> list[tuple]:
        return [e for e in self.events if e[0] == kind]


class RecordingSink:
    def __init__(self):
        self.calls: list[tuple] = []

    def set(self, name, value, label_value=None):
        self.calls.append(("set", name, label_value, value))

    def increment(self, name, value):
        self.calls.append(("increment", name, value))

    def observe(self, name, values):
        self.calls.append(("observe", name, list(values)))

    def take(self) -> list[tuple]:
        calls, self.calls = self.calls, []
        return calls


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(running=0, waiting=0, decoding=None, kv_used=0, kv_capacity=1000, prefix=0) -> EngineState:
    decoding = running if decoding is None else decoding
    return EngineState(running, waiting, decoding, kv_used, kv_capacity, prefix)


# -- the series of one model instance -----------------------------------------------------------------------

def test_specs_say_what_they_are():
    with pytest.raises(ValueError, match="buckets"):
        Spec("x_seconds", HISTOGRAM, "no buckets")
    with pytest.raises(ValueError, match="buckets"):
        Spec("x", GAUGE, "buckets on a gauge", buckets=(1.0,))
    with pytest.raises(ValueError, match="label"):
        Spec("x", GAUGE, "values without a label", values=("a",))
    with pytest.raises(ValueError, match="kind"):
        Spec("x", "summary", "not a kind the Python backend has")


@pytest.mark.parametrize("spec", [*llm_metrics.SPECS, *diffusion_metrics.SPECS], ids=lambda s: s.name)
def test_names_are_grafana_ready(spec):
    assert spec.name.startswith("modelgate_engine_")
    assert spec.name.endswith("_total") == (spec.kind == COUNTER)
    if spec.kind == HISTOGRAM:
        assert spec.name.endswith("_seconds") and list(spec.buckets) == sorted(spec.buckets)
    if spec.kind == GAUGE and spec.label is None:  # the KV and prefix cache gauges count token slots
        assert spec.name.endswith("_tokens")


def test_every_series_carries_model_version_and_its_instance():
    pb = FakePbUtils()
    TritonMetrics(pb, llm_metrics.SPECS, instance_labels(ARGS))
    families = pb.of("family")
    assert [f[1] for f in families] == [s.name for s in llm_metrics.SPECS]  # one family per spec, once
    kinds = {f[1]: f[2] for f in families}
    assert kinds[SEQUENCES.name] == "GAUGE" and kinds[PREEMPTIONS.name] == "COUNTER"
    assert kinds[TIME_TO_FIRST_TOKEN.name] == "HISTOGRAM"
    metrics = pb.of("metric")
    assert len(metrics) == len(llm_metrics.SPECS) + 1  # sequences: running and waiting
    engine = f"chat_0_0:{os.getpid()}"
    for _, name, labels, buckets in metrics:
        labels = dict(labels)
        assert {k: labels[k] for k in ("model", "version", "engine")} == {"model": "chat", "version": "1",
                                                                         "engine": engine}
        assert (buckets is not None) == (name in {QUEUE_TIME.name, TIME_TO_FIRST_TOKEN.name,
                                                 INTER_TOKEN_LATENCY.name})
    states = sorted(dict(m[2])["state"] for m in metrics if m[1] == SEQUENCES.name)
    assert states == ["running", "waiting"]


def test_two_instances_of_a_model_never_share_a_series():
    first = instance_labels(ARGS)
    second = instance_labels({**ARGS, "model_instance_name": "chat_0_1"})
    assert first["engine"] != second["engine"]
    first.pop("engine"), second.pop("engine")
    assert first == second


def test_calls_reach_their_series_and_close_deletes_metrics_before_families():
    pb = FakePbUtils()
    triton = TritonMetrics(pb, llm_metrics.SPECS, instance_labels(ARGS))
    triton.set(SEQUENCES.name, 3, "waiting")
    triton.increment(PREEMPTIONS.name, 2)
    triton.observe(QUEUE_TIME.name, [0.5, 1.5])
    assert pb.events[-4:] == [("set", SEQUENCES.name, "waiting", 3), ("increment", PREEMPTIONS.name, None, 2),
                              ("observe", QUEUE_TIME.name, None, 0.5),
                              ("observe", QUEUE_TIME.name, None, 1.5)]
    triton.close()
    deletions = [e for e in pb.events if e[0].startswith("delete")]
    assert len(deletions) == len(pb.of("metric")) + len(pb.of("family"))
    last_metric = max(i for i, e in enumerate(deletions) if e[0] == "delete metric")
    first_family = min(i for i, e in enumerate(deletions) if e[0] == "delete family")
    assert last_metric < first_family
    calls = len(pb.events)
    triton.set(SEQUENCES.name, 1, "running")  # a late engine step: nothing reaches deleted metrics
    triton.observe(QUEUE_TIME.name, [1.0])
    assert len(pb.events) == calls


def test_calls_from_two_threads_never_overlap():
    pb = FakePbUtils()
    triton = TritonMetrics(pb, llm_metrics.SPECS, instance_labels(ARGS))

    def hammer():
        for _ in range(20):
            triton.increment(PREEMPTIONS.name, 1)
            triton.observe(QUEUE_TIME.name, [0.1])

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(pb.of("increment")) == 60 and not pb.overlapped


# -- the chat engine's recorder ----------------------------------------------------------------------------

def test_first_publish_sends_every_gauge_then_only_changes():
    sink = RecordingSink()
    recorder = EngineMetrics(sink, clock=Clock())
    recorder.update(state(kv_capacity=4096))  # idle: published at once
    assert sink.take() == [("set", SEQUENCES.name, "running", 0), ("set", SEQUENCES.name, "waiting", 0),
                           ("set", KV_USED.name, None, 0), ("set", KV_CAPACITY.name, None, 4096),
                           ("set", PREFIX_CACHE_TOKENS.name, None, 0)]
    recorder.update(state(running=2, waiting=1, kv_used=40, kv_capacity=4096))
    assert sink.take() == [("set", SEQUENCES.name, "running", 2), ("set", SEQUENCES.name, "waiting", 1),
                           ("set", KV_USED.name, None, 40)]


def test_counters_go_as_deltas_histograms_drain_and_gauges_come_last():
    sink = RecordingSink()
    recorder = EngineMetrics(sink, clock=Clock())
    recorder.update(state())
    sink.take()
    recorder.queued(0.25)
    recorder.queued(0.5)
    recorder.first_token(0.75)
    recorder.preempted(1)
    recorder.preempted(2)
    recorder.update(state(kv_used=8))
    assert sink.take() == [("increment", PREEMPTIONS.name, 3), ("observe", QUEUE_TIME.name, [0.25, 0.5]),
                           ("observe", TIME_TO_FIRST_TOKEN.name, [0.75]), ("set", KV_USED.name, None, 8)]
    recorder.update(state(kv_used=8))
    assert sink.take() == []  # nothing new: nothing sent


def test_prefix_cache_hits_go_at_once():
    """Before the request that hit gets its answer: a client scraping after it sees its hit."""
    sink = RecordingSink()
    recorder = EngineMetrics(sink, clock=Clock())
    recorder.prefix_hit(30)
    recorder.prefix_hit(12)
    assert sink.take() == [("increment", PREFIX_HITS.name, 30), ("increment", PREFIX_HITS.name, 12)]


def test_a_busy_engine_publishes_at_most_every_interval_unless_the_counts_change():
    sink, clock = RecordingSink(), Clock()
    recorder = EngineMetrics(sink, interval_s=0.25, clock=clock)
    recorder.update(state(running=4, kv_used=100))
    sink.take()
    for step in range(1, 5):  # four steps within the interval: the KV gauge waits
        clock.now += 0.05
        recorder.update(state(running=4, kv_used=100 + step))
    assert sink.take() == []
    clock.now += 0.1  # 0.3 s since the last publish
    recorder.update(state(running=4, kv_used=110))
    assert sink.take() == [("set", KV_USED.name, None, 110)]
    clock.now += 0.01
    recorder.update(state(running=3, kv_used=90))  # a sequence left: at once
    assert sink.take() == [("set", SEQUENCES.name, "running", 3), ("set", KV_USED.name, None, 90)]
    clock.now += 0.01
    recorder.update(state(running=0, kv_used=0, prefix=64))  # idle: exact at once
    assert sink.take() == [("set", SEQUENCES.name, "running", 0), ("set", KV_USED.name, None, 0),
                           ("set", PREFIX_CACHE_TOKENS.name, None, 64)]


def test_token_gaps_are_between_consecutive_decode_steps_only():
    sink = RecordingSink()
    recorder = EngineMetrics(sink, clock=Clock())
    recorder.decoded(10.0)
    recorder.decoded(10.02)
    recorder.decoded(10.05)
    recorder.update(state(running=1))
    assert ("observe", INTER_TOKEN_LATENCY.name, pytest.approx([0.02, 0.03])) in sink.take()
    recorder.update(state(running=0))  # the batch emptied: the next decode starts a new chain
    recorder.decoded(50.0)
    recorder.decoded(50.01)
    recorder.update(state())
    assert [c for c in sink.take() if c[1] == INTER_TOKEN_LATENCY.name] == [
        ("observe", INTER_TOKEN_LATENCY.name, pytest.approx([0.01]))]


def test_without_a_sink_everything_is_dropped():
    recorder = EngineMetrics(None)
    recorder.queued(1.0)
    recorder.decoded(1.0)
    recorder.decoded(2.0)
    recorder.preempted(1)
    recorder.prefix_hit(9)
    recorder.update(state(running=1))
    assert recorder.queue_times == recorder.token_gaps == [] and recorder.preemptions == 0


def test_a_failing_sink_is_logged_once_and_the_engine_goes_on(caplog):
    class Broken(RecordingSink):
        def set(self, name, value, label_value=None):
            raise RuntimeError("stub gone")

    recorder = EngineMetrics(Broken(), clock=Clock())
    for _ in range(3):
        recorder.update(state())
    assert [r.message for r in caplog.records] == ["publishing engine metrics failed"]


# -- the diffusion pipeline ---------------------------------------------------------------------------------

def test_each_denoising_step_is_timed():
    _, pipeline = make()
    steps = []
    pipeline.generate(request(steps=5), on_step=steps.append)
    assert len(steps) == 5 and all(0 < s < 5 for s in steps)


def test_a_cancelled_generation_reports_the_steps_it_ran():
    _, pipeline = make()
    steps, calls = [], iter([False, False, True])
    with pytest.raises(Exception, match="before step 3"):
        pipeline.generate(request(steps=5), cancelled=lambda: next(calls), on_step=steps.append)
    assert len(steps) == 2


# -- the Grafana dashboard ---------------------------------------------------------------------------------

# Triton's own per-model metrics the dashboard reads (present on every tritonserver with metrics on).
TRITON_METRICS = {"nv_inference_queue_duration_us", "nv_inference_request_success", "nv_inference_count",
                  "nv_inference_pending_request_count", "nv_inference_request_failure"}


def _exposed_names() -> set[str]:
    """Every sample name our metrics put on an endpoint (histograms as _bucket, _sum and _count)."""
    names = set(TRITON_METRICS)
    for spec in (*llm_metrics.SPECS, *diffusion_metrics.SPECS):
        names |= {f"{spec.name}_bucket", f"{spec.name}_sum", f"{spec.name}_count"} if spec.kind == HISTOGRAM \
            else {spec.name}
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    for family in Metrics().registry.collect():  # the frontend's, whether or not they have samples yet
        names |= {family.name + suffix for suffix in suffixes[family.type]}
    return names


def _queries(dashboard: dict) -> list[str]:
    panels = [p for row in dashboard["panels"] for p in [row, *row.get("panels", [])]]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_dashboard_queries_only_metrics_that_exist():
    dashboard = json.loads(DASHBOARD.read_text())
    queries = _queries(dashboard)
    assert len(queries) >= 15
    exposed = _exposed_names()
    used = {name for q in queries for name in re.findall(r"\b((?:modelgate|nv)_[a-z0-9_]+)\b", q)}
    assert used - exposed == set()
    # every engine family is on the dashboard, and the frontend's request metrics too
    for spec in (*llm_metrics.SPECS, *diffusion_metrics.SPECS):
        assert any(name.startswith(spec.name) for name in used), spec.name
    assert {"modelgate_requests_total", "modelgate_time_to_first_token_seconds_bucket"} <= used


def test_dashboard_is_importable_grafana_json():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    ids = [p["id"] for row in dashboard["panels"] for p in [row, *row.get("panels", [])]]
    assert len(ids) == len(set(ids))  # Grafana keys panels by id
    for query in _queries(dashboard):
        assert query.count("(") == query.count(")"), query
        if "rate(" in query:
            assert "[$__rate_interval]" in query, query
