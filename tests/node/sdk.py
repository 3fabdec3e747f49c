"""The official openai Node SDK against the test stack, as tests/compat/envs.py runs Python clients.

`package.json` + `package-lock.json` here pin the SDK; `npm ci` installs it into `node_modules/` (git-ignored)
when that is missing or was installed from another lock, one session at a time (a lock on the lock file).
node and npm come from the machine, or are installed with apt as tests/stack.py installs redis-server.

A script is `scripts/<name>.mjs`: it imports `client`, `args` and `main` from `scripts/common.mjs`, gets the
server in MODELGATE_BASE_URL (and MODELGATE_API_KEY), its arguments in argv, prints its JSON result as the
last line of stdout and exits non-zero when the SDK fails (the stack is the test's failure message). Adding
one: write the script, then `run_script("<name>", *args, base_url=frontend.base_url)` in a test.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "scripts"
LOCK_FILES = (HERE / "package.json", HERE / "package-lock.json")
INSTALLED = HERE / "node_modules" / ".modelgate-lock-sha256"  # the digest of the lock it was installed from


class ScriptFailed(AssertionError):
    """A script exited non-zero or printed no JSON; the message carries its stderr."""


def node_tools() -> tuple[str, str]:
    """node and npm, installed with apt-get when missing (a skip only where that is impossible)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node and npm:
        return node, npm
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("node/npm are missing and cannot be installed here (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "nodejs", "npm"], check=True, env=env, capture_output=True,
                   timeout=900)
    return shutil.which("node") or "/usr/bin/node", shutil.which("npm") or "/usr/bin/npm"


def lock_digest() -> str:
    return hashlib.sha256(b"\0".join(path.read_bytes() for path in LOCK_FILES)).hexdigest()


@functools.cache
def ensure_installed() -> str:
    """node's path, with the locked SDK in node_modules (`npm ci` only when missing or the lock changed)."""
    node, npm = node_tools()
    digest = lock_digest()
    with open(LOCK_FILES[1], "rb") as held:  # parallel sessions: one installs, the others find it done
        fcntl.flock(held, fcntl.LOCK_EX)
        if not INSTALLED.exists() or INSTALLED.read_text() != digest:
            proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"], cwd=HERE,
                                  capture_output=True, text=True, timeout=900, check=False)
            if proc.returncode:
                raise RuntimeError(f"npm ci in {HERE} exited {proc.returncode}:\n{proc.stdout[-3000:]}"
                                   f"{proc.stderr[-6000:]}")
            INSTALLED.write_text(digest)
    return node


def run_script(name: str, *args, base_url: str, api_key: str = "unused", timeout: float = 180):
    """Run scripts/<name>.mjs with node against the server; its parsed JSON result."""
    node = ensure_installed()
    env = {**os.environ, "MODELGATE_BASE_URL": base_url, "MODELGATE_API_KEY": api_key}
    command = [node, str(SCRIPTS / f"{name}.mjs"), *map(str, args)]
    what = f"node {name}.mjs {' '.join(map(str, args))}"
    try:
        proc = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=HERE)
    except subprocess.TimeoutExpired as error:
        stderr = error.stderr.decode(errors="replace") if isinstance(error.stderr, bytes) else error.stderr or ""
        raise ScriptFailed(f"{what}: no answer in {timeout} s\n--- stderr ---\n{stderr[-8000:]}") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        raise ScriptFailed(f"{what} exited {proc.returncode}\n--- stderr ---\n{proc.stderr[-8000:]}\n"
                           f"--- stdout ---\n{proc.stdout[-2000:]}")
    try:
        return json.loads(lines[-1])
    except ValueError as error:
        raise ScriptFailed(f"{what}: its last stdout line is not JSON: {lines[-1][:500]}") from error
