"""Per-sequence sampling: logit bias, penalties, temperature, top-k, top-p, a seeded generator, logprobs.

Each sequence owns its `numpy.random.Generator`, so a seeded request draws the same numbers whatever else is
in the batch. Logprobs are the model's raw distribution (before penalties and temperature), as vLLM reports.
Nothing here argsorts the vocabulary: sorting the few likely tokens (the whole row only when they cannot hold
the nucleus) finds the top-k / top-p cut-off value, and a blocked cumulative sum finds the sampled index.

A row the model got wrong (NaN, +inf, nothing finite) is cleaned or refused here (SamplingError: that
sequence fails alone); temperatures below GREEDY_TEMPERATURE are greedy, as in vLLM, since dividing by them
overflows float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from triton_models.llm.params import GREEDY_TEMPERATURE, SamplingParams

__all__ = ["GREEDY_TEMPERATURE", "Sampler", "SamplingError", "TokenLogprobs"]

BLOCK = 1024  # cumulative sums run over block totals first, then inside one block
HEAD = 1e-4  # tokens at least this likely relative to the best are sorted first for top-k / top-p


@dataclass(frozen=True)
class TokenLogprobs:
    """The sampled token's logprob and rank, and the top-k alternatives (id, logprob), best first."""

    token_id: int
    logprob: float
    rank: int
    top: list[tuple[int, float]]


class SamplingError(ValueError):
    """This sequence's logits cannot be sampled (no finite value): the sequence fails, the batch goes on."""


class Sampler:
    """Chooses a sequence's next token from one row of logits."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.rng = np.random.default_rng(params.seed)
        self._counts: dict[int, int] = {}
        if params.logit_bias:
            self._bias_ids = np.array([t for t, _ in params.logit_bias], np.int64)
            self._bias = np.array([b for _, b in params.logit_bias], np.float32)

    def observe(self, token_id: int) -> None:
        """Record a generated token (presence and frequency penalties count generated tokens only)."""
        self._counts[token_id] = self._counts.get(token_id, 0) + 1

    def sample(self, logits: np.ndarray) -> tuple[int, TokenLogprobs | None]:
        """Next token for a 1-D float32 logits row; the row may be modified in place."""
        p = self.params
        if not np.isfinite(logits.max()):  # one reduction on the usual path; NaN propagates through max
            _clean(logits)
        info = _logprobs(logits, p.logprobs) if p.logprobs is not None else None
        self._penalise(logits)
        token = int(np.argmax(logits)) if p.greedy else self._draw(logits)
        return token, info.for_token(token) if info is not None else None

    def _penalise(self, logits: np.ndarray) -> None:
        """logit_bias, then presence and frequency penalties (vLLM's order: logprobs stay the model's own)."""
        p = self.params
        if p.logit_bias:
            logits[self._bias_ids] += self._bias
        if not self._counts or (p.presence_penalty == 0.0 and p.frequency_penalty == 0.0):
            return
        ids = np.fromiter(self._counts.keys(), dtype=np.int64, count=len(self._counts))
        counts = np.fromiter(self._counts.values(), dtype=np.float32, count=len(self._counts))
        logits[ids] -= p.frequency_penalty * counts + p.presence_penalty

    def _draw(self, logits: np.ndarray) -> int:
        p = self.params
        # Unnormalised, the best token at 1.0. Shifted before scaling: (x - max) / t <= 0, so a small t gives
        # probabilities of 0, never inf - inf = NaN.
        shifted = logits - logits.max()
        probs = np.exp(shifted if p.temperature == 1.0 else shifted / np.float32(p.temperature))
        vocab = probs.shape[0]
        top_k = p.top_k if 0 < p.top_k < vocab else vocab
        if top_k < vocab or p.top_p < 1.0:
            probs = np.where(probs >= _cut(probs, top_k, p.top_p), probs, np.float32(0.0))
        return _index_at_fraction(probs, self.rng.random(), strict=True)


def _clean(logits: np.ndarray) -> None:
    """Make a row samplable in place: NaN is never chosen, +inf tokens share the choice, -inf stays -inf."""
    np.copyto(logits, -np.inf, where=np.isnan(logits))
    top = np.isposinf(logits)
    if top.any():  # the model says "certainly one of these": keep only them, equally likely
        logits[:] = np.where(top, np.float32(0.0), np.float32(-np.inf))
    elif not np.isfinite(logits.max()):
        raise SamplingError("the model produced no finite logits for this sequence")


def _cut(probs: np.ndarray, top_k: int, top_p: float) -> float:
    """The smallest probability that top-k, then top-p, keep (ties with it stay too)."""
    head = probs[probs >= HEAD]  # the likely tokens: usually a few hundred, so sorting them is cheap
    if top_k < probs.shape[0] and len(head) >= top_k:  # the top k are all in the head
        descending = np.sort(head)[::-1][:top_k]
        fraction = top_p
    elif top_k == probs.shape[0] and head.sum(dtype=np.float64) >= top_p * probs.sum(dtype=np.float64):
        descending = np.sort(head)[::-1]  # the nucleus lies inside the head
        fraction = top_p * float(probs.sum(dtype=np.float64)) / float(descending.sum(dtype=np.float64))
    else:
        descending = np.sort(probs)[::-1][:top_k]
        fraction = top_p
    keep = 1 + _index_at_fraction(descending, min(fraction, 1.0), strict=False) if top_p < 1.0 else top_k
    return float(descending[keep - 1])


def _index_at_fraction(values: np.ndarray, fraction: float, strict: bool) -> int:
    """Smallest i whose cumulative sum exceeds (strict) or reaches `fraction` of the total: an inverse CDF."""
    starts = np.arange(0, values.shape[0], BLOCK)
    block_cum = np.cumsum(np.add.reduceat(values, starts), dtype=np.float64)
    target = fraction * block_cum[-1]
    side = "right" if strict else "left"
    block = min(int(np.searchsorted(block_cum, target, side=side)), len(starts) - 1)
    before = block_cum[block - 1] if block else 0.0
    inner = np.cumsum(values[starts[block]: starts[block] + BLOCK], dtype=np.float64) + before
    index = starts[block] + min(int(np.searchsorted(inner, target, side=side)), len(inner) - 1)
    if strict and values[index] == 0:  # rounding put the draw past the last kept token: take that token
        index = int(np.flatnonzero(values)[-1])
    return index


@dataclass(frozen=True)
class _RawLogprobs:
    """Log-softmax facts of the raw row, kept until the sampled token is known."""

    logsumexp: float
    row: np.ndarray
    top: list[tuple[int, float]]

    def for_token(self, token: int) -> TokenLogprobs:
        chosen = float(self.row[token])
        rank = int(np.count_nonzero(self.row > chosen)) + 1
        return TokenLogprobs(token, chosen - self.logsumexp, rank, self.top)


def _logprobs(row: np.ndarray, k: int) -> _RawLogprobs:
    raw = row.copy()  # penalties edit `row` afterwards
    peak = float(raw.max())
    lse = peak + float(np.log(np.exp(raw - peak).sum(dtype=np.float64)))
    top: list[tuple[int, float]] = []
    if k:
        ids = np.flatnonzero(raw >= peak + np.log(HEAD))  # the likely tokens first, as in `_cut`
        if len(ids) < k:
            ids = np.flatnonzero(raw >= np.sort(raw)[-k])
        ids = ids[np.argsort(-raw[ids], kind="stable")][:k]
        top = [(int(i), float(raw[i]) - lse) for i in ids]
    return _RawLogprobs(lse, raw, top)
