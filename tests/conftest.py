"""Fixtures shared by every test level: the exported model repository."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from export_scripts.__main__ import main as export_main

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = ROOT / "model_repository"


def pytest_sessionstart(session):
    """Under coverage, have every Triton this session starts measure our code in its Python stubs."""
    import coverage

    from launcher.triton import COVERAGE_RCFILE_ENV

    if coverage.Coverage.current() is not None:
        os.environ[COVERAGE_RCFILE_ENV] = str(ROOT / "pyproject.toml")


@pytest.fixture(scope="session")
def repository() -> Path:
    """model_repository/ with every default model exported (a no-op when `make export` already ran)."""
    assert export_main(["all", f"--repository={REPOSITORY}"]) == 0, "export failed"
    return REPOSITORY
