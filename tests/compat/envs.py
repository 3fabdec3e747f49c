"""One virtual environment per client, from a lock file in the repo; a client script run in it.

Some clients cannot share the suite's venv (instructor 1.17 pins jiter<0.15, which takes openai back to 3.3;
llama-index-llms-openai pins openai<3; openai-python 2.x is a second openai; LiteLLM brings boto3 and pins of
its own). Each gets `requirements/<name>.txt`: its top-level `==` pins, then,
below its `# resolved` line, everything pip resolved for them (`python -m tests.compat.envs lock <name>`
rewrites that part), installed with `--no-deps` so every build is the same. The env lives in
`~/.cache/modelgate/compat/<name>-<key>`, the key a hash of the lock's text and the Python version: editing
the lock or changing Python builds a new one, anything else reuses it. It is built in a temporary folder and
renamed into place when complete, so an interrupted build is never reused. pip runs with the machine's own
configuration (indexes, find-links, constraints).

A client script gets the server in MODELGATE_BASE_URL and MODELGATE_MODEL, prints its JSON result as the last
line of stdout, and exits non-zero when the client fails (its traceback is the test's failure message).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements"
CLIENTS = HERE / "clients"
RESOLVED = "# resolved"  # the lock's lines from this marker on are pip's resolution of the lines above it
# -E -s: the parent's PYTHONPATH (the suite's venv, coverage) and user site-packages stay out of the env.
ISOLATED = ("-E", "-s")
# Clients run offline: one that fetches something at run time (tiktoken encodings, nltk data) fails here
# rather than passing only where the network is open. Loopback, where the server listens, bypasses the dead
# proxy.
DEAD_PROXY = "http://127.0.0.1:9"


class ClientFailed(AssertionError):
    """A client script exited non-zero or printed no JSON; the message carries its stderr."""


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modelgate" / "compat"


def env_dir(name: str) -> Path:
    text = (REQUIREMENTS / f"{name}.txt").read_text()
    key = hashlib.sha256(f"{text}\n{platform.python_implementation()} {platform.python_version()}".encode())
    return cache_root() / f"{name}-{key.hexdigest()[:16]}"


def _run(command: list, timeout: float) -> str:
    proc = subprocess.run([str(c) for c in command], check=False, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(map(str, command))} exited {proc.returncode}:\n"
                           f"{proc.stdout[-3000:]}{proc.stderr[-6000:]}")
    return proc.stdout


@functools.cache
def ensure_env(name: str) -> Path:
    """The env's folder, built first if missing (about half a minute per client, once per lock and Python)."""
    final = env_dir(name)
    if (final / "bin" / "python").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{name}-*"):  # builds killed before their cleanup ran
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    building = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        python = building / "bin" / "python"
        _run([sys.executable, *ISOLATED, "-m", "venv", "--clear", building], 300)
        # --no-compile, then compileall with the final path written in: the bytecode's file names (tracebacks)
        # name the folder the env ends up in, not this temporary one.
        _run([python, *ISOLATED, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "-r",
              REQUIREMENTS / f"{name}.txt"], 900)
        _run([python, *ISOLATED, "-m", "pip", "check"], 120)  # the lock is complete and consistent
        _run([python, *ISOLATED, "-m", "compileall", "-q", "-j", "0", "-s", building, "-p", final,
              building / "lib"], 300)
        try:
            building.rename(final)  # only bin/python is used afterwards: pip's own scripts keep the old path
        except OSError:  # another session finished the same env first
            if not (final / "bin" / "python").exists():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return final


def run_client(env: str, script: str, *args: str, base_url: str, model: str, timeout: float = 180):
    """Run clients/<script> with <env>'s Python against the server; its parsed JSON result."""
    python = ensure_env(env) / "bin" / "python"
    host = urlsplit(base_url).hostname
    environ = {**os.environ, "MODELGATE_BASE_URL": base_url, "MODELGATE_MODEL": model,
               "HTTP_PROXY": DEAD_PROXY, "HTTPS_PROXY": DEAD_PROXY, "ALL_PROXY": DEAD_PROXY,
               "NO_PROXY": f"127.0.0.1,localhost,::1,{host}"}
    for variable in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        environ.pop(variable, None)  # the lower-case spellings win in some clients
    # -B: the env's bytecode was compiled at build; clients/ in the checkout gets no __pycache__
    command = [str(python), *ISOLATED, "-B", str(CLIENTS / script), *args]
    what = f"{env} client {script} {' '.join(args)}"
    try:
        proc = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout,
                              env=environ)
    except subprocess.TimeoutExpired as error:
        stderr = _text(error.stderr)[-8000:]
        raise ClientFailed(f"{what}: no answer in {timeout} s\n--- stderr ---\n{stderr}") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        raise ClientFailed(f"{what} exited {proc.returncode}\n"
                           f"--- stderr ---\n{proc.stderr[-8000:]}\n--- stdout ---\n{proc.stdout[-2000:]}")
    try:
        return json.loads(lines[-1])
    except ValueError as error:
        raise ClientFailed(f"{what}: its last stdout line is not JSON: {lines[-1][:500]}") from error


def case_value(results: dict, name: str):
    """One case's value from a script that ran several (clients/common.py `run_cases`); its traceback, as the
    test's failure, when it failed."""
    if name not in results:
        raise ClientFailed(f"the script ran no case {name!r} (it ran {sorted(results)})")
    if "error" in results[name]:
        raise ClientFailed(f"case {name!r} failed in the client:\n{results[name]['error']}")
    return results[name]["value"]


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def lock(name: str) -> None:
    """Rewrite the lock's resolved part: pip's resolution of its top-level lines, in a throwaway venv."""
    path = REQUIREMENTS / f"{name}.txt"
    head = path.read_text().split(f"\n{RESOLVED}")[0].rstrip("\n") + "\n"
    with tempfile.TemporaryDirectory() as folder:
        venv = Path(folder) / "venv"
        _run([sys.executable, *ISOLATED, "-m", "venv", venv], 300)
        top = Path(folder) / "top.txt"
        top.write_text(head)
        _run([venv / "bin" / "python", *ISOLATED, "-m", "pip", "install", "-q", "-r", top], 900)
        # --all: setuptools too, when a package needs a newer one than the venv's (llama-index-core does)
        frozen = _run([venv / "bin" / "python", *ISOLATED, "-m", "pip", "freeze", "--all", "--exclude",
                       "pip"], 120)
    path.write_text(f"{head}{RESOLVED} by `python -m tests.compat.envs lock {name}` on Python "
                    f"{platform.python_version()}:\n{frozen}")


def main(argv: list[str]) -> int:
    """`build [NAME...]`: build (or find) the envs, timing each; `lock NAME...`: re-resolve their locks."""
    command, names = argv[0], argv[1:] or sorted(p.stem for p in REQUIREMENTS.glob("*.txt"))
    if command not in ("build", "lock") or (command == "lock" and not argv[1:]):
        print("usage: python -m tests.compat.envs build [NAME...] | lock NAME...", file=sys.stderr)
        return 2
    for name in names:
        start = time.monotonic()
        if command == "lock":
            lock(name)
        else:
            ensure_env(name)
        print(f"{command} {name}: {time.monotonic() - start:.1f} s ({env_dir(name)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["build"]))
