"""How much memory Triton and each of its models take, measured from Triton's processes on this host.

What Triton 2.51 offers per model is not enough: model statistics carry `memory_usage` only from backends
built with its CUPTI memory tracker and started with `--backend-config=tensorrt,triton-backend-memory-tracker=
true` (GPU memory of TensorRT engines); the Python backend reports nothing, and the metrics endpoint has
device-wide GPU memory and host-wide RAM (0 in the pytriton wheel's build). What is measurable, honestly, is
processes: every instance of a Python-based model (the Python backend, and backends built on it such as
this repository's ONNX Runtime stand-in) runs in a `triton_python_backend_stub` process of its own, whose
first argument is the model's file in the repository (`<repository>/<model>/<version>/<file>`). So:

- a model's host memory is the PSS of its stub processes (proportional set size: pages shared with other
  processes, libpython for one, are divided between them, so sums over processes do not double count);
- its GPU memory is what `nvidia-smi` reports for those processes (when there is one);
- models that run inside tritonserver itself (native backends: TensorRT, Triton's own ONNX Runtime) show
  only as growth of the tritonserver process; frontend.residency measures that growth across the loads it
  makes (one at a time per Triton) and adds it to the model.

The limits: the frontend must see Triton's processes (same host or a shared PID namespace: `make serve`, the
tests, a pod sharing its process namespace; not compose or the chart's separate pods, where `available()`
is False and byte budgets are not enforced), find them through the process listening on Triton's gRPC port,
and GPU figures need `nvidia-smi` to see those processes (inside a container it often sees none).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

STUB = "triton_python_backend_stub"
NVIDIA_SMI_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Usage:
    host_bytes: int = 0
    gpu_bytes: int | None = None  # None: GPU memory not measurable here

    def __add__(self, other: "Usage") -> "Usage":
        gpu = None if self.gpu_bytes is None and other.gpu_bytes is None else \
            (self.gpu_bytes or 0) + (other.gpu_bytes or 0)
        return Usage(self.host_bytes + other.host_bytes, gpu)


@dataclass(frozen=True)
class Snapshot:
    """Triton's memory at one moment: its own process, and its model processes summed per model."""

    server: Usage
    models: dict[str, Usage] = field(default_factory=dict)
    pids: dict[str, frozenset[int]] = field(default_factory=dict)  # model -> its processes

    @property
    def total(self) -> Usage:
        total = self.server
        for usage in self.models.values():
            total = total + usage
        return total

    def of(self, names) -> Usage:
        """The memory of these models' processes together."""
        total = Usage()
        for name in names:
            total = total + self.models.get(name, Usage())
        return total


def _local(host: str) -> bool:
    """Whether `host` is this machine (so Triton's processes are ours to see)."""
    host = host.strip("[]")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host or "localhost", None)}
    except OSError:
        return False
    own = {a.address.split("%")[0] for nics in psutil.net_if_addrs().values() for a in nics}
    return any(ipaddress.ip_address(a.split("%")[0]).is_loopback or a in own for a in addresses)


def grpc_target(url: str) -> tuple[str, int] | None:
    """(host, port) of a Triton gRPC URL (`localhost:8001`, `dns:///triton:8001`), None when not host:port."""
    target = url.split("///", 1)[-1]
    host, _, port = target.rpartition(":")
    return (host, int(port)) if port.isdigit() else None


class ProcessMeter:
    """Snapshots of the tritonserver listening on `triton_url`'s port, when it runs on this host."""

    def __init__(self, triton_url: str):
        self._target = grpc_target(triton_url)
        self._port: int | None = None  # resolved on first use (a DNS lookup), in a worker thread
        self._resolved = False
        self._pid: int | None = None
        self._nvidia_smi = shutil.which("nvidia-smi")

    async def available(self) -> bool:
        return await asyncio.to_thread(lambda: self._process() is not None)

    def _process(self) -> psutil.Process | None:
        """The tritonserver process: found once by its port, again after it is gone (a restart)."""
        if not self._resolved:
            self._resolved = True
            if self._target is not None and _local(self._target[0]):
                self._port = self._target[1]
        if self._port is None:
            return None
        if self._pid is not None:
            try:
                process = psutil.Process(self._pid)
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    return process
            except psutil.Error:
                pass
            self._pid = None
        try:
            connections = psutil.net_connections(kind="tcp")
        except psutil.Error as exc:
            log.warning("cannot list listening sockets to find Triton: %s", exc)
            return None
        pids = {c.pid for c in connections if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == self._port
                and c.pid is not None}
        if len(pids) != 1:
            return None
        self._pid = pids.pop()
        return psutil.Process(self._pid)

    async def snapshot(self) -> Snapshot | None:
        """Now, or None when Triton's processes cannot be seen from here."""
        if self._resolved and self._port is None:
            return None
        return await asyncio.to_thread(self._snapshot)

    def _snapshot(self) -> Snapshot | None:
        process = self._process()
        if process is None:
            return None
        gpu = self._gpu_by_pid()
        try:
            server = Usage(_pss(process), gpu.get(process.pid, 0) if gpu is not None else None)
            children = process.children(recursive=True)
        except psutil.Error:
            return None
        models: dict[str, Usage] = {}
        pids: dict[str, set[int]] = {}
        for child in children:
            try:
                argv = child.cmdline()
                if len(argv) < 2 or not argv[0].endswith(STUB):
                    continue
                name = Path(argv[1]).parts[-3]  # <repository>/<model>/<version>/<file>
                usage = Usage(_pss(child), gpu.get(child.pid, 0) if gpu is not None else None)
            except (psutil.Error, IndexError):
                continue  # a stub that just exited, or one started otherwise
            models[name] = models.get(name, Usage()) + usage
            pids.setdefault(name, set()).add(child.pid)
        return Snapshot(server, models, {k: frozenset(v) for k, v in pids.items()})

    def _gpu_by_pid(self) -> dict[int, int] | None:
        """GPU bytes per process, from nvidia-smi; None without it (or when it fails)."""
        if self._nvidia_smi is None:
            return None
        try:
            out = subprocess.run([self._nvidia_smi, "--query-compute-apps=pid,used_memory",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, check=True,
                                 timeout=NVIDIA_SMI_TIMEOUT_S).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("nvidia-smi failed, GPU memory not measured: %s", exc)
            return None
        used: dict[int, int] = {}
        for line in out.splitlines():
            pid, _, mib = line.partition(",")
            if pid.strip().isdigit() and mib.strip().isdigit():
                used[int(pid)] = used.get(int(pid), 0) + int(mib) * 1024 * 1024
        return used


def _pss(process: psutil.Process) -> int:
    """Proportional set size (RSS when smaps cannot be read: another user's process)."""
    try:
        return process.memory_full_info().pss
    except (psutil.AccessDenied, AttributeError):
        return process.memory_info().rss
