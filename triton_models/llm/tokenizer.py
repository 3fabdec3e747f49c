"""The model's tokenizer (`tokenizer.json` through the `tokenizers` library) and its end-of-sequence ids."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

from triton_models.llm.detok import IncrementalDetokenizer


class TextTokenizer:
    """Encodes prompts, decodes tokens, and knows which token ids end a sequence."""

    def __init__(self, model_dir: Path, eos_token: str | None = None, bos_token: str | None = None):
        model_dir = Path(model_dir)
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        config = _read_json(model_dir / "tokenizer_config.json")
        self.bos_token = bos_token or _token_text(config.get("bos_token"))
        self.eos_ids = frozenset(self._eos_ids(model_dir, eos_token))

    def _eos_ids(self, model_dir: Path, eos_token: str | None) -> set[int]:
        ids: set[int] = set()
        for name in ("generation_config.json", "config.json"):
            value = _read_json(model_dir / name).get("eos_token_id")
            if value is not None:
                ids.update(value if isinstance(value, list) else [value])
                break
        config_eos = _token_text(_read_json(model_dir / "tokenizer_config.json").get("eos_token"))
        for token in (eos_token, config_eos):
            if token and self.tokenizer.token_to_id(token) is not None:
                ids.add(self.tokenizer.token_to_id(token))
        return ids

    def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        # A rendered chat template already starts with the BOS text; plain prompts get the tokenizer's own
        # special tokens (as vLLM does), so neither ends up with two BOS tokens. /tokenize may force them.
        if add_special_tokens is None:
            add_special_tokens = not (bool(self.bos_token) and text.startswith(self.bos_token))
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def detokenizer(self) -> IncrementalDetokenizer:
        return IncrementalDetokenizer(self.tokenizer)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _token_text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value
