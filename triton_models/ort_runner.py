"""ONNX Runtime sessions and request batching, free of Triton imports so they can be unit-tested."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

THREADS_ENV = "MODELGATE_ORT_THREADS"
PROVIDERS_ENV = "MODELGATE_ORT_PROVIDERS"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def thread_count(parameters: dict[str, str]) -> int:
    """intra-op threads: the config's `intra_op_thread_count` (the native backend's key), else the env, else 0."""
    value = parameters.get("intra_op_thread_count") or os.environ.get(THREADS_ENV) or "0"
    try:
        threads = int(value)
    except ValueError as exc:
        raise ValueError(f"intra_op_thread_count must be an integer, got {value!r}") from exc
    if threads < 0:
        raise ValueError(f"intra_op_thread_count must be >= 0, got {threads}")
    return threads


def spinning(parameters: dict[str, str], default: bool = False) -> bool:
    """`intra_op_spinning`: worker threads busy-wait between parallel sections instead of sleeping. Worth it
    for back-to-back small runs (LLM decode steps: each of ~1,700 nodes would otherwise wake the pool);
    off by default so idle models leave the cores to the frontend and to each other."""
    value = parameters.get("intra_op_spinning", "").strip().lower()
    if not value:
        return default
    if value not in ("0", "1", "true", "false"):
        raise ValueError(f"intra_op_spinning must be true or false, got {value!r}")
    return value in ("1", "true")


def execution_providers(parameters: dict[str, str] | None = None) -> list[str]:
    """ORT providers: the config's `execution_providers`, else the env, else CUDA when this ORT build has it.

    Either names a comma-separated list (e.g. "CUDAExecutionProvider,CPUExecutionProvider"); a provider this
    ORT build lacks is an error rather than a silent CPU fallback. CPU always ends the list.
    """
    value = (parameters or {}).get("execution_providers") or os.environ.get(PROVIDERS_ENV) or ""
    available = ort.get_available_providers()
    if not value.strip():
        return [CUDA, CPU] if CUDA in available else [CPU]
    names = [n.strip() for n in value.split(",") if n.strip()]
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(f"execution providers {missing} not in this onnxruntime build ({available})")
    return names if names[-1] == CPU else [*[n for n in names if n != CPU], CPU]


def create_session(path: Path, threads: int = 0, providers: Sequence[str] | None = None,
                   spin: bool = False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Without `spin`, idle workers sleep: spinning ones steal the few CPU cores from the frontend and other models.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if CUDA in (providers or ()) and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # onnxruntime-gpu finds the CUDA/cuDNN libraries of the nvidia-* wheels this way
    return ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))


class OrtRunner:
    """Runs one ONNX model for a list of requests, merging compatible requests into one batch."""

    def __init__(self, session: ort.InferenceSession, output_names: Sequence[str], batching: bool):
        self.session = session
        self.output_names = list(output_names)
        self.batching = batching
        self._dtypes = {i.name: _numpy_dtype(i.type) for i in session.get_inputs()}

    def _feeds(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        unknown = set(inputs) - set(self._dtypes)
        if unknown:
            raise ValueError(f"unexpected inputs {sorted(unknown)}")
        return {k: np.ascontiguousarray(v, dtype=self._dtypes[k]) for k, v in inputs.items()}

    def run_one(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, self._feeds(inputs))
        return dict(zip(self.output_names, outputs))

    def run_many(self, requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray] | Exception]:
        """One result per request: its outputs, or the exception that request caused."""
        if self.batching and len(requests) > 1 and _stackable(requests):
            try:
                merged = {k: np.concatenate([r[k] for r in requests]) for k in requests[0]}
                outputs = self.run_one(merged)
            except Exception:  # noqa: BLE001 - fall back to one by one to find the culprit
                pass
            else:
                sizes = np.cumsum([len(next(iter(r.values()))) for r in requests])[:-1]
                split = {k: np.split(v, sizes) for k, v in outputs.items()}
                return [{k: split[k][i] for k in split} for i in range(len(requests))]
        results: list[dict[str, np.ndarray] | Exception] = []
        for request in requests:
            try:
                results.append(self.run_one(request))
            except Exception as exc:  # noqa: BLE001 - becomes this request's error response
                results.append(exc)
        return results


def _stackable(requests: list[dict[str, np.ndarray]]) -> bool:
    first = requests[0]
    return all(
        r.keys() == first.keys() and all(r[k].shape[1:] == first[k].shape[1:] for k in first) for r in requests
    )


_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def _numpy_dtype(ort_type: str):
    try:
        return _ORT_TYPES[ort_type]
    except KeyError as exc:
        raise ValueError(f"unsupported ONNX input type {ort_type}") from exc
