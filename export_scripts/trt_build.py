"""TensorRT through its Python wheel: build a serialized engine from ONNX, run it, compare it with ONNX Runtime.

GPU only (imports `tensorrt` and `cuda-python` lazily); export_scripts/engines.py plans and calls it. Device
buffers go through cuda-python's runtime bindings so that no CUDA build of torch is needed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from export_scripts.common import ExportError

Shape = tuple[int, ...]


def runtime_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("tensorrt", "cuda"))


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart
    return cudart


def _check(result):
    """cuda-python returns (error, *values); raise on an error, return the values."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise ExportError(f"CUDA error {error}")
    return values[0] if len(values) == 1 else values


def build_engine(onnx: Path, profile: dict[str, tuple[Shape, Shape, Shape]], precision: str,
                 workspace_bytes: int) -> bytes:
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
    optimisation = builder.create_optimization_profile()
    for name, (low, opt, high) in profile.items():
        optimisation.set_shape(name, low, opt, high)
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


def run_engine(plan: bytes, feeds: dict[str, np.ndarray], repeats: int = 0) -> tuple[dict[str, np.ndarray], float]:
    """The engine's outputs for `feeds`, and the median seconds of `repeats` more executions (inputs already on
    the device: the engine's own time), 0.0 without repeats."""
    import time

    import tensorrt as trt

    cudart = _cudart()
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    for name, value in feeds.items():
        context.set_input_shape(name, value.shape)
    host, device = {}, []
    try:
        for name in names:
            dtype = trt.nptype(engine.get_tensor_dtype(name))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                array = np.ascontiguousarray(feeds[name], dtype=dtype)
            else:
                array = np.empty(tuple(context.get_tensor_shape(name)), dtype)
            host[name] = array
            pointer = _check(cudart.cudaMalloc(max(array.nbytes, 1)))
            device.append(pointer)
            context.set_tensor_address(name, int(pointer))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                _check(cudart.cudaMemcpy(pointer, array.ctypes.data, array.nbytes,
                                         cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
        stream = _check(cudart.cudaStreamCreate())
        times = []
        for _ in range(1 + repeats):
            start = time.perf_counter()
            if not context.execute_async_v3(int(stream)):
                raise ExportError("TensorRT execution failed")
            _check(cudart.cudaStreamSynchronize(stream))
            times.append(time.perf_counter() - start)
        outputs = {}
        for name, pointer in zip(names, device):
            if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                array = host[name]
                _check(cudart.cudaMemcpy(array.ctypes.data, pointer, array.nbytes,
                                         cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost))
                outputs[name] = array
        return outputs, float(np.median(times[1:])) if repeats else 0.0
    finally:
        for pointer in device:
            cudart.cudaFree(pointer)


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
