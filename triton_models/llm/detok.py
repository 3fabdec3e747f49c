"""Incremental detokenization: text deltas per generated token, never half of a multi-byte character."""

from __future__ import annotations

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream


class IncrementalDetokenizer:
    """Turns generated token ids into text deltas.

    `tokenizers`' DecodeStream holds bytes back until they form complete UTF-8 characters (a token may carry
    half of an emoji) and handles the tokenizer's space conventions, so deltas concatenate to the full text.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._stream = DecodeStream(skip_special_tokens=skip_special_tokens)
        self._ids: list[int] = []
        self._text = ""  # emitted so far, for the final flush

    def step(self, token_id: int) -> str:
        self._ids.append(token_id)
        piece = self._stream.step(self._tokenizer, token_id) or ""
        self._text += piece
        return piece

    def flush(self) -> str:
        """Whatever is still held at the end (bytes that never completed a character, decoded leniently)."""
        full = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        if len(full) <= len(self._text) or not full.startswith(self._text):
            return ""
        rest = full[len(self._text):]
        self._text = full
        return rest
