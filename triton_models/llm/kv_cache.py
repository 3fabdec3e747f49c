"""The running batch's KV cache: one array per layer and kind, rows left-padded to a common length.

Row i holds its sequence's `lengths[i]` cached tokens in the last columns; the attention mask zeroes the
padding. A decode step feeds the arrays as `past_key_values` and keeps the model's `present` outputs as the
new cache, so steps copy nothing here; only joins (prefill merged in) and leaves copy the cache once each.
"""

from __future__ import annotations

import numpy as np


class BatchCache:
    """KV arrays and attention mask for the sequences in the running batch, in row order."""

    def __init__(self, empty_past: list[np.ndarray]):
        self._empty = empty_past  # batch 1, length 0: the template for shapes and dtype
        self.past: list[np.ndarray] = [np.repeat(e, 0, axis=0) for e in empty_past]
        self.mask = np.zeros((0, 0), np.int64)
        self.lengths = np.zeros(0, np.int64)

    @property
    def batch(self) -> int:
        return len(self.lengths)

    @property
    def width(self) -> int:
        """Padded length T of every row: the memory held is batch * width token slots."""
        return self.mask.shape[1]

    def cells_after(self, new_lengths: list[int]) -> int:
        """Token slots held once sequences with these cached lengths join and one more step runs."""
        rows = self.batch + len(new_lengths)
        width = max([self.width, *new_lengths]) if rows else 0
        return rows * (width + 1)

    def step_feeds(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """input_ids, attention_mask and position_ids for one decode step of every row."""
        input_ids = tokens.reshape(-1, 1).astype(np.int64, copy=False)
        mask = np.concatenate([self.mask, np.ones((self.batch, 1), np.int64)], axis=1)
        return input_ids, mask, self.lengths.reshape(-1, 1).copy()

    def advance(self, present: list[np.ndarray], mask: np.ndarray) -> None:
        """Keep a step's outputs as the cache."""
        self.past, self.mask = present, mask
        self.lengths = self.lengths + 1

    def append(self, present: list[np.ndarray], lengths: list[int]) -> None:
        """Add rows from a prefill (left-padded `present`, each row's real length given) at the bottom."""
        new_width = present[0].shape[2]
        new_mask = np.zeros((len(lengths), new_width), np.int64)
        for row, length in enumerate(lengths):
            new_mask[row, new_width - length:] = 1
        if self.batch == 0:
            self.past, self.mask = present, new_mask
            self.lengths = np.asarray(lengths, np.int64)
            return
        width = max(self.width, new_width)
        self.past = [_stack(old, new, width) for old, new in zip(self.past, present)]
        self.mask = _stack(self.mask, new_mask, width)
        self.lengths = np.concatenate([self.lengths, np.asarray(lengths, np.int64)])

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (in this order), dropping padding columns no remaining row needs."""
        if len(rows) == self.batch:
            return
        if not rows:
            self.past = [np.repeat(e, 0, axis=0) for e in self._empty]
            self.mask = np.zeros((0, 0), np.int64)
            self.lengths = np.zeros(0, np.int64)
            return
        index = np.asarray(rows, np.intp)
        lengths = self.lengths[index]
        start = self.width - int(lengths.max())
        self.past = [np.ascontiguousarray(a[index, :, start:, :]) for a in self.past]
        self.mask = np.ascontiguousarray(self.mask[index, start:])
        self.lengths = lengths


def _stack(old: np.ndarray, new: np.ndarray, width: int) -> np.ndarray:
    """Concatenate along the batch axis, left-padding each part with zeros to `width` on its length axis."""
    axis = old.ndim - 2 if old.ndim == 4 else 1  # KV: [batch, heads, length, dim]; mask: [batch, length]
    shape = list(old.shape)
    shape[0] = old.shape[0] + new.shape[0]
    shape[axis] = width
    out = np.zeros(shape, old.dtype)
    for part, start in ((old, 0), (new, old.shape[0])):
        index = [slice(start, start + part.shape[0])] + [slice(None)] * (old.ndim - 1)
        index[axis] = slice(width - part.shape[axis], width)
        out[tuple(index)] = part
    return out
