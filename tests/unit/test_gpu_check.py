"""The GPU check is ready to run: its network table works on CPU, and the script stops at once without a GPU."""

from __future__ import annotations

import subprocess

import onnxruntime as ort
import pytest

from bench import gpu_check
from export_scripts import engines
from tests.unit.test_engines import repository  # noqa: F401 - the fixture

ROOT = gpu_check.ROOT


def test_network_table_on_this_host(repository):  # noqa: F811
    rows = gpu_check.network_rows(repository, rounds=1)
    cpu = [r for r in rows if "| cpu |" in r]
    assert len(cpu) == 1 and "| relu | 4x64 | cpu | 0.0e+00 |" in cpu[0]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert any("| cuda | not in this onnxruntime |" in r for r in rows)
    assert any("| engine |" in r for r in rows)


@pytest.mark.skipif(engines.gpu_present(), reason="checks the no-GPU exit; this host has a GPU")
def test_script_stops_without_a_gpu(tmp_path):
    result = subprocess.run(["bash", ROOT / "scripts" / "gpu_check.sh"], capture_output=True, text=True, check=False,
                            env={"PATH": f"{tmp_path}:/usr/bin:/bin", "GPU_CHECK_VENV": str(tmp_path / "venv")})
    assert result.returncode == 2 and "no GPU visible" in result.stderr
    assert not (tmp_path / "venv").exists()  # nothing installed
