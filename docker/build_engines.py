"""Build a TensorRT engine beside every ONNX model of a model repository, and its `gpu` config variant.

For each `<model>/config.pbtxt` served by the `onnxruntime` backend with `<version>/model.onnx`:
  * `trtexec` writes `<version>/model.plan`, one optimisation profile spanning the config's dynamic dims
    (batch 1..max_batch_size; other -1 dims `trt_min_extent`..`trt_max_extent`, optimised for
    `trt_opt_extent`: config parameters an exporter sets per model, defaults 1, 128, 512);
  * `<model>/configs/gpu.pbtxt` is written (unless an exporter already wrote one) as the same model on the
    `tensorrt` backend, picked by `tritonserver --model-config-name=gpu`.
An engine only loads in the TensorRT version that built it: run this in the export image, whose TensorRT
release matches the Triton image. `--dry-run` prints the commands; the unit tests use it.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

DEFAULT_MIN_EXTENT = 1
DEFAULT_OPT_EXTENT = 128
DEFAULT_MAX_EXTENT = 512
VARIANT = "gpu"


def _param(config: mc.ModelConfig, key: str, default: int) -> int:
    value = config.parameters[key].string_value if key in config.parameters else ""
    return int(value) if value else default


def shape_profile(config: mc.ModelConfig) -> dict[str, list[str]]:
    """`--minShapes/--optShapes/--maxShapes` values: one `name:AxBxC` per input."""
    max_extent = _param(config, "trt_max_extent", DEFAULT_MAX_EXTENT)
    min_extent = min(_param(config, "trt_min_extent", DEFAULT_MIN_EXTENT), max_extent)
    opt_extent = max(min(_param(config, "trt_opt_extent", DEFAULT_OPT_EXTENT), max_extent), min_extent)
    profile: dict[str, list[str]] = {"min": [], "opt": [], "max": []}
    for tensor in config.input:
        dims = list(tensor.dims)
        if config.max_batch_size > 0:
            dims = [-config.max_batch_size, *dims]  # negative marks the batch dim and carries its bound
        for kind in profile:
            shape = []
            for d in dims:
                if d >= 0:
                    shape.append(d)
                elif d < -1:  # batch
                    shape.append({"min": 1, "opt": max(1, -d // 2), "max": -d}[kind])
                else:
                    shape.append({"min": min_extent, "opt": opt_extent, "max": max_extent}[kind])
            profile[kind].append(f"{tensor.name}:{'x'.join(map(str, shape))}")
    return profile


def trtexec_command(config: mc.ModelConfig, onnx: Path, plan: Path, precision: str) -> list[str]:
    command = ["trtexec", f"--onnx={onnx}", f"--saveEngine={plan}", "--skipInference"]
    if any(-1 in t.dims for t in config.input) or config.max_batch_size > 0:
        for kind, shapes in shape_profile(config).items():
            command.append(f"--{kind}Shapes={','.join(shapes)}")
    if precision != "fp32":
        command.append(f"--{precision}")
    return command


def gpu_variant(config: mc.ModelConfig) -> mc.ModelConfig:
    """The same model (name, tensors, batching, parameters) on TensorRT, one instance per GPU."""
    variant = mc.ModelConfig()
    variant.CopyFrom(config)
    variant.backend = "tensorrt"
    variant.platform = "tensorrt_plan"
    variant.default_model_filename = "model.plan"
    del variant.instance_group[:]
    variant.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=1)
    return variant


def onnx_models(repository: Path):
    for config_path in sorted(repository.glob("*/config.pbtxt")):
        config = text_format.Parse(config_path.read_text(), mc.ModelConfig())
        if config.backend != "onnxruntime":
            continue
        filename = config.default_model_filename or "model.onnx"
        for onnx in sorted(config_path.parent.glob(f"[0-9]*/{filename}")):
            yield config_path.parent, config, onnx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    parser.add_argument("--force", action="store_true", help="rebuild engines newer than their ONNX file")
    parser.add_argument("--dry-run", action="store_true", help="print the trtexec commands, build nothing")
    args = parser.parse_args(argv)

    for model_dir, config, onnx in onnx_models(args.repository):
        plan = onnx.with_name("model.plan")
        if plan.exists() and plan.stat().st_mtime >= onnx.stat().st_mtime and not args.force:
            print(f"{model_dir.name}: engine up to date")
            continue
        command = trtexec_command(config, onnx, plan, args.precision)
        print(shlex.join(command), flush=True)
        if args.dry_run:
            continue
        if subprocess.run(command, check=False).returncode != 0:
            # A profile that does not suit the network (e.g. extents a UNet cannot downsample) fails here.
            print(f"{model_dir.name}: trtexec failed; Triton keeps serving model.onnx", file=sys.stderr)
            plan.unlink(missing_ok=True)
            continue
        variant = model_dir / "configs" / f"{VARIANT}.pbtxt"
        if not variant.exists():
            variant.parent.mkdir(exist_ok=True)
            variant.write_text(text_format.MessageToString(gpu_variant(config)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
