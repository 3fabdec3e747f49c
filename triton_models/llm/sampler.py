"""Per-sequence sampling: penalties, temperature, top-k, top-p, a seeded generator, logprobs.

Each sequence owns its `numpy.random.Generator`, so a seeded request draws the same numbers whatever else is
in the batch. Logprobs are the model's raw distribution (before penalties and temperature), as vLLM reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from triton_models.llm.params import SamplingParams

# top-p looks at this many best tokens first; it sorts the whole vocabulary only if they hold too little mass
TOP_P_CANDIDATES = 1024


@dataclass(frozen=True)
class TokenLogprobs:
    """The sampled token's logprob and rank, and the top-k alternatives (id, logprob), best first."""

    token_id: int
    logprob: float
    rank: int
    top: list[tuple[int, float]]


class Sampler:
    """Chooses a sequence's next token from one row of logits."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.rng = np.random.default_rng(params.seed)
        self._counts: dict[int, int] = {}

    def observe(self, token_id: int) -> None:
        """Record a generated token (presence and frequency penalties count generated tokens only)."""
        self._counts[token_id] = self._counts.get(token_id, 0) + 1

    def sample(self, logits: np.ndarray) -> tuple[int, TokenLogprobs | None]:
        """Next token for a 1-D float32 logits row; the row may be modified in place."""
        p = self.params
        raw_lse = None
        if p.logprobs is not None:
            raw_lse = _logsumexp(logits)
            raw = logits.copy()
        self._penalise(logits)
        if p.greedy:
            token = int(np.argmax(logits))
        else:
            token = self._draw(logits)
        info = _logprobs(raw, raw_lse, token, p.logprobs) if raw_lse is not None else None
        return token, info

    def _penalise(self, logits: np.ndarray) -> None:
        p = self.params
        if not self._counts or (p.presence_penalty == 0.0 and p.frequency_penalty == 0.0):
            return
        ids = np.fromiter(self._counts.keys(), dtype=np.int64, count=len(self._counts))
        counts = np.fromiter(self._counts.values(), dtype=np.float32, count=len(self._counts))
        logits[ids] -= p.frequency_penalty * counts + p.presence_penalty

    def _draw(self, logits: np.ndarray) -> int:
        p = self.params
        scaled = logits / np.float32(p.temperature)
        vocab = scaled.shape[0]
        if 0 < p.top_k < vocab:
            ids = np.argpartition(scaled, vocab - p.top_k)[vocab - p.top_k:]
        elif p.top_p < 1.0 and vocab > TOP_P_CANDIDATES:
            ids = np.argpartition(scaled, vocab - TOP_P_CANDIDATES)[vocab - TOP_P_CANDIDATES:]
            lse = _logsumexp(scaled)
            if np.exp(scaled[ids] - lse).sum() < p.top_p:  # nucleus reaches beyond the candidates
                ids = np.arange(vocab)
        else:
            ids = np.arange(vocab)
        values = scaled[ids]
        probs = np.exp(values - values.max())
        if p.top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            ids, probs = ids[order], probs[order]
            cumulative = np.cumsum(probs) / probs.sum()
            keep = int(np.searchsorted(cumulative, p.top_p)) + 1  # smallest prefix holding top_p of the mass
            ids, probs = ids[:keep], probs[:keep]
        elif len(ids) < vocab:
            order = np.argsort(ids, kind="stable")  # a fixed order, so a seed gives the same token every time
            ids, probs = ids[order], probs[order]
        cumulative = np.cumsum(probs, dtype=np.float64)
        choice = int(np.searchsorted(cumulative, self.rng.random() * cumulative[-1], side="right"))
        return int(ids[min(choice, len(ids) - 1)])


def _logsumexp(row: np.ndarray) -> float:
    top = float(row.max())
    return top + float(np.log(np.exp(row - top, dtype=np.float32).sum(dtype=np.float64)))


def _logprobs(raw: np.ndarray, lse: float, token: int, k: int) -> TokenLogprobs:
    chosen = float(raw[token])
    rank = int(np.count_nonzero(raw > chosen)) + 1
    top: list[tuple[int, float]] = []
    if k:
        ids = np.argpartition(raw, raw.shape[0] - k)[raw.shape[0] - k:]
        ids = ids[np.argsort(-raw[ids], kind="stable")]
        top = [(int(i), float(raw[i]) - lse) for i in ids]
    return TokenLogprobs(token, chosen - lse, rank, top)
