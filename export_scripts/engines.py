"""TensorRT engines and `gpu` config variants for the ONNX networks of a model repository.

`python -m export_scripts engines [--repository R] [--precision fp16] [--batch 1:4:8] [--extent 1:128:512]
[--image-size 256:512:768] [--dry-run | --configs-only]`

For each `<model>/config.pbtxt` on the `onnxruntime` backend with `<version>/model.onnx`:
  * an engine `<version>/model.plan` is built (the `tensorrt` wheel, or `trtexec` in NVIDIA's TensorRT image)
    with one optimisation profile: batch 1..max_batch_size, other dynamic dims from the flags or the config's
    `trt_min/opt/max_extent` parameters (exporters set them; latent extents for the diffusion networks);
  * the engine's outputs are compared with ONNX Runtime's fp32 outputs at the profile's opt shape; beyond the
    tolerance (relative to the largest reference value) the build fails and the engine is deleted;
  * `<model>/configs/gpu.pbtxt` serves it on the `tensorrt` backend (KIND_GPU), picked by
    `tritonserver --model-config-name=gpu`. Where no engine is built (`--configs-only`, or a network whose
    build failed) the variant keeps the native ONNX Runtime backend on KIND_GPU with its CUDA or TensorRT
    execution accelerator.
Without a GPU this command says so in one line and fails; `all` skips it (see `gpu_available`).
An engine only loads in the TensorRT release that built it: build where Triton's TensorRT matches.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from export_scripts.common import ExportError, read_config

VARIANT = "gpu"
PLAN_FILE = "model.plan"
PLAN_INFO = "model.plan.json"  # precision and profile an engine was built with: a change rebuilds it
DEFAULT_EXTENT = (1, 128, 512)  # min, opt, max of a dynamic non-batch dim without trt_*_extent parameters
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "bf16": 6e-2}  # max |engine - onnx| / max |onnx|
WORKSPACE_BYTES = 4 << 30

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Range:
    """min:opt:max of one profile dimension."""

    min: int
    opt: int
    max: int

    @classmethod
    def parse(cls, text: str) -> Range:
        try:
            low, opt, high = (int(v) for v in text.split(":"))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected MIN:OPT:MAX integers, got {text!r}") from exc
        if not 1 <= low <= opt <= high:
            raise argparse.ArgumentTypeError(f"need 1 <= MIN <= OPT <= MAX, got {text!r}")
        return cls(low, opt, high)

    def clip(self, high: int) -> Range:
        top = min(self.max, high)
        return Range(min(self.min, top), min(self.opt, top), top)

    def pick(self, kind: str) -> int:
        return getattr(self, kind)


@dataclass
class EnginePlan:
    """One engine to build: where from, where to, and its optimisation profile (input -> min/opt/max shape)."""

    model_dir: Path
    config: mc.ModelConfig
    onnx: Path
    precision: str
    profile: dict[str, tuple[Shape, Shape, Shape]] = field(default_factory=dict)
    max_batch: int = 0

    @property
    def name(self) -> str:
        return self.model_dir.name

    @property
    def plan(self) -> Path:
        return self.onnx.with_name(PLAN_FILE)

    @property
    def info(self) -> dict:
        return {"precision": self.precision, "profile": {k: list(map(list, v)) for k, v in self.profile.items()}}

    def up_to_date(self) -> bool:
        """The engine is newer than its ONNX file and (when recorded) was built with this precision and profile."""
        if not self.plan.exists() or self.plan.stat().st_mtime < self.onnx.stat().st_mtime:
            return False
        recorded = self.plan.with_name(PLAN_INFO)
        return not recorded.exists() or json.loads(recorded.read_text()) == self.info


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=sorted(TOLERANCE), default="fp16")
    parser.add_argument("--builder", choices=["auto", "tensorrt", "trtexec"], default="auto",
                        help="the tensorrt wheel, or the trtexec tool (NVIDIA's TensorRT image); auto: the wheel first")
    parser.add_argument("--batch", type=Range.parse, help="batch MIN:OPT:MAX (default 1:max/2:max_batch_size)")
    parser.add_argument("--extent", type=Range.parse,
                        help="MIN:OPT:MAX of sequence dims (default: the config's trt_*_extent, else 1:128:512)")
    parser.add_argument("--image-size", type=Range.parse,
                        help="MIN:OPT:MAX image side in pixels for latent networks (UNet, VAE decoder)")
    parser.add_argument("--vae-scale", type=int, default=8, help="pixels per latent cell (--image-size)")
    parser.add_argument("--accelerator", choices=["cuda", "tensorrt"], default="cuda",
                        help="ONNX Runtime execution accelerator in the gpu variant of a network without an engine")
    parser.add_argument("--tolerance", type=float, help="parity bound (default: by precision, see TOLERANCE)")
    parser.add_argument("--models", nargs="*", help="only these model folders (default: every ONNX network)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the engine plans (as trtexec commands)")
    mode.add_argument("--configs-only", action="store_true",
                      help="no engines: write ONNX Runtime gpu variants (runs without a GPU)")


# -- planning (pure; unit-tested) --------------------------------------------------------------------------

def _param(config: mc.ModelConfig, key: str, default: int) -> int:
    value = config.parameters[key].string_value if key in config.parameters else ""
    return int(value) if value else default


def config_extent(config: mc.ModelConfig) -> Range:
    high = _param(config, "trt_max_extent", DEFAULT_EXTENT[2])
    low = min(_param(config, "trt_min_extent", DEFAULT_EXTENT[0]), high)
    return Range(low, max(min(_param(config, "trt_opt_extent", DEFAULT_EXTENT[1]), high), low), high)


def batch_range(config: mc.ModelConfig, batch: Range | None) -> Range | None:
    """The batch dim's range (None: the model does not batch), never beyond max_batch_size."""
    if config.max_batch_size <= 0:
        return None
    top = config.max_batch_size
    return (batch or Range(1, max(1, top // 2), top)).clip(top)


def is_spatial(config: mc.ModelConfig) -> bool:
    """A latent network: some input has two or more dynamic (height, width) dims."""
    return any(list(t.dims).count(-1) >= 2 for t in config.input)


def shape_profile(config: mc.ModelConfig, batch: Range | None = None, extent: Range | None = None,
                  image_size: Range | None = None, vae_scale: int = 8) -> dict[str, tuple[Shape, Shape, Shape]]:
    """min/opt/max shape of every input; the flags override the config's extents."""
    if image_size is not None and is_spatial(config):
        extent = Range(*(max(1, v // vae_scale) for v in (image_size.min, image_size.opt, image_size.max)))
    elif extent is None or is_spatial(config):
        extent = config_extent(config)
    batched = batch_range(config, batch)
    profile = {}
    for tensor in config.input:
        shapes = []
        for kind in ("min", "opt", "max"):
            dims = [batched.pick(kind)] if batched else []
            dims += [d if d >= 0 else extent.pick(kind) for d in tensor.dims]
            shapes.append(tuple(dims))
        profile[tensor.name] = tuple(shapes)
    return profile


def trtexec_command(plan: EnginePlan) -> list[str]:
    command = ["trtexec", f"--onnx={plan.onnx}", f"--saveEngine={plan.plan}", "--skipInference"]
    dynamic = plan.config.max_batch_size > 0 or any(-1 in t.dims for t in plan.config.input)
    if dynamic:
        for index, kind in enumerate(("min", "opt", "max")):
            shapes = ",".join(f"{name}:{'x'.join(map(str, s[index]))}" for name, s in plan.profile.items())
            command.append(f"--{kind}Shapes={shapes}")
    if plan.precision != "fp32":
        command.append(f"--{plan.precision}")
    return command


def gpu_variant(config: mc.ModelConfig, engine: bool, accelerator: str = "cuda", precision: str = "fp16",
                max_batch: int = 0) -> mc.ModelConfig:
    """The same model (name, tensors, batching, parameters) on one GPU instance: the engine on TensorRT, or the
    ONNX network on ONNX Runtime with CUDA (default for KIND_GPU) or its TensorRT execution accelerator."""
    variant = mc.ModelConfig()
    variant.CopyFrom(config)
    del variant.instance_group[:]
    variant.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=1)
    if engine:
        variant.backend = "tensorrt"
        variant.platform = "tensorrt_plan"
        variant.default_model_filename = PLAN_FILE
        if max_batch and variant.max_batch_size > max_batch:
            variant.max_batch_size = max_batch  # the engine's profile ends there
        return variant
    if accelerator == "tensorrt":
        trt = variant.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        trt.parameters["precision_mode"] = "FP16" if precision == "fp16" else "FP32"
        trt.parameters["max_workspace_size_bytes"] = str(WORKSPACE_BYTES)
        trt.parameters["trt_engine_cache_enable"] = "1"  # ORT builds at load; the cache spares the next load
    return variant


def onnx_models(repository: Path, only: list[str] | None = None):
    """(model folder, config, ONNX file) of every network on the onnxruntime backend."""
    for config_path in sorted(repository.glob("*/config.pbtxt")):
        if only and config_path.parent.name not in only:
            continue
        config = read_config(config_path)
        if config.backend != "onnxruntime":
            continue
        filename = config.default_model_filename or "model.onnx"
        for onnx in sorted(config_path.parent.glob(f"[0-9]*/{filename}")):
            yield config_path.parent, config, onnx


def plan_engines(args: argparse.Namespace) -> list[EnginePlan]:
    plans = []
    for model_dir, config, onnx in onnx_models(args.repository, args.models):
        batched = batch_range(config, args.batch)
        plans.append(EnginePlan(
            model_dir, config, onnx, args.precision,
            shape_profile(config, args.batch, args.extent, args.image_size, args.vae_scale),
            batched.max if batched else 0,
        ))
    return plans


# -- environment --------------------------------------------------------------------------------------------

def gpu_present() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return result.returncode == 0 and "GPU" in result.stdout


def pick_builder(choice: str) -> str | None:
    """The builder to use here, or None when this host cannot build engines."""
    wheel = importlib.util.find_spec("tensorrt") is not None
    tool = shutil.which("trtexec") is not None
    if choice == "trtexec":
        return "trtexec" if tool else None
    if not gpu_present():
        return None
    if choice == "tensorrt":
        return "tensorrt" if wheel else None
    return "tensorrt" if wheel else "trtexec" if tool else None


def gpu_available() -> bool:
    """Whether `all` runs this exporter: a GPU and a TensorRT builder are visible."""
    return pick_builder("auto") is not None


# -- running ------------------------------------------------------------------------------------------------

def write_variant(model_dir: Path, variant: mc.ModelConfig) -> Path:
    from google.protobuf import text_format

    path = model_dir / "configs" / f"{VARIANT}.pbtxt"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text_format.MessageToString(variant))
    return path


def build(plan: EnginePlan, builder: str, tolerance: float) -> None:
    """Build one engine and check its parity; on any failure no engine is left behind."""
    try:
        if builder == "trtexec":
            if subprocess.run(trtexec_command(plan), check=False).returncode != 0:
                raise ExportError(f"{plan.name}: trtexec failed")
        else:
            from export_scripts import trt_build

            plan.plan.write_bytes(trt_build.build_engine(plan.onnx, plan.profile, plan.precision, WORKSPACE_BYTES))
        _check_parity(plan, builder, tolerance)
    except BaseException:
        plan.plan.unlink(missing_ok=True)
        raise
    plan.plan.with_name(PLAN_INFO).write_text(json.dumps(plan.info) + "\n")


def _check_parity(plan: EnginePlan, builder: str, tolerance: float) -> None:
    from export_scripts import trt_build

    if not trt_build.runtime_available():
        if builder == "tensorrt":
            raise ExportError("parity needs the CUDA runtime library (libcudart): pip install nvidia-cuda-runtime-cu12")
        print(f"{plan.name}: parity not checked (no tensorrt wheel or libcudart here; trtexec built it)", flush=True)
        return
    error = trt_build.parity(plan.plan, plan.onnx, plan.profile)
    print(f"{plan.name}: parity {error:.2e} of max |onnx fp32| (tolerance {tolerance:.0e}, {plan.precision})",
          flush=True)
    if not error <= tolerance:
        raise ExportError(f"{plan.name}: engine differs from ONNX Runtime fp32 by {error:.2e} > {tolerance:.0e}")


def run(args: argparse.Namespace) -> list[str]:
    plans = plan_engines(args)
    if args.dry_run:
        for plan in plans:
            if plan.up_to_date() and not args.force:
                print(f"{plan.name}: engine up to date")
            else:
                print(shlex.join(trtexec_command(plan)), flush=True)
        return [p.name for p in plans]
    if args.configs_only:
        for plan in plans:
            write_variant(plan.model_dir, gpu_variant(plan.config, False, args.accelerator, args.precision))
        return [p.name for p in plans]
    builder = pick_builder(args.builder)
    if builder is None:
        raise ExportError(f"no GPU with a TensorRT builder ({args.builder}) visible: no engines built "
                          "(--dry-run prints the plans, --configs-only writes the ONNX Runtime gpu configs)")
    tolerance = args.tolerance if args.tolerance is not None else TOLERANCE[args.precision]
    failed = []
    for plan in plans:
        if plan.up_to_date() and not args.force:
            print(f"{plan.name}: engine up to date")
        else:
            print(shlex.join(trtexec_command(plan)) if builder == "trtexec" else f"{plan.name}: building", flush=True)
            try:
                build(plan, builder, tolerance)
            except ExportError as exc:  # the others still build; this network stays on ONNX Runtime
                failed.append(str(exc))
                write_variant(plan.model_dir, gpu_variant(plan.config, False, args.accelerator, args.precision))
                continue
        write_variant(plan.model_dir, gpu_variant(plan.config, True, max_batch=plan.max_batch))
    if failed:
        raise ExportError("; ".join(failed))
    return [p.name for p in plans]


def main(argv: list[str] | None = None, builder: str = "auto") -> int:
    """A stand-alone entry point (docker/build_engines.py)."""
    import sys

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--force", action="store_true", help="rebuild engines that are up to date")
    add_arguments(parser)
    parser.set_defaults(builder=builder)
    args = parser.parse_args(argv)
    try:
        run(args)
    except ExportError as exc:
        print(f"engines: {exc}", file=sys.stderr)
        return 1
    return 0
