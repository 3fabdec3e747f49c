"""The product as users run it, for benchmarks: the real tritonserver and the frontend in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from launcher.triton import TritonServer, free_port, wait_for_http

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def running_stack(repository: Path, models: list[str], threads: int, extra_env: dict | None = None):
    """Yield the frontend's base URL; Triton's ONNX Runtime models get `threads` intra-op threads."""
    os.environ["MODELGATE_ORT_THREADS"] = str(threads)  # read by the stand-in backend in Triton's stubs
    with TritonServer(repository, models) as triton:
        port = free_port()
        env = {**os.environ, "MODELGATE_TRITON_GRPC_URL": triton.grpc_url, "MODELGATE_PORT": str(port),
               "MODELGATE_HOST": "127.0.0.1", "MODELGATE_LOG_LEVEL": "warning", **(extra_env or {})}
        frontend = subprocess.Popen([sys.executable, "-m", "frontend"], env=env, cwd=ROOT)
        url = f"http://127.0.0.1:{port}"
        try:
            if not wait_for_http(f"{url}/health/ready", frontend, 60):
                raise RuntimeError("frontend did not become ready")
            yield url
        finally:
            frontend.terminate()
            frontend.wait(10)
