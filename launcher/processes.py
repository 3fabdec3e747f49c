"""Process groups: tritonserver runs in a session of its own, and the Python backend stubs it spawns (one per
model instance, ~1 GiB for the chat model) share its process group. Stopping Triton means stopping the group:
a stub whose server died is reparented and lingers otherwise."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)

POLL_S = 0.05


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`. Zombies are left out: the reaper of an orphan
    (PID 1 of a container) may never collect them, and they hold no memory."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: signal 0 tells only whether the group exists
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it exited while we looked
            continue
        # `pid (comm) state ppid pgrp ...`: comm may hold spaces and parentheses, so split after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(proc: subprocess.Popen, deadline: float) -> bool:
    """Reap `proc` and wait until its group has no live member, until `deadline` (monotonic)."""
    while time.monotonic() < deadline:
        proc.poll()
        if proc.returncode is not None and not group_members(proc.pid):
            return True
        time.sleep(POLL_S)
    return False


def stop_group(proc: subprocess.Popen, timeout_s: float, sig: int = signal.SIGINT) -> None:
    """Send `sig` to the leader `proc` (a session leader: its pid is the group id), wait up to `timeout_s`
    until it and every process of its group are gone, then SIGKILL whatever is left of the group.

    The leader alone gets `sig`: Triton's graceful stop unloads its models and stops their stubs itself. A
    leader that was already dead (it crashed) left orphans nobody will stop: they are killed at once."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(POLL_S)
        # The leader may be gone while its stubs finish unloading: give them the rest of the bound.
        if proc.returncode is not None and _wait_gone(proc, deadline):
            return
        left = group_members(proc.pid)
        log.warning("tritonserver group %d not gone after %.0fs; killing %s", proc.pid, timeout_s,
                    ", ".join(map(str, left)) or "it")
    _signal_group(proc.pid, signal.SIGKILL)
    if not _wait_gone(proc, time.monotonic() + 10):
        log.error("processes of group %d survive SIGKILL: %s", proc.pid, group_members(proc.pid))
