"""The ONNX decoder: one ONNX Runtime session speaking the HF/optimum past_key_values signature.

A decoder whose graph takes `inputs_embeds` instead of `input_ids` (a vision-language model's language model)
gets its token-embedding table: token ids are looked up here, and a prefill may pass its own embeddings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from triton_models.ort_runner import create_session

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


class OnnxDecoder:
    """Runs the decoder on a left-padded batch: inputs ids, mask, positions and the past; returns the last
    position's logits and the present (past + new tokens) for every layer."""

    def __init__(self, path: Path, threads: int = 0, session: ort.InferenceSession | None = None,
                 embeddings: np.ndarray | None = None):
        self.session = session or create_session(path, threads)
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
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """`inputs_embeds` (optional, embedding graphs only) replaces the lookup of `input_ids`."""
        if self.takes_embeds:
            embeds = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
            feeds = {"inputs_embeds": embeds, "attention_mask": attention_mask}
        elif inputs_embeds is not None:
            raise ValueError("this decoder takes input_ids, not inputs_embeds")
        else:
            feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.has_position_ids:
            feeds["position_ids"] = position_ids
        feeds.update(zip(self.past_names, past))
        logits, *present = self.session.run(self.output_names, feeds)
        return np.ascontiguousarray(logits[:, -1, :], dtype=np.float32), present
