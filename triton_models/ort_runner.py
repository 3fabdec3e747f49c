"""ONNX Runtime sessions and request batching, free of Triton imports so they can be unit-tested."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from triton_models.contract import INVALID_REQUEST, INVALID_TOKEN_IDS, ModelError

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
    """Runs one ONNX model for a list of requests, merging compatible requests into one batch.

    Each request is checked on its own first (input names, types, shapes, token ids within the vocabulary),
    so a bad one fails alone with a ModelError that says what to send, and never reaches a batch.
    """

    def __init__(self, session: ort.InferenceSession, output_names: Sequence[str], batching: bool,
                 vocab_sizes: dict[str, int] | None = None):
        self.session = session
        self.output_names = list(output_names)
        self.batching = batching
        self.vocab_sizes = dict(vocab_sizes or {})  # input name -> rows of the embedding table it indexes
        self._inputs = {i.name: (_numpy_dtype(i.type), i.shape) for i in session.get_inputs()}

    def check(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The request's feeds in the model's dtypes, or a ModelError naming what is wrong with them."""
        unknown = sorted(set(inputs) - set(self._inputs))
        if unknown:
            raise ModelError(INVALID_REQUEST, f"this model has no input(s) {unknown}; it takes {sorted(self._inputs)}")
        feeds, named = {}, {}  # named: symbolic dimension -> (size, input), which inputs must agree on
        for name, value in inputs.items():
            dtype, shape = self._inputs[name]
            feeds[name] = _cast(name, value, dtype)
            if not _fits(feeds[name].shape, shape):
                expected = "[" + ", ".join(str(_dim(d)) for d in shape) + "]"
                raise ModelError(INVALID_REQUEST, f"input {name} has shape {list(value.shape)}; this model takes "
                                                  f"{expected}")
            for size, dim in zip(value.shape, shape):
                if isinstance(dim, str) and named.setdefault(dim, (size, name))[0] != size:
                    raise ModelError(INVALID_REQUEST, f"inputs {named[dim][1]} and {name} differ in their {dim} "
                                                      f"dimension ({named[dim][0]} and {size})")
            if name in self.vocab_sizes:
                _check_token_ids(feeds[name], self.vocab_sizes[name])
        return feeds

    def run_one(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, self.check(inputs))
        return dict(zip(self.output_names, outputs))

    def run_many(self, requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray] | Exception]:
        """One result per request: its outputs, or the exception that request caused (a ModelError when it
        was the request's fault). Requests of the same shape run as one batch."""
        results: list[dict[str, np.ndarray] | Exception | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        feeds: list[dict[str, np.ndarray]] = [{}] * len(requests)
        for i, request in enumerate(requests):
            try:
                feeds[i] = self.check(request)
            except ModelError as exc:
                results[i] = exc
                continue
            key = tuple(sorted((k, v.shape[1:]) for k, v in feeds[i].items())) if self.batching else (i,)
            groups.setdefault(key, []).append(i)
        for members in groups.values():
            if len(members) > 1:
                try:
                    merged = {k: np.concatenate([feeds[i][k] for i in members]) for k in feeds[members[0]]}
                    outputs = self.session.run(self.output_names, merged)
                except Exception:  # noqa: BLE001 - run them one by one: only the culprit fails
                    pass
                else:
                    sizes = np.cumsum([len(next(iter(feeds[i].values()))) for i in members])[:-1]
                    split = [np.split(v, sizes) for v in outputs]
                    for j, i in enumerate(members):
                        results[i] = {name: parts[j] for name, parts in zip(self.output_names, split)}
                    continue
            for i in members:
                try:
                    results[i] = dict(zip(self.output_names, self.session.run(self.output_names, feeds[i])))
                except Exception as exc:  # noqa: BLE001 - becomes this request's error response
                    results[i] = exc
        return results  # type: ignore[return-value]


def token_id_inputs(path: Path | str) -> dict[str, int]:
    """Integer graph inputs that index an embedding table (a Gather over an initializer, perhaps after a Cast),
    and the table's rows: the valid token ids are 0..rows-1. ONNX Runtime's Gather also takes negative ids
    (counting from the end) and reports ids past the end with its node names: both are refused beforehand."""
    import onnx  # noqa: PLC0415 - only the stand-in backend reads the graph

    graph = onnx.load(str(path), load_external_data=False).graph
    tables = {t.name: t.dims[0] for t in graph.initializer if t.dims}
    integer = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
    sources = {i.name: i.name for i in graph.input if i.type.tensor_type.elem_type in integer}
    for node in graph.node:  # one Cast (or Identity) between the input and the Gather is common
        if node.op_type in ("Cast", "Identity") and node.input and node.input[0] in sources:
            sources[node.output[0]] = sources[node.input[0]]
    sizes: dict[str, int] = {}
    for node in graph.node:
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if node.op_type == "Gather" and axis == 0 and len(node.input) == 2 and node.input[0] in tables \
                and node.input[1] in sources:
            name = sources[node.input[1]]
            sizes[name] = min(sizes.get(name, tables[node.input[0]]), tables[node.input[0]])
    return sizes


def _check_token_ids(ids: np.ndarray, vocab: int) -> None:
    bad = (ids < 0) | (ids >= vocab)
    if bad.any():
        first = ids[bad].flat[0]
        raise ModelError(INVALID_TOKEN_IDS, f"input holds token id {int(first)}, outside this model's vocabulary: "
                                            f"valid token ids are 0 to {vocab - 1}", "input")


def _cast(name: str, value: np.ndarray, dtype) -> np.ndarray:
    try:
        if value.dtype.kind in "OSU" and np.dtype(dtype).kind not in "OSU":
            raise TypeError("strings")
        return np.ascontiguousarray(value, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ModelError(INVALID_REQUEST, f"input {name} must hold {np.dtype(dtype).name} values") from exc


def _dim(d) -> int | str:
    return d if isinstance(d, int) and d >= 0 else "any"


def _fits(shape: tuple[int, ...], expected: list) -> bool:
    return len(shape) == len(expected) and all(not isinstance(e, int) or e < 0 or e == s
                                               for s, e in zip(shape, expected))


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
