"""Prefill building blocks: rows aligned at column 0, length groups, one row's KV without padding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from triton_models.llm.kv_cache import row_kv
from triton_models.llm.prefill import aligned, length_groups


@dataclass(eq=False)
class Seq:
    cache_tokens: int


def test_rows_are_aligned_at_column_zero_with_every_position_distinct():
    ids, mask, positions = aligned([[5, 6, 7], [9]])
    assert ids.tolist() == [[5, 6, 7], [9, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    # padding keeps its own positions: the decoder writes its (masked) KV there, never over a token
    assert positions.tolist() == [[0, 1, 2], [0, 1, 2]]


def test_groups_bound_padding_waste_and_tokens():
    seqs = [Seq(n) for n in (10, 100, 9, 11, 90, 300)]
    groups = [[s.cache_tokens for s in g] for g in length_groups(seqs, max_tokens=200)]
    assert groups == [[9, 10, 11], [90, 100], [300]]  # 300 alone: two would exceed 200 tokens


def test_row_kv_drops_the_padding_columns():
    present = [np.arange(2 * 1 * 4 * 1, dtype=np.float32).reshape(2, 1, 4, 1)]
    (kv,) = row_kv(present, 1, 2)
    assert kv.shape == (1, 1, 2, 1) and kv.ravel().tolist() == [4.0, 5.0] and kv.flags.c_contiguous
