"""Print what Triton's Python models need, read from pyproject.toml: one requirement per line.

NVIDIA's container brings its own tritonserver, so the `triton` extra goes in without nvidia-pytriton
(our CPU test harness), plus numpy from the base dependencies (numpy < 2: see docs/deploy.md).
Usage: `python3 docker/triton_requirements.py pyproject.toml > requirements.txt`.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

# Runs only in the CPU test harness, never inside NVIDIA's container.
EXCLUDED = {"nvidia-pytriton"}
FROM_BASE = {"numpy"}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def triton_requirements(pyproject: Path) -> list[str]:
    project = tomllib.loads(Path(pyproject).read_text())["project"]
    base = [r for r in project["dependencies"] if _name(r) in FROM_BASE]
    extra = [r for r in project["optional-dependencies"]["triton"] if _name(r) not in EXCLUDED]
    return base + extra


if __name__ == "__main__":
    print("\n".join(triton_requirements(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml"))))
