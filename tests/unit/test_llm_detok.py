"""Incremental detokenization with SmolLM2's real tokenizer: deltas add up, no half characters."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from tests.integration.llm_tiny import tokenizer_dir
from triton_models.llm.detok import IncrementalDetokenizer


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(tokenizer_dir() / "tokenizer.json"))


@pytest.mark.parametrize("text", [
    "Hello world, how are you?",
    " leading space and  double  spaces\nnew line",
    "Emoji 😀🎉 and CJK 日本語 and accents: é, ñ, ü",
])
def test_deltas_concatenate_to_the_decoded_text(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.step(i) for i in ids]
    assert "".join(deltas) + detok.flush() == tokenizer.decode(ids) == text
    assert not any("\ufffd" in d for d in deltas)


def test_split_character_is_held_until_complete(tokenizer):
    ids = tokenizer.encode("😀", add_special_tokens=False).ids
    assert len(ids) > 1  # byte-level BPE spreads the emoji over tokens
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.step(i) for i in ids]
    assert deltas[:-1] == [""] * (len(ids) - 1) and deltas[-1] == "😀"


def test_special_tokens_are_skipped(tokenizer):
    detok = IncrementalDetokenizer(tokenizer)
    eos = tokenizer.token_to_id("<|im_end|>")
    assert detok.step(tokenizer.token_to_id("Hello")) == "Hello"
    assert detok.step(eos) == ""


def test_flush_decodes_an_incomplete_character_leniently(tokenizer):
    ids = tokenizer.encode("😀", add_special_tokens=False).ids
    detok = IncrementalDetokenizer(tokenizer)
    assert [detok.step(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert detok.flush() == tokenizer.decode(ids[:-1])
