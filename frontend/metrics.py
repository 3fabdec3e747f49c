"""Every Prometheus metric the frontend exports, in one place, on a registry owned by the app.

Label values are bounded: `endpoint` is a route template (or "other"), `model` a name from Triton's
repository index (or "unknown" / "none"), `status` an HTTP status code. Nothing from the request body
becomes a label as is.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

UNKNOWN_MODEL = "unknown"  # a model name the repository does not know
NO_MODEL = "none"  # an endpoint without a model (health, /v1/models, admin)
OTHER_ENDPOINT = "other"  # a path no route matched

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    """The metric objects. One instance per app, so several apps in one process (tests) do not collide."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("modelgate_requests_total", "HTTP requests answered",
                                ["endpoint", "model", "status"], registry=r)
        self.request_duration = Histogram("modelgate_request_duration_seconds",
                                          "Time from request to the last byte of the response",
                                          ["endpoint", "model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("modelgate_requests_in_flight", "Requests being answered", registry=r)
        self.time_to_first_token = Histogram("modelgate_time_to_first_token_seconds",
                                             "Streaming: time from request to the first event",
                                             ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.inter_token_latency = Histogram("modelgate_inter_token_latency_seconds",
                                             "Streaming: time between consecutive events",
                                             ["model"], buckets=_TOKEN_BUCKETS, registry=r)
        self.prompt_tokens = Counter("modelgate_prompt_tokens_total", "Prompt tokens (from usage)",
                                     ["model"], registry=r)
        self.completion_tokens = Counter("modelgate_completion_tokens_total",
                                         "Completion tokens (from usage, or streamed events as they are produced)",
                                         ["model"], registry=r)
        self.cache_hits = Counter("modelgate_cache_hits_total", "Response cache hits", ["endpoint"], registry=r)
        self.cache_misses = Counter("modelgate_cache_misses_total", "Response cache misses", ["endpoint"],
                                    registry=r)
        self.cache_stores = Counter("modelgate_cache_stores_total", "Responses stored in the cache", ["endpoint"],
                                    registry=r)
        self.cache_bytes = Gauge("modelgate_cache_bytes", "Bytes held by the response cache", registry=r)
        self.rate_limited = Counter("modelgate_rate_limited_total", "Requests refused with 429",
                                    ["limit"], registry=r)
        self.auth_failures = Counter("modelgate_auth_failures_total", "Requests refused with 401 or 403",
                                     ["status"], registry=r)
        self.triton_up = Gauge("modelgate_triton_up", "1 when Triton answered its readiness check at the last "
                                                      "scrape, 0 otherwise", registry=r)
        self.admin_operations = Counter("modelgate_admin_operations_total", "Model load/unload operations",
                                        ["operation", "model", "result"], registry=r)
        # Models on demand (frontend/residency.py).
        self.model_loads = Counter("modelgate_model_loads_total", "Loads on demand (result: ok, error)",
                                   ["model", "result"], registry=r)
        self.model_load_duration = Histogram("modelgate_model_load_seconds", "Time a load on demand took, from "
                                             "the load call to READY", ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.model_evictions = Counter("modelgate_model_evictions_total", "Models unloaded by the frontend (reason: "
                                       "idle, budget)", ["model", "reason"], registry=r)
        self.model_footprint = Gauge("modelgate_model_footprint_bytes", "Memory a model took at its last load on "
                                     "demand (memory: host, gpu)", ["model", "memory"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
