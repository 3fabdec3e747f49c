"""Execution provider choice: config parameter, then MODELGATE_ORT_PROVIDERS, then CUDA when ORT has it."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from triton_models.ort_runner import execution_providers

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("MODELGATE_ORT_PROVIDERS", raising=False)


def test_default_is_cuda_only_where_this_build_has_it(no_env, monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    assert execution_providers({}) == [CPU]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", CUDA, CPU])
    assert execution_providers({}) == [CUDA, CPU]


def test_config_parameter_wins_over_env(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setenv("MODELGATE_ORT_PROVIDERS", CUDA)
    assert execution_providers({}) == [CUDA, CPU]  # CPU always ends the list
    assert execution_providers({"execution_providers": CPU}) == [CPU]
    assert execution_providers({"execution_providers": f" {CPU} , {CUDA} "}) == [CUDA, CPU]


def test_a_provider_this_build_lacks_is_an_error(no_env):
    with pytest.raises(ValueError, match="not in this onnxruntime build"):
        execution_providers({"execution_providers": "NoSuchExecutionProvider"})


def test_this_cpu_build_defaults_to_cpu(no_env):
    if CUDA in ort.get_available_providers():
        pytest.skip("onnxruntime here has CUDA")
    assert execution_providers() == [CPU]
