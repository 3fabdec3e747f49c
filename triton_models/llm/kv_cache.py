"""The running batch's KV cache: one array per layer and kind, a token's KV at the column of its position.

Row i holds its sequence's `lengths[i]` cached tokens in columns [0, lengths[i]); the columns after them are
padding (zeros, or the masked copy a decode step leaves at the end) that the attention mask hides. A decode
step feeds the arrays as `past_key_values`, the decoder writes each row's new KV at that row's length, and the
step's `present` outputs become the new cache, so steps copy nothing here; only joins (prefill merged in) and
leaves copy the cache once each.

Why by position and not left-padded as HF's `generate`: a row's tokens then sit at the same columns alone or
beside longer rows, so its attention sums, and its tokens, are the same bit for bit (docs/llm-engine.md).
"""

from __future__ import annotations

import numpy as np


class BatchCache:
    """KV arrays of the sequences in the running batch, in row order; the width is always the longest row."""

    def __init__(self, empty_past: list[np.ndarray]):
        self._empty = empty_past  # batch 1, length 0: the template for shapes and dtype
        self.past: list[np.ndarray] = [np.repeat(e, 0, axis=0) for e in empty_past]
        self.lengths = np.zeros(0, np.int64)
        self.width = 0  # columns of every row: the memory held is batch * width token slots

    @property
    def batch(self) -> int:
        return len(self.lengths)

    def cells_after(self, new_lengths: list[int]) -> int:
        """Token slots held once sequences with these cached lengths join and one more step runs."""
        rows = self.batch + len(new_lengths)
        width = max([self.width, *new_lengths]) if rows else 0
        return rows * (width + 1)

    def step_feeds(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """input_ids, attention_mask and position_ids for one decode step of every row: row i's new token goes
        to column lengths[i] and sees columns [0, lengths[i]]."""
        input_ids = tokens.reshape(-1, 1).astype(np.int64, copy=False)
        mask = (np.arange(self.width + 1)[None, :] <= self.lengths[:, None]).astype(np.int64)
        return input_ids, mask, self.lengths.reshape(-1, 1).copy()

    def advance(self, present: list[np.ndarray]) -> None:
        """Keep a step's outputs as the cache (one column wider: the longest row wrote its token there)."""
        self.past = present
        self.lengths = self.lengths + 1
        self.width += 1

    def append(self, present: list[np.ndarray], lengths: list[int]) -> None:
        """Add rows from a prefill at the bottom: row i's tokens in columns [0, lengths[i]) of `present`, which is
        max(lengths) wide (a prefill's width is its longest row)."""
        new_width = max(lengths)
        if self.batch == 0:
            self.past = present  # as the decoder left it (on the device, with I/O binding)
        else:
            width = max(self.width, new_width)
            self.past = [np.concatenate([_columns(old, width), _columns(new, width)])
                         for old, new in zip(self.past, present)]
        self.lengths = np.concatenate([self.lengths, np.asarray(lengths, np.int64)])
        self.width = max(self.width, new_width)

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (in this order), dropping the columns no remaining row needs."""
        if len(rows) == self.batch:
            return
        if not rows:
            self.past = [np.repeat(e, 0, axis=0) for e in self._empty]
            self.lengths = np.zeros(0, np.int64)
            self.width = 0
            return
        index = np.asarray(rows, np.intp)
        self.lengths = self.lengths[index]
        self.width = int(self.lengths.max())
        self.past = [np.ascontiguousarray(kv[index, :, :self.width]) for kv in self.past]

    def row(self, row: int) -> list[np.ndarray]:
        """One row's KV [1, heads, length, dim] per layer and kind, without padding (for the prefix cache)."""
        return row_kv(self.past, row, int(self.lengths[row]))


def row_kv(past: list[np.ndarray], row: int, length: int) -> list[np.ndarray]:
    """Row `row`'s first `length` columns of every KV array, as new arrays."""
    return [np.ascontiguousarray(kv[row:row + 1, :, :length]) for kv in past]


def _columns(kv: np.ndarray, width: int) -> np.ndarray:
    """`kv` cut or zero-padded on the right to `width` columns."""
    if kv.shape[2] >= width:
        return kv[:, :, :width]
    padded = np.zeros((*kv.shape[:2], width, kv.shape[3]), kv.dtype)
    padded[:, :, :kv.shape[2]] = kv
    return padded
