"""Fixtures shared by every test level: the exported model repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from export_scripts.__main__ import main as export_main

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = ROOT / "model_repository"


@pytest.fixture(scope="session")
def repository() -> Path:
    """model_repository/ with every default model exported (a no-op when `make export` already ran)."""
    assert export_main(["all", f"--repository={REPOSITORY}"]) == 0, "export failed"
    return REPOSITORY
