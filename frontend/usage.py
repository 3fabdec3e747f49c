"""Exact token usage of one request, recorded by the services from the engine's own counts.

The services add what Triton reports (prompt tokens once per prompt, completion tokens per response) as it
arrives; the metering layer (frontend/metering.py) takes what is not yet charged before each body message
leaves, so a request is charged its prompt and completion whatever the client asked to see (a stream
without `stream_options.include_usage` included), and before its last byte reaches the client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_at: float | None = None  # time.perf_counter() of the first completion token
    _charged_prompt: int = 0
    _charged_completion: int = 0
    _last_token_at: float | None = None
    _gaps: list[float] = field(default_factory=list)  # inter-token latencies not yet observed

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add_prompt(self, tokens: int) -> None:
        self.prompt_tokens += max(int(tokens), 0)

    def add_completion(self, tokens: int, now: float | None = None) -> None:
        tokens = max(int(tokens), 0)
        if not tokens:
            return
        now = time.perf_counter() if now is None else now
        if self._last_token_at is None:
            self.first_token_at = now
        else:
            self._gaps.append(now - self._last_token_at)
        self._last_token_at = now
        self.completion_tokens += tokens

    def take_uncharged(self) -> tuple[int, int]:
        """(prompt, completion) tokens recorded since the last call."""
        prompt = self.prompt_tokens - self._charged_prompt
        completion = self.completion_tokens - self._charged_completion
        self._charged_prompt, self._charged_completion = self.prompt_tokens, self.completion_tokens
        return prompt, completion

    def take_gaps(self) -> list[float]:
        gaps, self._gaps = self._gaps, []
        return gaps
