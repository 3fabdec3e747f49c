"""Export-time checks of the LLM decoder through ONNX Runtime: greedy parity, quantisation quality, speed.

`OrtDecoder` drives a decoder with the contract's signature (input_ids, attention_mask, position_ids,
past_key_values.{i}.key/value -> logits, present.{i}.key/value) the way the engine does: left-padded batches,
position ids from the attention mask, an empty past (past=0) for the prefill.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # 2 shared cores
    return options


def position_ids(attention_mask: np.ndarray, seq: int) -> np.ndarray:
    """HF's rule: cumulative count of real tokens minus one, padding at 1; the last `seq` columns."""
    pos = np.cumsum(attention_mask, axis=-1) - 1
    pos[attention_mask == 0] = 1
    return pos[:, -seq:].astype(np.int64)


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad_id, np.int64)
    mask = np.zeros((len(sequences), width), np.int64)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = seq
        mask[row, width - len(seq):] = 1
    return ids, mask


class OrtDecoder:
    """One ONNX Runtime session of the exported decoder."""

    def __init__(self, path: Path, threads: int = 2):
        self.session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        self.past_names = [i.name for i in self.session.get_inputs() if i.name.startswith("past_key_values.")]
        self.output_names = [o.name for o in self.session.get_outputs()]
        kv_heads, head_dim = self.session.get_inputs()[3].shape[1], self.session.get_inputs()[3].shape[3]
        self.kv_shape = (int(kv_heads), int(head_dim))

    def empty_past(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, self.kv_shape[0], 0, self.kv_shape[1]), np.float32) for _ in self.past_names]

    def step(self, ids: np.ndarray, mask: np.ndarray, past: list[np.ndarray]):
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids(mask, ids.shape[1])}
        feeds.update(zip(self.past_names, past))
        logits, *present = self.session.run(self.output_names, feeds)
        return logits, present

    def greedy(self, prompts: list[list[int]], max_new_tokens: int, pad_id: int) -> np.ndarray:
        """Greedy continuation of left-padded prompts; [batch, max_new_tokens] token ids (no early stop)."""
        ids, mask = left_pad(prompts, pad_id)
        past = self.empty_past(len(prompts))
        out = []
        for _ in range(max_new_tokens):
            logits, past = self.step(ids, mask, past)
            ids = logits[:, -1].argmax(-1).astype(np.int64)[:, None]
            out.append(ids[:, 0])
            mask = np.concatenate([mask, np.ones_like(ids)], axis=1)
        return np.stack(out, axis=1)

    def logits(self, tokens: list[int]) -> np.ndarray:
        """Teacher-forced logits [seq, vocab] of one sequence in a single prefill."""
        ids = np.asarray([tokens], np.int64)
        logits, _ = self.step(ids, np.ones_like(ids), self.empty_past(1))
        return logits[0]


def until_eos(tokens, eos_ids: set[int]) -> list[int]:
    """Tokens up to and including the first end-of-sequence token."""
    out = []
    for t in tokens:
        out.append(int(t))
        if int(t) in eos_ids:
            break
    return out


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def agreement(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    """Top-1 agreement and mean KL(reference || candidate) over positions of [positions, vocab] logits."""
    ref, cand = log_softmax(reference), log_softmax(candidate)
    top1 = float(np.mean(ref.argmax(-1) == cand.argmax(-1)))
    kl = float(np.mean(np.sum(np.exp(ref) * (ref - cand), axis=-1)))
    return top1, kl


def decode_speed(decoders: dict[str, OrtDecoder], prompt: list[int], tokens: int, repeats: int = 3) -> dict:
    """Greedy decode tokens/s at batch 1 (prefill excluded), runs interleaved, median of `repeats`."""
    times: dict[str, list[float]] = {name: [] for name in decoders}
    for _ in range(repeats):
        for name, decoder in decoders.items():
            ids = np.asarray([prompt], np.int64)
            mask = np.ones_like(ids)
            logits, past = decoder.step(ids, mask, decoder.empty_past(1))
            start = time.perf_counter()
            for _ in range(tokens):
                ids = logits[:, -1:].argmax(-1).astype(np.int64)
                mask = np.concatenate([mask, np.ones_like(ids)], axis=1)
                logits, past = decoder.step(ids, mask, past)
            times[name].append(time.perf_counter() - start)
    return {name: round(tokens / statistics.median(t), 1) for name, t in times.items()}
