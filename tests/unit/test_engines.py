"""export_scripts/engines.py: profiles from flags and config extents, gpu variants, the no-GPU behaviour, and
what a failed parity check leaves behind (a stand-in trtexec). The real build runs only where a GPU is."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import json_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2 as mc

import export_scripts.__main__ as cli
from export_scripts import engines, trt_build
from export_scripts.common import ExportError, read_config, write_config

GPU = engines.gpu_available()
RUNTIME = trt_build.runtime_available()


def config(**fields) -> mc.ModelConfig:
    return json_format.ParseDict({"name": "m", "backend": "onnxruntime", **fields}, mc.ModelConfig())


def tensor(name, dims, dtype="TYPE_FP32"):
    return {"name": name, "data_type": dtype, "dims": dims}


UNET = config(max_batch_size=8, input=[tensor("sample", [4, -1, -1]), tensor("timestep", [1])],
              parameters={k: {"string_value": v} for k, v in
                          {"trt_min_extent": "8", "trt_opt_extent": "64", "trt_max_extent": "96"}.items()})
ENCODER = config(max_batch_size=64, input=[tensor("input_ids", [-1], "TYPE_INT64")])


def test_range_flag():
    assert engines.Range.parse("1:4:8") == engines.Range(1, 4, 8)
    for bad in ("8:4:1", "0:1:2", "1:2", "a:b:c"):
        with pytest.raises(argparse.ArgumentTypeError):
            engines.Range.parse(bad)


def test_profile_from_config_extents():
    profile = engines.shape_profile(UNET)
    assert profile["sample"] == ((1, 4, 8, 8), (4, 4, 64, 64), (8, 4, 96, 96))
    assert profile["timestep"] == ((1, 1), (4, 1), (8, 1))


def test_batch_flag_is_clipped_to_max_batch_size():
    profile = engines.shape_profile(ENCODER, batch=engines.Range(2, 16, 128))
    assert profile["input_ids"] == ((2, 1), (16, 128), (64, 512))


def test_extent_flag_for_sequences_and_image_size_for_latent_networks():
    extent, image = engines.Range(4, 32, 256), engines.Range(256, 512, 1024)
    assert engines.shape_profile(ENCODER, extent=extent)["input_ids"][2] == (64, 256)
    assert engines.shape_profile(ENCODER, image_size=image)["input_ids"][2] == (64, 512)  # not a latent network
    unet = engines.shape_profile(UNET, extent=extent, image_size=image, vae_scale=8)["sample"]
    assert unet == ((1, 4, 32, 32), (4, 4, 64, 64), (8, 4, 128, 128))
    assert engines.shape_profile(UNET, extent=extent)["sample"][2] == (8, 4, 96, 96)  # extent: sequences only


def test_unbatched_static_network_has_fixed_shapes():
    static = config(max_batch_size=0, input=[tensor("latent", [1, 4, 8, 8])])
    assert engines.shape_profile(static) == {"latent": ((1, 4, 8, 8),) * 3}


def test_gpu_variants():
    plan = engines.gpu_variant(UNET, engine=True, max_batch=4)
    assert (plan.platform, plan.backend, plan.default_model_filename) == ("tensorrt_plan", "tensorrt", "model.plan")
    assert plan.max_batch_size == 4 and [g.kind for g in plan.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    cuda = engines.gpu_variant(UNET, engine=False)
    assert cuda.backend == "onnxruntime" and not cuda.optimization.execution_accelerators.gpu_execution_accelerator
    assert [g.kind for g in cuda.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    trt = engines.gpu_variant(UNET, engine=False, accelerator="tensorrt", precision="fp16")
    [accelerator] = trt.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    assert trt.parameters["trt_max_extent"].string_value == "96"  # everything else carried over


@pytest.fixture
def repository(tmp_path):
    """An identity network as a batched ONNX model folder, plus a Python model that has no engine."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "n"])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (tmp_path / "relu" / "1").mkdir(parents=True)
    onnx.save(model, tmp_path / "relu" / "1" / "model.onnx")
    write_config(tmp_path / "relu", {"name": "relu", "backend": "onnxruntime", "max_batch_size": 8,
                                     "input": [tensor("x", [-1])], "output": [tensor("y", [-1])],
                                     "parameters": {"trt_max_extent": {"string_value": "64"}}})
    write_config(tmp_path / "tok", {"name": "tok", "backend": "python"})
    return tmp_path


def export(repository, *args):
    return subprocess.run([sys.executable, "-m", "export_scripts", "engines", "--repository", repository, *args],
                          check=False, capture_output=True, text=True)


@pytest.mark.skipif(GPU, reason="checks the no-GPU message; this host has a GPU")
def test_without_a_gpu_engines_asked_for_fail_in_one_line(repository):
    result = export(repository)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "no GPU" in line and "--configs-only" in line
    assert not list(repository.glob("*/configs")) and not list(repository.glob("*/1/model.plan"))


