"""Run the tritonserver binary bundled in the nvidia-pytriton wheel, on CPU, without a container.

Used by `make serve` and by the integration-test fixtures. What it takes (see the README):
a backend directory holding the wheel's Python backend plus our Python-based backends, the wheel's
shared libraries on LD_LIBRARY_PATH, and MODELGATE_PYTHONPATH naming our code and the venv's
site-packages for the model.py shims (the stub's interpreter ignores PYTHONPATH).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from launcher.processes import stop_group

log = logging.getLogger(__name__)
triton_log = logging.getLogger("tritonserver")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
OUR_BACKENDS = PROJECT_ROOT / "backends"
# Set by the test session when it runs under coverage: the rcfile the Triton stubs should measure with.
COVERAGE_RCFILE_ENV = "MODELGATE_COVERAGE_RCFILE"
LOOPBACK = "127.0.0.1"
# Triton's protocols that change or reveal the server (load/unload with file overrides is code execution):
# only callers holding the header secret may use them. Health, metadata and inference stay open so probes
# and the frontend's data path need nothing more; the chart and compose.yaml use these same flags.
RESTRICTED_PROTOCOLS = ("model-repository", "model-config", "shared-memory", "statistics", "trace", "logging")
# Characters Triton's `<protocols>:<key>=<value>` flag parser and an HTTP header carry unchanged.
_SECRET_CHARS = re.compile(r"[A-Za-z0-9._~-]+")


class LaunchError(RuntimeError):
    """Triton could not be started; the message is one line meant for a person."""


def _die_with_parent() -> None:
    """Runs in the child before exec: if the launcher dies (even by SIGKILL), Triton gets SIGTERM."""
    try:
        import ctypes  # noqa: PLC0415

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux/glibc: the context manager still stops Triton
        pass


def wait_for_http(url: str, process: subprocess.Popen, timeout_s: float, interval_s: float = 0.2) -> bool:
    """Poll `url` until it answers 200 (True), or `process` exits or `timeout_s` passes (False)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if client.get(url).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(interval_s)
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """Whether `host:port` cannot be bound (a listener on the wildcard address counts as in use too)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def restricted_flags(api_secret: str) -> list[str]:
    """tritonserver flags that put RESTRICTED_PROTOCOLS behind the header TRITON_API_HEADER = api_secret."""
    from frontend.triton import TRITON_API_HEADER  # noqa: PLC0415 - one name for the header, both sides

    rule = f"{','.join(RESTRICTED_PROTOCOLS)}:{TRITON_API_HEADER}={api_secret}"
    return [f"--grpc-restricted-protocol={rule}", f"--http-restricted-api={rule}"]


def trace_flags(url: str, rate: int = 0, service_name: str = "modelgate-triton") -> list[str]:
    """tritonserver flags for OpenTelemetry spans, exported over OTLP/HTTP to `url` (a collector's
    `.../v1/traces`). Triton traces every request that carries a traceparent (the frontend sends one for the
    requests it samples), and every `rate`-th other request (0: none). The chart sets the same flags."""
    return ["--trace-config=mode=opentelemetry", f"--trace-config=rate={rate}", "--trace-config=count=-1",
            "--trace-config=level=TIMESTAMPS", f"--trace-config=opentelemetry,url={url}",
            f"--trace-config=opentelemetry,resource=service.name={service_name}"]


def wheel_dir() -> Path:
    """The `pytriton/tritonserver` folder of the installed wheel."""
    try:
        import pytriton  # noqa: PLC0415 - optional until someone starts Triton
    except ImportError as exc:
        raise LaunchError("nvidia-pytriton is not installed: run `make install`") from exc
    return Path(pytriton.__file__).parent / "tritonserver"


def build_backend_dir(dest: Path) -> Path:
    """Assemble `<dest>/python` (wheel backend + stub for this Python) and our Python-based backends."""
    src = wheel_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = src / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise LaunchError(f"the nvidia-pytriton wheel has no Python backend stub for Python {version}")
    python_dir = dest / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for item in (src / "backends" / "python").iterdir():
        if item.is_file():
            shutil.copy2(item, python_dir / item.name)
    shutil.copy2(stub, python_dir / stub.name)
    for backend in OUR_BACKENDS.iterdir():
        if (backend / "model.py").exists():
            target = dest / backend.name
            target.mkdir(exist_ok=True)
            shutil.copy2(backend / "model.py", target / "model.py")
    return dest


def stub_environment() -> dict[str, str]:
    """Environment for tritonserver and the Python backend stubs it spawns."""
    env = dict(os.environ)
    libs = wheel_dir().parent.parent / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH")) if p)
    site = sysconfig.get_paths()["purelib"]
    # The stub's embedded interpreter ignores PYTHONPATH; model.py shims read this variable instead.
    env["MODELGATE_PYTHONPATH"] = os.pathsep.join((str(PROJECT_ROOT), site))
    env.setdefault("OMP_NUM_THREADS", "1")  # thread counts are set per model; keep BLAS from oversubscribing
    rcfile = env.pop(COVERAGE_RCFILE_ENV, None)
    if rcfile:  # measure our code in the stubs too; each stub writes its own .coverage.* file at exit
        env["COVERAGE_PROCESS_START"] = rcfile
        env["COVERAGE_FILE"] = str(Path(rcfile).resolve().parent / ".coverage")
    return env


@dataclass
class TritonServer:
    """A tritonserver process in explicit model-control mode. Use as a context manager.

    Its HTTP, gRPC and metrics ports listen on `address` (loopback unless opened deliberately). With
    `api_secret`, Triton's RESTRICTED_PROTOCOLS answer only calls carrying that value in the header
    TRITON_API_HEADER; None leaves them open (tests that drive Triton's API directly). With `trace_url`,
    Triton exports OpenTelemetry spans there (`trace_flags`); off by default.
    """

    repository: Path
    models: list[str]
    address: str = LOOPBACK
    api_secret: str | None = field(default=None, repr=False)
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0
    cache_bytes: int = 64 * 1024 * 1024
    run_dir: Path = PROJECT_ROOT / ".run"
    startup_timeout_s: float = 180.0
    # How long a stop waits for Triton and its model processes before killing the group; Triton itself is
    # told to give in-flight requests a little less (--exit-timeout-secs), so its own stop fits inside.
    stop_timeout_s: float = 30.0
    trace_url: str = ""
    extra_args: list[str] = field(default_factory=list)
    _proc: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _tail: deque = field(default_factory=lambda: deque(maxlen=200), init=False, repr=False)
    _backend_dir: Path | None = field(default=None, init=False, repr=False)

    @property
    def connect_host(self) -> str:
        """Where a client on this machine reaches the ports: loopback when Triton listens on every address."""
        if self.address in ("0.0.0.0", "::", ""):
            return LOOPBACK
        return f"[{self.address}]" if ":" in self.address else self.address

    @property
    def grpc_headers(self) -> dict[str, str] | None:
        """gRPC metadata that unlocks the restricted protocols (None when they are open)."""
        from frontend.triton import TRITON_GRPC_API_METADATA  # noqa: PLC0415

        return {TRITON_GRPC_API_METADATA: self.api_secret} if self.api_secret is not None else None

    @property
    def grpc_url(self) -> str:
        return f"{self.connect_host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.connect_host}:{self.http_port}"

    @property
    def pid(self) -> int | None:
        """The tritonserver process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def metrics_url(self) -> str:
        return f"http://{self.connect_host}:{self.metrics_port}/metrics"

    def _check(self) -> None:
        if not self.repository.is_dir():
            raise LaunchError(f"model repository {self.repository} does not exist: run `make export`")
        for name in self.models:
            if not (self.repository / name / "config.pbtxt").exists():
                raise LaunchError(f"model {name!r} is not in {self.repository}: run `make export`")
        if self.api_secret is not None and not _SECRET_CHARS.fullmatch(self.api_secret):
            raise LaunchError("the Triton API secret may hold only letters, digits and . _ ~ -")
        for attr in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(self, attr)
            if port == 0:
                setattr(self, attr, free_port())
            elif port_in_use(port, self.address.strip("[]") or "0.0.0.0"):
                name = attr.replace("_", " ")
                raise LaunchError(f"port {port} ({name}) is already in use on {self.address}")

    def command(self, backend_dir: Path) -> list[str]:
        binary = wheel_dir() / "bin" / "tritonserver"
        if not binary.exists():
            raise LaunchError(f"tritonserver binary missing at {binary}: reinstall nvidia-pytriton")
        args = [
            str(binary),
            f"--model-repository={self.repository.resolve()}",
            "--model-control-mode=explicit",
            f"--backend-directory={backend_dir}",
            f"--http-address={self.address}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.address}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.address}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            f"--cache-directory={wheel_dir() / 'caches'}",
            f"--cache-config=local,size={self.cache_bytes}",
            "--log-verbose=0",
            f"--exit-timeout-secs={max(1, int(self.stop_timeout_s * 0.8))}",
        ]
        if self.api_secret is not None:
            args += restricted_flags(self.api_secret)
        if self.trace_url:
            args += trace_flags(self.trace_url)
        args += [f"--load-model={m}" for m in self.models]
        return args + self.extra_args

    def start(self) -> "TritonServer":
        """Launch tritonserver and wait until it is ready (LaunchError when it exits or times out first)."""
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> subprocess.Popen:
        """Start the process and return it, without waiting: the group it leads is Triton and its stubs."""
        self._check()
        self._backend_dir = build_backend_dir(self.run_dir / f"backends-{os.getpid()}-{self.grpc_port}")
        cmd = self.command(self._backend_dir)
        log.info("starting tritonserver on %s (grpc %s, http %s, metrics %s)", self.address, self.grpc_port,
                 self.http_port, self.metrics_port)
        try:
            self._proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=stub_environment(),
                text=True, errors="replace", start_new_session=True, preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            self._remove_backend_dir()
            raise LaunchError(f"cannot run tritonserver: {exc}") from exc
        threading.Thread(target=self._forward_log, args=(self._proc,), daemon=True).start()
        return self._proc

    def wait(self) -> int | None:
        """Block until the running tritonserver exits; its exit status (None when none was running)."""
        proc = self._proc
        return proc.wait() if proc is not None else None

    def _forward_log(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            self._tail.append(line)
            triton_log.info("%s", line)

    def _failure_reason(self) -> str:
        for line in reversed(self._tail):
            low = line.lower()
            if "error" in low or "failed" in low or "unable" in low:
                return line.strip()
        return self._tail[-1].strip() if self._tail else "no output"

    def wait_ready(self) -> None:
        """Wait for the launched process to be ready; when it is not, stop it and raise LaunchError."""
        proc = self._proc
        if proc is None:
            raise LaunchError("tritonserver was stopped before it was ready")
        if wait_for_http(f"{self.http_url}/v2/health/ready", proc, self.startup_timeout_s, 0.25):
            return
        if proc.poll() is not None:
            time.sleep(0.2)  # let the log thread drain
            self.stop()  # its stubs and backend folder
            raise LaunchError(f"tritonserver exited ({proc.returncode}): {self._failure_reason()}")
        self.stop()
        raise LaunchError(
            f"tritonserver not ready after {self.startup_timeout_s:.0f}s: {self._failure_reason()}")

    def stop(self, timeout_s: float | None = None) -> None:
        """Triton's graceful stop (SIGINT: unload the models, stop their stubs), bounded by `timeout_s`
        (default stop_timeout_s), then SIGKILL to what is left of its process group; the backend folder
        goes too. A Triton that already died has its orphaned stubs killed at once."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_group(proc, self.stop_timeout_s if timeout_s is None else timeout_s, signal.SIGINT)
        self._remove_backend_dir()

    def _remove_backend_dir(self) -> None:
        folder, self._backend_dir = self._backend_dir, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
