"""What every client script shares: the server under test (from tests/compat/envs.py) and the result line."""

from __future__ import annotations

import json
import os
import sys

BASE_URL = os.environ["MODELGATE_BASE_URL"]
MODEL = os.environ["MODELGATE_MODEL"]
# Every call must reach the engine: the frontend's response cache would answer a repeated test from memory.
HEADERS = {"Cache-Control": "no-store"}


def case() -> str:
    """The case a test asked for (the script's one argument)."""
    (name,) = sys.argv[1:]
    return name


def emit(result) -> None:
    """The result, as the last line of stdout (envs.run_client parses it)."""
    print(json.dumps(result), flush=True)


def show(raw_responses: list[str]) -> None:
    """The server's raw answers, on stderr, before a failing client's traceback: what the test will report."""
    for raw in raw_responses:
        print(f"server answered: {raw}", file=sys.stderr)


def run_cases(cases: dict) -> None:
    """Run the named cases (callables returning JSON-able values), or those the arguments name, each on its
    own: one failing case is reported as its traceback, and the others still run. Emits {name: {"value": ...}}
    or {name: {"error": traceback}} (tests/compat/envs.py `case_value` turns an error into the test's failure)."""
    import traceback

    results = {}
    for name in sys.argv[1:] or cases:
        try:
            results[name] = {"value": cases[name]()}
        except Exception:  # noqa: BLE001 - the test reports it
            results[name] = {"error": traceback.format_exc()}
    emit(results)
