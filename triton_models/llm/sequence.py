"""Requests and their sequences (n per request): generated tokens, text deltas, finish reasons."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from triton_models.contract import ModelError
from triton_models.llm.grammar import Constraint
from triton_models.llm.params import SamplingParams
from triton_models.llm.sampler import Sampler, TokenLogprobs
from triton_models.llm.stops import StopMatcher
from triton_models.llm.tokenizer import TextTokenizer

STOP, LENGTH, ABORT = "stop", "length", "abort"


@dataclass
class RequestOutput:
    """One response's worth of a request: per-sequence deltas since the previous response."""

    texts: list[str]
    num_output_tokens: list[int]
    num_input_tokens: int
    finish_reasons: list[str] | None = None  # on the final response only
    # per sequence, per token: {token_id: {logprob, rank, decoded_token}}
    logprobs: list[list[dict]] | None = None


class ResponseSink(Protocol):
    """Where a request's responses go (the Triton response sender in production; a list in tests).

    Called from the engine thread. Every request gets exactly one call with final=True, or one `fail` (the
    error the client hears: a failed sequence, the model shutting down).
    """

    def is_cancelled(self) -> bool: ...

    def send(self, output: RequestOutput | None, final: bool) -> None: ...

    def fail(self, error: ModelError) -> None: ...


@dataclass(frozen=True)
class PromptEmbeds:
    """Embeddings that replace the token lookup at some prompt positions (image features at image tokens)."""

    positions: np.ndarray  # token indices into the prompt
    values: np.ndarray  # [len(positions), hidden]

    def place(self, row: np.ndarray, start: int, end: int) -> None:
        """Write the values for prompt tokens [start, end) into `row` [columns, hidden], token `start` at column
        0 (a chunk's offset)."""
        keep = (self.positions >= start) & (self.positions < end)
        row[self.positions[keep] - start] = self.values[keep]


_ids = itertools.count()


@dataclass(eq=False)
class Request:
    prompt: str
    prompt_ids: list[int]
    params: SamplingParams
    stream: bool
    sink: ResponseSink
    prepend_prompt: bool = False
    want_logprobs: bool = False
    id: int = field(default_factory=lambda: next(_ids))
    created: float = field(default_factory=time.monotonic)
    admitted: float | None = None  # first admission into the batch (queue time), monotonic
    first_token: float | None = None  # first token generated (time to first token), monotonic
    sequences: list[Sequence] = field(default_factory=list)
    responses: int = 0
    closed: bool = False  # the final flag (or an error) went out
    checked_at: float = 0.0  # last is_cancelled() call
    prompt_embeds: PromptEmbeds | None = None  # image features, placed at prefill (and re-prefill)

    @property
    def finished(self) -> bool:
        return all(s.finished for s in self.sequences)

    def take_output(self, final: bool) -> RequestOutput:
        first = self.responses == 0
        self.responses += 1
        texts, counts, logprobs = [], [], []
        for seq in self.sequences:
            text, count, lps = seq.take()
            texts.append(self.prompt + text if first and self.prepend_prompt else text)
            counts.append(count)
            logprobs.append(lps)
        return RequestOutput(
            texts=texts,
            num_output_tokens=counts,
            num_input_tokens=len(self.prompt_ids),
            finish_reasons=[s.finish_reason or ABORT for s in self.sequences] if final else None,
            logprobs=logprobs if self.want_logprobs else None,
        )


class Sequence:
    """One generated continuation: cached tokens, sampler state, the text not yet sent."""

    def __init__(self, request: Request, index: int, tokenizer: TextTokenizer, max_new: int,
                 constraint: Constraint | None = None):
        """`constraint`: the grammar this sequence's tokens must follow (structured outputs), if any."""
        params = request.params
        self.request = request
        self.index = index
        self.tokens = list(request.prompt_ids)
        self.max_new = max_new
        self.generated = 0
        if params.seed is not None and index:  # n > 1 with a seed: distinct but reproducible streams
            params = _with_seed(params, params.seed + index)
        self.sampler = Sampler(params)
        self._tokenizer = tokenizer
        self._detok = tokenizer.detokenizer()
        self._stops = StopMatcher(params.stop)
        eos = frozenset() if params.ignore_eos else tokenizer.eos_ids
        self._stop_ids = frozenset(params.stop_token_ids) | eos
        self._text: list[str] = []
        self._count = 0
        self._logprobs: list[dict] = []
        self.finish_reason: str | None = None
        self.constraint = constraint
        self._eos = tokenizer.eos_ids

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def cache_tokens(self) -> int:
        """Tokens a (re)prefill puts in the cache: the prompt and everything generated so far."""
        return len(self.tokens)

    def accept(self, token: int, logprobs: TokenLogprobs | None) -> None:
        """Take the sampled token: update text, stop strings, limits."""
        self.sampler.observe(token)
        self.tokens.append(token)
        self.generated += 1
        self._count += 1
        if logprobs is not None:
            self._logprobs.append(self._logprob_entry(logprobs))
        if self.constraint is not None:
            self.constraint.consume(token)
        if token in self._stop_ids or self.constraint is not None and self.constraint.complete and token in self._eos:
            self.finish(STOP)  # (with ignore_eos, the end of sequence a complete grammar allows ends it too)
            return
        self._text.append(self._stops.feed(self._detok.step(token)))
        if self._stops.stopped:
            self.finish_reason = STOP
        elif self.constraint is not None and self.constraint.complete:
            self.finish(STOP)  # the grammar allows nothing more
        elif self.generated >= self.max_new:
            self.finish(LENGTH)

    def finish(self, reason: str) -> None:
        if self.finished:
            return
        if reason != ABORT:
            self._text.append(self._stops.feed(self._detok.flush()))
            self._text.append(self._stops.flush())
        self.finish_reason = reason

    def take(self) -> tuple[str, int, list[dict]]:
        """Text, token count and logprobs since the last call."""
        text, count, lps = "".join(self._text), self._count, self._logprobs
        self._text, self._count, self._logprobs = [], 0, []
        return text, count, lps

    def _logprob_entry(self, info: TokenLogprobs) -> dict:
        entry = {str(tid): {"logprob": lp, "rank": rank + 1, "decoded_token": self._tokenizer.token_text(tid)}
                 for rank, (tid, lp) in enumerate(info.top)}
        entry[str(info.token_id)] = {
            "logprob": info.logprob,
            "rank": info.rank,
            "decoded_token": self._tokenizer.token_text(info.token_id),
        }
        return entry


def _with_seed(params: SamplingParams, seed: int) -> SamplingParams:
    return replace(params, seed=seed % 2**64)
