"""Admission control: queue bound, batch bound, KV budget, prefill budget, preemption, cancelled waiters."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from triton_models.llm.kv_cache import BatchCache
from triton_models.llm.scheduler import Limits, Overloaded, Scheduler


@dataclass(eq=False)
class Seq:
    tokens: int
    request: object = field(default_factory=object)
    finished: bool = False

    @property
    def cache_tokens(self) -> int:
        return self.tokens


@dataclass
class Cache:
    batch: int = 0
    width: int = 0

    def cells_after(self, new_lengths):
        rows = self.batch + len(new_lengths)
        return rows * (max([self.width, *new_lengths]) + 1)


def test_queue_bound_counts_requests_and_raises_overloaded():
    s = Scheduler(Limits(max_queue=2))
    shared = object()
    s.enqueue([Seq(5, shared), Seq(5, shared)])  # one request with n=2
    s.enqueue([Seq(5)])
    with pytest.raises(Overloaded, match="already waiting") as info:
        s.enqueue([Seq(5)])
    assert info.value.code == "overloaded" and info.value.status == 503  # typed, not a word in the message
    assert len(s.waiting) == 3


def test_cancelled_waiters_do_not_count_and_are_dropped():
    s = Scheduler(Limits(max_queue=1))
    waiting = Seq(5)
    s.enqueue([waiting])
    waiting.finished = True
    s.enqueue([Seq(5)])  # the cancelled one no longer holds the queue
    assert len(s.admit(Cache())) == 1 and not s.waiting


def test_admission_stops_at_max_num_seqs():
    s = Scheduler(Limits(max_num_seqs=3))
    for _ in range(5):
        s.enqueue([Seq(4)])
    assert len(s.admit(Cache(batch=1, width=10))) == 2
    assert len(s.waiting) == 3


def test_admission_respects_the_kv_budget_padding_included():
    s = Scheduler(Limits(max_kv_tokens=100))
    s.enqueue([Seq(10)])
    s.enqueue([Seq(40)])
    # 2 running rows padded to 20: one 10-token join gives 3 * 21 = 63 cells; a 40-token one 4 * 41 > 100
    admitted = s.admit(Cache(batch=2, width=20))
    assert [a.tokens for a in admitted] == [10]
    assert [w.tokens for w in s.waiting] == [40]  # FIFO: nothing behind it jumps the queue


def test_first_sequence_is_admitted_alone_whatever_its_size():
    s = Scheduler(Limits(max_kv_tokens=50, max_prefill_tokens=8))
    s.enqueue([Seq(40)])
    s.enqueue([Seq(2)])
    assert [a.tokens for a in s.admit(Cache())] == [40]
    assert s.fits_alone(49) and not s.fits_alone(50)


def test_prefill_token_budget_bounds_one_step():
    s = Scheduler(Limits(max_prefill_tokens=10))
    for n in (6, 4, 3):
        s.enqueue([Seq(n)])
    assert [a.tokens for a in s.admit(Cache())] == [6, 4]


def test_preemption_drops_the_newest_rows_until_the_next_step_fits():
    s = Scheduler(Limits(max_kv_tokens=60))
    assert s.rows_to_preempt(np.array([10, 10, 10])) == 0  # 3 * 11 = 33
    assert s.rows_to_preempt(np.array([10, 25, 12, 8])) == 2  # keep [10, 25]: 2 * 26 = 52
    assert s.rows_to_preempt(np.array([60])) == 1  # cannot grow at all
    requeued = [Seq(1), Seq(2)]
    s.enqueue([Seq(9)])
    s.requeue(requeued)
    assert [w.tokens for w in s.waiting] == [1, 2, 9]


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_queue"):
        Limits(max_queue=0)


def kv(batch: int, length: int, fill: float) -> list[np.ndarray]:
    return [np.full((batch, 2, length, 3), fill, np.float32) for _ in range(4)]


def test_batch_cache_aligns_rows_by_position_and_trims_on_leave():
    cache = BatchCache([np.zeros((1, 2, 0, 3), np.float32)] * 4)
    cache.append(kv(1, 5, 1.0), [5])
    cache.append(kv(2, 3, 2.0), [3, 2])  # a prefill group 3 wide; its second row has 2 real tokens
    assert cache.batch == 3 and cache.width == 5 and cache.lengths.tolist() == [5, 3, 2]
    assert cache.past[0][1, 0, :, 0].tolist() == [2, 2, 2, 0, 0]  # tokens at columns 0..2, padding after
    ids, mask, positions = cache.step_feeds(np.array([7, 8, 9]))
    # each row's new token goes to the column of its position and sees the columns up to it
    assert ids.tolist() == [[7], [8], [9]] and positions.tolist() == [[5], [3], [2]]
    assert mask.tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]]
    cache.advance(kv(3, 6, 3.0))
    assert cache.lengths.tolist() == [6, 4, 3] and cache.width == 6
    assert cache.row(1)[0].shape == (1, 2, 4, 3)
    cache.keep([1, 2])  # the longest leaves: the columns only it needed go
    assert cache.width == 4 and cache.step_feeds(np.array([1, 2]))[1].tolist() == [[1] * 5, [1, 1, 1, 1, 0]]
    assert cache.past[0].shape == (2, 2, 4, 3) and cache.past[0].flags.c_contiguous
    assert cache.cells_after([10]) == 3 * 11
    cache.keep([])
    assert cache.batch == 0 and cache.width == 0 and cache.cells_after([]) == 0
