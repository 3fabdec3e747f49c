"""Fixtures of the unit tests on SmolLM2's real tokenizer (no model): the tokenizer, llguidance grammars on it.
A test module may define its own `tokenizer`, which takes precedence."""

from __future__ import annotations

import pytest

from tests.integration import llm_tiny
from triton_models.llm.grammar import Grammars
from triton_models.llm.tokenizer import TextTokenizer


@pytest.fixture(scope="session")
def tokenizer() -> TextTokenizer:
    return TextTokenizer(llm_tiny.tokenizer_dir())


@pytest.fixture(scope="session")
def grammars(tokenizer) -> Grammars:
    return Grammars(tokenizer)


@pytest.fixture(scope="session")
def accepts(grammars, tokenizer):
    """accepts(kind, value, text): whether the engine's constraint lets the model write `text` and then end it
    (its EOS token)."""
    def check(kind: str, value, text: str) -> bool:
        constraint = grammars.constraint(grammars.compile(kind, value))
        try:
            for token in [*tokenizer.encode(text), min(tokenizer.eos_ids)]:
                constraint.consume(token)
        except Exception:  # noqa: BLE001 - llguidance refuses the token
            return False
        return constraint.complete

    return check
