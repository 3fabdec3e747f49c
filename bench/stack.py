"""The product as users run it, for benchmarks: the real tritonserver and the frontend in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from launcher.triton import TritonServer, free_port

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
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or frontend.poll() is not None:
                    raise RuntimeError("frontend did not become ready")
                time.sleep(0.2)
            yield url
        finally:
            frontend.terminate()
            frontend.wait(10)
