"""Prompt-prefix KV reuse: longest match, the last token always left to run, LRU by tokens held."""

from __future__ import annotations

import numpy as np
import pytest

from triton_models.llm.prefix_cache import PrefixCache


def kv_for(tokens: list[int]):
    """Fake KV (as the lazy callable `insert` takes) whose values record each position's token."""
    column = np.asarray(tokens, np.float32)[None, None, :, None]
    return lambda: [np.broadcast_to(column, (1, 2, len(tokens), 3)).copy() for _ in range(4)]


def test_longest_prefix_leaves_the_last_token_to_run():
    cache = PrefixCache(100, min_prefix=3)
    cache.insert(list(range(10)), kv_for(list(range(10))))
    cache.insert([0, 1, 2, 3, 9, 9], kv_for([0, 1, 2, 3, 9, 9]))
    length, past = cache.lookup([0, 1, 2, 3, 4, 5, 6, 77])
    assert length == 7 and past[0].shape == (1, 2, 7, 3) and past[0].flags.c_contiguous
    assert past[1][0, 0, :, 0].tolist() == list(range(7))
    length, past = cache.lookup(list(range(10)))  # the same prompt again: all but its last token
    assert length == 9
    assert cache.lookup([0, 1, 5]) is None  # below min_prefix
    assert cache.lookup([7, 1, 2, 3, 4]) is None


def test_whole_entry_is_returned_without_a_copy():
    cache = PrefixCache(100, min_prefix=2)
    kv = kv_for([1, 2, 3])()
    cache.insert([1, 2, 3], lambda: kv)
    length, past = cache.lookup([1, 2, 3, 4])
    assert length == 3 and past[0] is kv[0]


def test_prefixes_are_not_held_twice_nor_copied_again():
    cache = PrefixCache(100, min_prefix=2)
    cache.insert([1, 2, 3], kv_for([1, 2, 3]))
    cache.insert([1, 2, 3, 4, 5], kv_for([1, 2, 3, 4, 5]))  # covers the first
    cache.insert([1, 2, 3, 4], lambda: pytest.fail("covered: no copy"))  # covered by the second
    assert len(cache) == 1 and cache.tokens_held == 5


def test_least_recently_used_leave_first():
    cache = PrefixCache(10, min_prefix=2)
    cache.insert([1, 1, 1, 1], kv_for([1, 1, 1, 1]))
    cache.insert([2, 2, 2, 2], kv_for([2, 2, 2, 2]))
    assert cache.lookup([1, 1, 1, 1, 5]) is not None  # now the most recent
    cache.insert([3, 3, 3, 3], kv_for([3, 3, 3, 3]))  # 12 tokens > 10: the oldest use goes
    assert cache.lookup([2, 2, 2, 2, 5]) is None
    assert cache.lookup([1, 1, 1, 1, 5]) is not None and cache.tokens_held == 8


def test_disabled_or_too_long_is_not_kept():
    off = PrefixCache(0)
    off.insert(list(range(20)), kv_for(list(range(20))))
    assert len(off) == 0 and off.lookup(list(range(21))) is None
    small = PrefixCache(5, min_prefix=2)
    small.insert(list(range(6)), kv_for(list(range(6))))
    assert len(small) == 0


def test_a_salt_sees_only_its_own_entries():
    cache = PrefixCache(100, min_prefix=2)
    prompt = list(range(10))
    cache.insert(prompt, kv_for(prompt), salt="tenant-a")
    assert cache.lookup([*prompt, 1], salt="tenant-b") is None
    assert cache.lookup([*prompt, 1]) is None  # the unsalted pool is a scope of its own
    assert cache.hits == 0
    length, _past = cache.lookup([*prompt, 1], salt="tenant-a")
    assert length == 10 and (cache.hits, cache.hit_tokens) == (1, 10)


def test_the_same_prompt_is_held_once_per_salt():
    cache = PrefixCache(100, min_prefix=2)
    cache.insert([1, 2, 3, 4], kv_for([1, 2, 3, 4]), salt="a")
    cache.insert([1, 2, 3], kv_for([1, 2, 3]), salt="b")  # another salt's longer entry does not cover it
    cache.insert([1, 2, 3, 4, 5], kv_for([1, 2, 3, 4, 5]), salt="b")  # covers b's own entry only
    cache.insert([1, 2, 3, 4], lambda: pytest.fail("held under this salt"), salt="a")
    assert len(cache) == 2 and cache.tokens_held == 9
    assert cache.lookup([1, 2, 3, 4, 5, 6], salt="a")[0] == 4
    assert cache.lookup([1, 2, 3, 4, 5, 6], salt="b")[0] == 5
