"""KV of recent prompts, reused when a new prompt starts with the same tokens (a shared system prompt, the
same question again, the next turn of a chat): only the rest of the prompt is prefilled.

Every entry belongs to a salt (vLLM's `cache_salt`; None is the shared pool) and is reused only by prompts
with the same salt: a reused prefix answers faster, so tenants sharing entries could time each other's
prompts.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MIN_PREFIX = 8  # shorter common prefixes are not worth a lookup's copy


@dataclass(frozen=True)
class _Entry:
    tokens: np.ndarray  # int64 [length]
    kv: list[np.ndarray]  # per layer and kind [1, kv_heads, length, head_dim]; never written to
    salt: str | None  # reused only by prompts with this salt


class PrefixCache:
    """Least-recently-used prompt KV, bounded by the tokens it holds (0 disables it), partitioned by salt.

    `hits` and `hit_tokens` count lookups that found a prefix and the tokens they reused, since creation.
    """

    def __init__(self, capacity_tokens: int, min_prefix: int = MIN_PREFIX,
                 on_hit: Callable[[int], None] | None = None):
        self.on_hit = on_hit  # called with the tokens each hit reuses (Triton's metrics, in production)
        self.capacity = capacity_tokens
        self.min_prefix = min_prefix
        self.tokens_held = 0
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._keys = itertools.count()
        self.hits = 0
        self.hit_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, tokens: list[int], salt: str | None = None) -> tuple[int, list[np.ndarray]] | None:
        """The longest prefix of `tokens` cached under `salt` and its KV, always leaving the last token to
        compute."""
        wanted = np.asarray(tokens, np.int64)
        limit = len(wanted) - 1  # the last prompt token must run, to give the next token's logits
        best_key, best = None, 0
        for key, entry in self._entries.items():
            n = min(len(entry.tokens), limit)
            if n <= best or entry.salt != salt:
                continue
            same = entry.tokens[:n] == wanted[:n]
            common = n if same.all() else int(np.argmin(same))
            if common > best:
                best_key, best = key, common
        if best_key is None or best < self.min_prefix:
            return None
        self._entries.move_to_end(best_key)
        entry = self._entries[best_key]
        self.hits += 1
        self.hit_tokens += best
        if self.on_hit is not None:
            self.on_hit(best)
        return best, [kv if best == kv.shape[2] else np.ascontiguousarray(kv[:, :, :best]) for kv in entry.kv]

    def insert(self, tokens: list[int], kv: Callable[[], list[np.ndarray]], salt: str | None = None) -> None:
        """Remember the KV of `tokens` under `salt`: `kv()` gives per layer [1, kv_heads, len(tokens),
        head_dim], kept as is; it is called only when the entry is new."""
        if not self.min_prefix <= len(tokens) <= self.capacity:
            return
        new = np.asarray(tokens, np.int64)
        for key, entry in list(self._entries.items()):
            if entry.salt != salt:
                continue
            if len(entry.tokens) >= len(new) and np.array_equal(entry.tokens[: len(new)], new):
                self._entries.move_to_end(key)  # already held, as this or a longer prompt
                return
            if np.array_equal(new[: len(entry.tokens)], entry.tokens):
                self._remove(key)  # the new entry covers this one
        self._entries[next(self._keys)] = _Entry(new, kv(), salt)
        self.tokens_held += len(new)
        while self.tokens_held > self.capacity:
            self._remove(next(iter(self._entries)))

    def _remove(self, key: int) -> None:
        self.tokens_held -= len(self._entries.pop(key).tokens)