@pytest.mark.skipif(GPU, reason="checks the no-GPU skip; this host has a GPU")
def test_all_skips_engines_without_a_gpu(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli, "EXPORTERS", {"engines": "export_scripts.engines"})
    assert cli.main(["all", "--repository", str(tmp_path)]) == 0
    assert "engines: skipped, no GPU visible" in capsys.readouterr().out


def test_all_runs_engines_with_a_gpu(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(cli, "EXPORTERS", {"engines": "export_scripts.engines"})
    monkeypatch.setattr(engines, "gpu_available", lambda: True)
    monkeypatch.setattr(engines, "run", lambda args: calls.append(args) or [])
    assert cli.main(["all", "--repository", str(tmp_path)]) == 0
    assert len(calls) == 1 and calls[0].precision == "fp16" and not calls[0].dry_run


def test_dry_run_prints_the_plan_with_flags(repository):
    result = export(repository, "--dry-run", "--batch", "1:2:4", "--extent", "1:16:32")
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    assert "--minShapes=x:1x1 --optShapes=x:2x16 --maxShapes=x:4x32 --fp16" in line
    assert not list(repository.glob("*/configs"))


def test_configs_only_writes_onnxruntime_gpu_variants(repository):
    result = export(repository, "--configs-only", "--accelerator", "tensorrt")
    assert result.returncode == 0, result.stderr
    variant = read_config(repository / "relu" / "configs" / "gpu.pbtxt")
    assert variant.backend == "onnxruntime" and variant.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert variant.optimization.execution_accelerators.gpu_execution_accelerator[0].name == "tensorrt"
    assert not (repository / "tok" / "configs").exists()


@pytest.fixture
def fake_trtexec(tmp_path_factory, monkeypatch):
    bin_dir = tmp_path_factory.mktemp("bin")
    fake = bin_dir / "trtexec"
    fake.write_text("#!/bin/sh\nfor a; do case $a in --saveEngine=*) echo plan > \"${a#--saveEngine=}\";; esac; done\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def args_for(repository, **overrides):
    parser = argparse.ArgumentParser()
    parser.add_argument("--repository", type=Path)
    parser.add_argument("--force", action="store_true")
    engines.add_arguments(parser)
    args = parser.parse_args(["--repository", str(repository), "--builder", "trtexec"])
    vars(args).update(overrides)
    return args


def test_engine_beyond_tolerance_fails_and_leaves_the_onnx_variant(repository, fake_trtexec, monkeypatch):
    monkeypatch.setattr(trt_build, "runtime_available", lambda: True)
    monkeypatch.setattr(trt_build, "parity", lambda *a: 0.5)
    with pytest.raises(ExportError, match="relu: engine differs from ONNX Runtime fp32 by 5.00e-01"):
        engines.run(args_for(repository))
    assert not (repository / "relu" / "1" / "model.plan").exists()
    assert read_config(repository / "relu" / "configs" / "gpu.pbtxt").backend == "onnxruntime"


def test_engine_within_tolerance_is_served_and_recorded(repository, fake_trtexec, monkeypatch):
    monkeypatch.setattr(trt_build, "runtime_available", lambda: True)
    monkeypatch.setattr(trt_build, "parity", lambda *a: 1e-3)
    assert engines.run(args_for(repository)) == ["relu"]
    assert read_config(repository / "relu" / "configs" / "gpu.pbtxt").platform == "tensorrt_plan"
    assert engines.plan_engines(args_for(repository))[0].up_to_date()
    assert not engines.plan_engines(args_for(repository, precision="fp32"))[0].up_to_date()  # rebuilt then


def test_sample_inputs_follow_the_profile(repository):
    from triton_models.ort_runner import create_session

    session = create_session(repository / "relu" / "1" / "model.onnx")
    feeds = trt_build.sample_inputs(session, {"x": ((1, 1), (4, 16), (8, 64))})
    assert feeds["x"].shape == (4, 16) and feeds["x"].dtype == np.float32


@pytest.mark.skipif(not (GPU and RUNTIME), reason="needs a GPU, the tensorrt wheel and libcudart")
def test_real_engine_matches_onnx(repository):
    args = args_for(repository, builder="tensorrt")
    assert engines.run(args) == ["relu"]
    plan = engines.plan_engines(args)[0]
    assert trt_build.parity(plan.plan, plan.onnx, plan.profile) <= engines.TOLERANCE["fp16"]


def test_relative_error_is_scaled_per_output():
    reference = {"a": np.array([10.0, -20.0]), "b": np.array([0.5])}
    assert trt_build.relative_error(reference, {"a": np.array([10.0, -19.0]), "b": np.array([0.5])}) == 0.05
    assert trt_build.relative_error(reference, {"a": reference["a"], "b": np.array([0.6])}) == pytest.approx(0.2)


@pytest.mark.skipif(trt_build._find_cudart() is None or GPU, reason="needs libcudart on a host without a GPU")
def test_cuda_calls_report_their_error_without_a_device():
    with pytest.raises(ExportError, match=r"CUDA cudaMalloc failed with error \d+"):
        trt_build._Cuda().malloc(16)
