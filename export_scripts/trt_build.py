"""TensorRT through its Python wheel: build a serialized engine from ONNX, run it, compare it with ONNX Runtime.

GPU only (imports `tensorrt` lazily); export_scripts/engines.py plans and calls it. Device buffers go through
the CUDA runtime library with ctypes (libcudart: from the nvidia-cuda-runtime wheel that tensorrt's libraries
pull in, or the system's, as in NVIDIA's images), so neither a CUDA torch nor cuda-python is needed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
from pathlib import Path

import numpy as np

from export_scripts.common import ExportError

Shape = tuple[int, ...]
_H2D, _D2H = 1, 2  # cudaMemcpyKind


def _find_cudart() -> ctypes.CDLL | None:
    names = ["libcudart.so", "libcudart.so.12", "libcudart.so.13", ctypes.util.find_library("cudart")]
    try:
        spec = importlib.util.find_spec("nvidia.cuda_runtime")
    except ImportError:  # no `nvidia` namespace package at all
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        names[:0] = [str(p) for p in sorted(Path(folder, "lib").glob("libcudart.so*"))]
    for name in filter(None, names):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def runtime_available() -> bool:
    """The tensorrt wheel and a CUDA runtime library are here (engines can be run, so parity checked)."""
    return importlib.util.find_spec("tensorrt") is not None and _find_cudart() is not None


class _Cuda:
    """The few CUDA runtime calls an engine run needs."""

    def __init__(self):
        self.lib = _find_cudart()
        if self.lib is None:
            raise ExportError("no CUDA runtime library (libcudart) found: pip install nvidia-cuda-runtime-cu12")

    def _ok(self, code: int, call: str) -> None:
        if code:
            raise ExportError(f"CUDA {call} failed with error {code}")

    def malloc(self, size: int) -> int:
        pointer = ctypes.c_void_p()
        self._ok(self.lib.cudaMalloc(ctypes.byref(pointer), ctypes.c_size_t(max(size, 1))), "cudaMalloc")
        return pointer.value

    def copy(self, dst: int, src: int, size: int, kind: int) -> None:
        self._ok(self.lib.cudaMemcpy(ctypes.c_void_p(dst), ctypes.c_void_p(src), ctypes.c_size_t(size), kind),
                 "cudaMemcpy")

    def free(self, pointer: int) -> None:
        self.lib.cudaFree(ctypes.c_void_p(pointer))

    def stream(self) -> int:
        stream = ctypes.c_void_p()
        self._ok(self.lib.cudaStreamCreate(ctypes.byref(stream)), "cudaStreamCreate")
        return stream.value or 0

    def synchronize(self, stream: int) -> None:
        self._ok(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")

    def destroy(self, stream: int) -> None:
        self.lib.cudaStreamDestroy(ctypes.c_void_p(stream))


def build_engine(onnx: Path, profile: dict[str, tuple[Shape, Shape, Shape]], precision: str,
                 workspace_bytes: int) -> bytes:  # pragma: no cover - GPU only (test_real_engine_matches_onnx)
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    dynamic = [network.get_input(i).name for i in range(network.num_inputs) if -1 in tuple(network.get_input(i).shape)]
    if dynamic:  # static networks need no profile
        missing = sorted(set(dynamic) - set(profile))
        if missing:
            raise ExportError(f"{onnx}: dynamic inputs {missing} are not in the model config")
        optimisation = builder.create_optimization_profile()
        for name in dynamic:
            optimisation.set_shape(name, *profile[name])
        config.add_optimization_profile(optimisation)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx}: TensorRT build failed (see its log above)")
    return bytes(serialized)


def sample_inputs(session, profile: dict[str, tuple[Shape, Shape, Shape]], seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs at the profile's opt shapes: token ids below 1000, masks of ones, floats ~ N(0, 1)."""
    from triton_models.ort_runner import _numpy_dtype

    rng = np.random.default_rng(seed)
    feeds = {}
    for i in session.get_inputs():
        shape, dtype = profile[i.name][1], _numpy_dtype(i.type)
        if "mask" in i.name:
            feeds[i.name] = np.ones(shape, dtype)
        elif np.issubdtype(dtype, np.integer):
            feeds[i.name] = rng.integers(0, 1000, shape).astype(dtype)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def run_engine(plan: bytes, feeds: dict[str, np.ndarray],
               repeats: int = 0) -> tuple[dict[str, np.ndarray], float]:  # pragma: no cover - GPU only, as above
    """The engine's outputs for `feeds`, and the median seconds of `repeats` more executions (inputs already on
    the device: the engine's own time), 0.0 without repeats."""
    import time

    import tensorrt as trt

    cuda = _Cuda()
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
    if engine is None:
        raise ExportError("TensorRT cannot load the engine (built by another TensorRT release?)")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    for name in inputs:
        context.set_input_shape(name, feeds[name].shape)
    host, device, stream = {}, {}, 0
    try:
        for name in names:
            dtype = trt.nptype(engine.get_tensor_dtype(name))
            if name in inputs:
                host[name] = np.ascontiguousarray(feeds[name], dtype=dtype)
            else:
                host[name] = np.empty(tuple(context.get_tensor_shape(name)), dtype)
            device[name] = cuda.malloc(host[name].nbytes)
            context.set_tensor_address(name, device[name])
            if name in inputs:
                cuda.copy(device[name], host[name].ctypes.data, host[name].nbytes, _H2D)
        stream = cuda.stream()
        times = []
        for _ in range(1 + repeats):
            start = time.perf_counter()
            if not context.execute_async_v3(stream):
                raise ExportError("TensorRT execution failed")
            cuda.synchronize(stream)
            times.append(time.perf_counter() - start)
        outputs = {}
        for name in names:
            if name not in inputs:
                cuda.copy(host[name].ctypes.data, device[name], host[name].nbytes, _D2H)
                outputs[name] = host[name]
        return outputs, float(np.median(times[1:])) if repeats else 0.0
    finally:
        if stream:
            cuda.destroy(stream)
        for pointer in device.values():
            cuda.free(pointer)


def parity(plan_path: Path, onnx: Path, profile: dict[str, tuple[Shape, Shape, Shape]]) -> float:
    """max |engine - ONNX Runtime fp32 (CPU)| over every output, relative to the largest reference value."""
    from triton_models.ort_runner import create_session

    session = create_session(onnx, providers=["CPUExecutionProvider"])
    feeds = sample_inputs(session, profile)
    names = [o.name for o in session.get_outputs()]
    reference = dict(zip(names, session.run(names, feeds)))
    engine, _ = run_engine(plan_path.read_bytes(), feeds)
    return relative_error(reference, engine)


def relative_error(reference: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> float:
    """max |got - reference| over every output, relative to the largest reference value of that output."""
    worst = 0.0
    for name, expected in reference.items():
        scale = max(float(np.abs(expected).max()), 1e-6)
        worst = max(worst, float(np.abs(got[name].astype(np.float64) - expected).max()) / scale)
    return worst
