"""Token usage read off a response as it goes out, so every endpoint is metered without its own code.

JSON responses: the `usage` object (OpenAI puts it last; only the tail of the body is kept). Streams: each
SSE event with generated text counts one completion token as it is produced (and gives the time to first
token and inter-token latencies); a final `usage` event (`stream_options.include_usage`) corrects the count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import orjson

_USAGE = re.compile(rb'"usage"\s*:\s*(\{[^{}]*\})')
_TAIL_BYTES = 4096


@dataclass
class Tally:
    """What one body chunk (or the end of the body) added."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_s: float | None = None  # since the request started
    inter_token_s: list[float] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _int(usage: dict, key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and value > 0 else 0


class UsageMeter:
    def __init__(self, started: float):
        self.started = started
        self.streamed = False
        self._pending = b""  # an SSE event split over chunks
        self._tail = b""
        self._completion = 0
        self._prompt_seen = False
        self._last_token_at: float | None = None

    def start(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.streamed = dict(headers).get(b"content-type", b"").startswith(b"text/event-stream")

    def feed(self, chunk: bytes, now: float) -> Tally:
        tally = Tally()
        if not self.streamed:
            self._tail = (self._tail + chunk)[-_TAIL_BYTES:]
            return tally
        *events, self._pending = (self._pending + chunk).split(b"\n\n")
        for event in events:
            self._event(event, now, tally)
        return tally

    def _event(self, event: bytes, now: float, tally: Tally) -> None:
        data = b"".join(line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:"))
        if not data or data == b"[DONE]":
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(obj, dict) or "error" in obj:
            return
        produced = sum(1 for c in obj.get("choices") or () if isinstance(c, dict) and _has_text(c))
        if produced:
            if self._last_token_at is None:
                tally.first_token_s = now - self.started
            else:
                tally.inter_token_s.append(now - self._last_token_at)
            self._last_token_at = now
            self._completion += produced
            tally.completion_tokens += produced
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self._settle(usage, tally)

    def _settle(self, usage: dict, tally: Tally) -> None:
        if not self._prompt_seen:
            tally.prompt_tokens += _int(usage, "prompt_tokens")
            self._prompt_seen = True
        extra = _int(usage, "completion_tokens") - self._completion
        if extra > 0:
            tally.completion_tokens += extra
            self._completion += extra

    def finish(self) -> Tally:
        """Usage of a JSON body, known once the body has ended."""
        tally = Tally()
        if not self.streamed:
            found = _USAGE.findall(self._tail)
            if found:
                try:
                    usage = orjson.loads(found[-1])
                except orjson.JSONDecodeError:
                    return tally
                if isinstance(usage, dict):
                    self._settle(usage, tally)
        return tally


def _has_text(choice: dict) -> bool:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return bool(delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls"))
    return bool(choice.get("text"))
