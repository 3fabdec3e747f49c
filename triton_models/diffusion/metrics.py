"""The image pipeline's metrics on Triton's metrics endpoint (triton_models.metrics: one set per instance).

Queue time is Triton's own: the pipeline sees a request only when Triton hands it over, and the Python backend
tells a model nothing of when the request arrived; `nv_inference_queue_duration_us` and
`nv_inference_pending_request_count` per model measure the wait (docs/operations.md, "Engine metrics").
"""

from __future__ import annotations

from triton_models.metrics import HISTOGRAM, LATENCY_BUCKETS, Spec

STEP_TIME = Spec("modelgate_engine_diffusion_step_seconds", HISTOGRAM,
                 "Time of one denoising step (UNet and scheduler) of an image request; its rate is steps "
                 "per second",
                 LATENCY_BUCKETS)
SPECS = (STEP_TIME,)
