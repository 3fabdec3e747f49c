"""docker/build_engines.py: the trtexec command and the `gpu` config variant, checked with --dry-run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from tests.deploy.conftest import ROOT

SCRIPT = ROOT / "docker" / "build_engines.py"


def write_model(repository, name, config: dict, files=("1/model.onnx",)):
    model = repository / name
    for f in files:
        (model / f).parent.mkdir(parents=True, exist_ok=True)
        (model / f).write_bytes(b"onnx")
    message = json_format.ParseDict({"name": name, **config}, mc.ModelConfig())
    (model / "config.pbtxt").write_text(text_format.MessageToString(message))
    return model


def run(repository, *args) -> list[str]:
    result = subprocess.run([sys.executable, SCRIPT, "--repository", repository, *args],
                            capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


@pytest.fixture
def repository(tmp_path):
    write_model(tmp_path, "embed", {
        "backend": "onnxruntime", "max_batch_size": 32,
        "input": [{"name": "input_ids", "data_type": "TYPE_INT64", "dims": [-1]},
                  {"name": "attention_mask", "data_type": "TYPE_INT64", "dims": [-1]}],
        "output": [{"name": "embedding", "data_type": "TYPE_FP32", "dims": [384]}],
        "parameters": {"trt_max_extent": {"string_value": "256"}},
    })
    write_model(tmp_path, "vae", {
        "backend": "onnxruntime", "max_batch_size": 0,
        "input": [{"name": "latent", "data_type": "TYPE_FP32", "dims": [1, 4, 8, 8]}],
        "output": [{"name": "image", "data_type": "TYPE_FP32", "dims": [1, 3, 64, 64]}],
    })
    write_model(tmp_path, "tokenizer", {"backend": "python", "input": [], "output": []}, files=("1/model.py",))
    return tmp_path


def test_profile_spans_batch_and_dynamic_dims(repository):
    [embed, vae] = run(repository, "--dry-run")
    assert embed.startswith("trtexec --onnx=") and "embed/1/model.plan" in embed
    assert "--minShapes=input_ids:1x1,attention_mask:1x1" in embed
    assert "--optShapes=input_ids:16x128,attention_mask:16x128" in embed
    assert "--maxShapes=input_ids:32x256,attention_mask:32x256" in embed
    assert "Shapes" not in vae  # static shapes need no profile
    assert "tokenizer" not in embed + vae  # Python models have no engine


def test_extents_from_config_parameters(tmp_path):
    write_model(tmp_path, "unet", {
        "backend": "onnxruntime", "max_batch_size": 8,
        "input": [{"name": "sample", "data_type": "TYPE_FP32", "dims": [4, -1, -1]}],
        "output": [{"name": "out", "data_type": "TYPE_FP32", "dims": [4, -1, -1]}],
        "parameters": {k: {"string_value": v} for k, v in
                       {"trt_min_extent": "8", "trt_opt_extent": "64", "trt_max_extent": "96"}.items()},
    })
    [unet] = run(tmp_path, "--dry-run")
    assert "--minShapes=sample:1x4x8x8 --optShapes=sample:4x4x64x64 --maxShapes=sample:8x4x96x96" in unet


def test_precision_flag(repository):
    assert all(line.endswith(" --fp16") for line in run(repository, "--dry-run", "--precision", "fp16"))


def test_dry_run_writes_nothing(repository):
    run(repository, "--dry-run")
    assert not list(repository.glob("*/configs")) and not list(repository.glob("*/1/model.plan"))


def test_engine_newer_than_onnx_is_kept(repository):
    (repository / "vae" / "1" / "model.plan").write_bytes(b"plan")
    lines = run(repository, "--dry-run")
    assert "vae: engine up to date" in lines and len(lines) == 2
    forced = run(repository, "--dry-run", "--force")
    assert len(forced) == 2 and all(line.startswith("trtexec") for line in forced)


def test_gpu_variant_serves_the_plan_on_tensorrt(repository, tmp_path_factory, monkeypatch):
    # A stand-in trtexec on PATH that writes the engine file, so the variant-writing path runs for real.
    bin_dir = tmp_path_factory.mktemp("bin")
    fake = bin_dir / "trtexec"
    fake.write_text("#!/bin/sh\nfor a; do case $a in --saveEngine=*) echo plan > \"${a#--saveEngine=}\";; esac; done\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    run(repository)
    variant = text_format.Parse((repository / "embed" / "configs" / "gpu.pbtxt").read_text(), mc.ModelConfig())
    original = text_format.Parse((repository / "embed" / "config.pbtxt").read_text(), mc.ModelConfig())
    assert variant.platform == "tensorrt_plan" and variant.default_model_filename == "model.plan"
    assert [i.name for i in variant.input] == [i.name for i in original.input]
    assert variant.max_batch_size == original.max_batch_size
    assert [g.kind for g in variant.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    assert (repository / "embed" / "1" / "model.plan").read_text() == "plan\n"
    assert not (repository / "tokenizer" / "configs").exists()
