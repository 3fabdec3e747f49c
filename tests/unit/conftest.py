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
