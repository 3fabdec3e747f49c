"""The ONNX decoder: one ONNX Runtime session speaking the HF/optimum past_key_values signature, with the KV
cache laid out by position (`KV_LAYOUT`: a token's KV at the column equal to its position, rows aligned at
column 0; export_scripts/llm_graph.py writes such graphs and marks them).

A decoder whose graph takes `inputs_embeds` instead of `input_ids` (a vision-language model's language model)
gets its token-embedding table: token ids are looked up here, and a prefill may pass its own embeddings.

On CUDA the decoder runs through I/O binding: `present` stays on the device (a DevicePast of OrtValues) and
the next step binds it as its past without a copy; the engine reads it as numpy arrays only where it reshapes
the cache (joins, leaves, prefix cache). On CPU `session.run` is used as before.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from triton_models.ort_runner import CUDA, create_session, execution_providers

KV_LAYOUT_KEY, KV_LAYOUT = "modelgate.kv_layout", "position"  # the graph's metadata that says so
_PAST = re.compile(r"past_key_values\.(\d+)\.(key|value)$")
_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass(frozen=True)
class DecoderShape:
    """What the KV cache needs to know about the model."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: type

    @property
    def bytes_per_token(self) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * np.dtype(self.dtype).itemsize


class DevicePast(Sequence):
    """One step's present KV left where the decoder wrote it (OrtValues); each layer is copied to a numpy array
    once, on first read."""

    def __init__(self, owner: OnnxDecoder, values: list[ort.OrtValue]):
        self.owner = owner
        self.values = values
        self._host: list[np.ndarray | None] = [None] * len(values)

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        if self._host[index] is None:
            self._host[index] = self.values[index].numpy()
        return self._host[index]


class OnnxDecoder:
    """Runs the decoder on a batch of rows aligned at column 0: input ids, mask, positions and the past; returns
    each row's logits at its last token and the present (past widened by the new tokens) for every layer."""

    def __init__(self, path: Path, threads: int = 0, session: ort.InferenceSession | None = None,
                 embeddings: np.ndarray | None = None, providers: list[str] | None = None,
                 device: str | None = None, spin: bool = False):
        """`providers`: default `execution_providers()` (CUDA when present). `device`: where I/O binding keeps
        the KV cache ("cuda", or "cpu" to exercise the path in tests); default "cuda" when the session runs on
        CUDA, else no binding (plain `session.run`)."""
        self.session = session or create_session(path, threads, providers or execution_providers(), spin)
        layout = self.session.get_modelmeta().custom_metadata_map.get(KV_LAYOUT_KEY)
        if layout != KV_LAYOUT:
            raise ValueError(f"{path}: the graph's KV layout is {layout!r}, not {KV_LAYOUT!r}; export the model again "
                             "with this version (make export)")
        if device is None and self.session.get_providers()[0] == CUDA:
            device = "cuda"
        self.device = device
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.takes_embeds = "inputs_embeds" in inputs
        if self.takes_embeds and embeddings is None:
            raise ValueError(f"{path}: the graph takes inputs_embeds; give its token-embedding table")
        self.embeddings = embeddings
        past = sorted((int(m.group(1)), m.group(2)) for m in map(_PAST.match, inputs) if m)
        layers = 1 + max(i for i, _ in past) if past else 0
        if not layers or len(past) != 2 * layers:
            raise ValueError(f"{path}: expected past_key_values.{{i}}.key/value inputs, got {sorted(inputs)}")
        first = inputs["past_key_values.0.key"]
        heads, head_dim = first.shape[1], first.shape[3]
        fixed = isinstance(heads, int) and isinstance(head_dim, int)  # symbolic dims come back as strings
        if not fixed:
            raise ValueError(f"{path}: KV heads and head size must be fixed, got {first.shape}")
        self.shape = DecoderShape(layers, heads, head_dim, _TYPES.get(first.type, np.float32))
        self.past_names = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
        self.present_names = [f"present.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
        self.output_names = ["logits", *self.present_names]
        self.has_position_ids = "position_ids" in inputs
        if "logits_index" not in inputs:
            raise ValueError(f"{path}: the graph has no logits_index input; export the model again with this "
                             "version (make export)")

    def embed(self, input_ids: np.ndarray) -> np.ndarray:
        """Token embeddings [batch, seq, hidden] of an embedding graph (a copy: callers may overwrite rows)."""
        return self.embeddings[input_ids]

    def empty_past(self, batch: int) -> list[np.ndarray]:
        s = self.shape
        return [np.zeros((batch, s.num_kv_heads, 0, s.head_dim), s.dtype)] * (2 * s.num_layers)

    def run(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        past: list[np.ndarray],
        inputs_embeds: np.ndarray | None = None,
        last: np.ndarray | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """`inputs_embeds` (optional, embedding graphs only) replaces the lookup of `input_ids`; `last`: the column
        of each row's last token in `input_ids` (default: the last column), the only one whose logits the graph
        computes."""
        if self.takes_embeds:
            embeds = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
            feeds = {"inputs_embeds": embeds, "attention_mask": attention_mask}
        elif inputs_embeds is not None:
            raise ValueError("this decoder takes input_ids, not inputs_embeds")
        else:
            feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.has_position_ids:
            feeds["position_ids"] = position_ids
        batch, seq = attention_mask.shape[0], input_ids.shape[1]
        feeds["logits_index"] = (np.full((batch, 1), seq - 1, np.int64) if last is None
                                 else np.asarray(last, np.int64).reshape(batch, 1))
        if self.device is not None:
            logits, present = self._run_bound(feeds, past)
        else:
            feeds.update(zip(self.past_names, past))
            logits, *present = self.session.run(self.output_names, feeds)
        return np.ascontiguousarray(logits[:, 0, :], dtype=np.float32), present

    def _run_bound(self, feeds: dict[str, np.ndarray], past) -> tuple[np.ndarray, DevicePast]:
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        if isinstance(past, DevicePast) and past.owner is self:  # the previous step's present: no copy
            for name, value in zip(self.past_names, past.values):
                binding.bind_ortvalue_input(name, value)
        else:
            for name, value in zip(self.past_names, past):
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        binding.bind_output("logits", "cpu")
        for name in self.present_names:
            binding.bind_output(name, self.device)
        self.session.run_with_iobinding(binding)
        logits, *present = binding.get_outputs()
        return logits.numpy(), DevicePast(self, present)
