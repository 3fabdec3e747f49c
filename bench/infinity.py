"""infinity-emb, the served embeddings peer a user would pick: its own virtual environment (it pins an older
transformers than the export needs), created once in the cache, started offline on the local MiniLM folder."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

VERSION = "0.0.78"
CACHE = Path(os.environ.get("MODELGATE_CACHE", Path.home() / ".cache" / "modelgate")) / "infinity-venv"
# torch 2.13.0 is the CPU wheel at hand; any other torch spec pulls CUDA builds.
REQUIREMENTS = ["torch==2.13.0", f"infinity-emb[torch,server]=={VERSION}", "numpy<2"]


def executable(venv: Path = CACHE) -> Path:
    return venv / "bin" / "infinity_emb"


def install(venv: Path = CACHE) -> Path:
    """The `infinity_emb` command, installed once into `venv`."""
    if not executable(venv).exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *REQUIREMENTS], check=True)
    return executable(venv)


@contextmanager
def server(model_dir: Path, threads: int):
    """`infinity_emb v2` (torch engine, CPU) on a free loopback port; yields (base URL, served model name)."""
    from launcher.triton import free_port, wait_for_http

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    command = [str(install()), "v2", "--model-id", str(model_dir), "--engine", "torch", "--device", "cpu",
               "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_for_http(f"{url}/models", process, 180):
            raise RuntimeError(f"infinity did not start: {' '.join(command)}")
        yield url, f"{model_dir.parent.name}/{model_dir.name}"
    finally:
        process.terminate()
        process.wait(20)
