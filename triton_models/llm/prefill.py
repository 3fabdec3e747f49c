"""Prefill building blocks: batches aligned at column 0, length groups, chunked jobs, and what admission sees."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from triton_models.llm.kv_cache import BatchCache
from triton_models.llm.sequence import Sequence

PREFILL_PADDING_WASTE = 0.25  # a prefill group pads at most this share of its token slots


@dataclass(eq=False)
class PrefillJob:
    """A prompt on its way into the batch a chunk at a time (a long one, or the rest of a cached prefix):
    its own KV so far and how many tokens that holds."""

    seq: Sequence
    done: int = 0
    past: list[np.ndarray] | None = None


class Occupancy:
    """What admission sees: the running batch plus the long prompts still being prefilled."""

    def __init__(self, cache: BatchCache, pending: list[int]):
        self.cache = cache
        self.pending = pending
        self.batch = cache.batch + len(pending)

    def cells_after(self, new_lengths: list[int]) -> int:
        return self.cache.cells_after([*self.pending, *new_lengths])


def aligned(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """input_ids, attention_mask and position_ids of token rows aligned at column 0, padded on the right.

    Every column's position is its index, padding too: the decoder writes each column's KV at its position, so
    padding writes into its own (masked) columns and never over a token.
    """
    width = max(len(r) for r in rows)
    ids = np.zeros((len(rows), width), np.int64)
    mask = np.zeros((len(rows), width), np.int64)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
        mask[i, :len(row)] = 1
    return ids, mask, np.broadcast_to(np.arange(width, dtype=np.int64), ids.shape).copy()


def length_groups(sequences: list[Sequence], max_tokens: int) -> list[list[Sequence]]:
    """Split a prefill into groups of similar length, so padding wastes little compute."""
    groups: list[list[Sequence]] = []
    for seq in sorted(sequences, key=lambda s: s.cache_tokens):
        group = groups[-1] if groups else None
        if group is not None:
            slots = seq.cache_tokens * (len(group) + 1)  # sorted: this one is the longest
            used = sum(s.cache_tokens for s in group) + seq.cache_tokens
            if slots <= max_tokens and slots - used <= PREFILL_PADDING_WASTE * slots:
                group.append(seq)
                continue
        groups.append([seq])
    return groups
