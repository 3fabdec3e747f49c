"""Keep tritonserver running under `python -m launcher serve`: a watcher thread notices when it dies, kills
what is left of its process group (the model stubs) and starts it again with backoff, or, where a platform
(Kubernetes, compose) restarts containers itself, reports the death so the launcher exits non-zero.

The frontend needs no restart: its gRPC channel reconnects to the same address, and /health/ready answers
503 until the new Triton has loaded its models.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from launcher.triton import LaunchError, TritonServer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Delay before restart number `attempt` (0-based): first_s doubling up to max_s. A Triton that stayed
    up for healthy_s before it died starts again from first_s."""

    first_s: float = 1.0
    max_s: float = 30.0
    healthy_s: float = 60.0

    def delay(self, attempt: int) -> float:
        return min(self.max_s, self.first_s * 2**attempt)


class Supervisor:
    """Runs `server`; `on_death(status)` is called (from the watcher thread) when it died and `restart` is
    off, after its group and folder are cleaned up. Use as a context manager around the frontend."""

    def __init__(self, server: TritonServer, restart: bool = True, backoff: Backoff = Backoff(),
                 on_death: Callable[[int | None], None] = lambda status: None):
        self.server = server
        self.restart = restart
        self.backoff = backoff
        self.on_death = on_death
        self.restarts = 0  # how many times Triton was started again
        self._lock = threading.Lock()  # a launch and the decision to stop never interleave
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> Supervisor:
        self.server.start()
        self._watcher = threading.Thread(target=self._watch, name="triton-supervisor", daemon=True)
        self._watcher.start()
        return self

    def stop(self) -> None:
        """Stop Triton (graceful, bounded, then its group is killed) and the watcher."""
        with self._lock:
            self._stopping.set()
        self.server.stop()
        if self._watcher is not None:
            self._watcher.join(self.server.stop_timeout_s + 15)

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _watch(self) -> None:
        # Triton is started again from this thread: PR_SET_PDEATHSIG (launcher.triton._die_with_parent)
        # fires when the thread that forked it ends, and this one lives until the supervisor stops.
        attempt = 0
        while True:
            started = time.monotonic()
            status = self.server.wait()
            if self._stopping.is_set():
                return
            log.error("tritonserver died (exit status %s) after %.0fs", status, time.monotonic() - started)
            self.server.stop()  # its orphaned stubs (the models' memory) and its backend folder
            if not self.restart:
                self.on_death(status)
                return
            if time.monotonic() - started >= self.backoff.healthy_s:
                attempt = 0
            while not self._relaunch(attempt):
                if self._stopping.is_set():
                    return
                attempt += 1
            attempt += 1

    def _relaunch(self, attempt: int) -> bool:
        """Wait the backoff, then start Triton again; False when that start failed."""
        delay = self.backoff.delay(attempt)
        log.warning("restarting tritonserver in %.0fs", delay)
        if self._stopping.wait(delay):
            return False
        with self._lock:
            if self._stopping.is_set():
                return False
            try:
                self.server.launch()
            except LaunchError as exc:
                log.error("tritonserver restart failed: %s", exc)
                return False
        try:
            self.server.wait_ready()  # stop() kills the process, which ends this wait
        except LaunchError as exc:
            log.error("tritonserver restart failed: %s", exc)
            return False
        self.restarts += 1
        log.warning("tritonserver restarted (%d restart(s) so far)", self.restarts)
        return True
