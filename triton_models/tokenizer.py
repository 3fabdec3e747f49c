"""Text tokenisation inside Triton, so any Triton client can send raw text (first step of an ensemble).

One text per row (embeddings), or with `text_pair` a (text, text_pair) pair per row (cross-encoders): the
tokenizer's own pair template, `token_type_ids`, and each pair cut to the context longest-first as
transformers' `truncation=True` does, instead of being refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from triton_models import tokenize
from triton_models.contract import CONTEXT_LENGTH_EXCEEDED, INVALID_REQUEST, ModelError
from triton_models.errors import error_response

TOKENIZER_FILE = "tokenizer.json"
# Tensor names, checked against the generated config.pbtxt by tests/contract.
INPUT = "text_input"
TRUNCATE_INPUT = "truncate_prompt_tokens"  # optional INT32 [1]: keep each text's last k tokens (vLLM's side)
INPUTS = (INPUT, TRUNCATE_INPUT)
OUTPUTS = ("input_ids", "attention_mask", "num_input_tokens")
PAIR_INPUT = "text_pair"  # STRING [-1]: the second text of each row's pair
PAIR_INPUTS = (INPUT, PAIR_INPUT)
PAIR_OUTPUTS = ("input_ids", "attention_mask", "token_type_ids", "num_input_tokens")


class InputTooLong(ModelError, ValueError):
    """An input has more tokens than the model accepts (CONTEXT_LENGTH_EXCEEDED; the frontend names `input`)."""

    def __init__(self, index: int, length: int, limit: int):
        super().__init__(
            CONTEXT_LENGTH_EXCEEDED,
            f"This model's maximum context length is {limit} tokens, but input {index} has {length} tokens",
        )
        self.index, self.length, self.limit = index, length, limit


@dataclass
class Encoded:
    input_ids: np.ndarray  # int64 [n, longest], right-padded
    attention_mask: np.ndarray  # int64 [n, longest]
    lengths: np.ndarray  # int32 [n], tokens per input including special tokens
    token_type_ids: np.ndarray  # int64 [n, longest]: 1 on a pair's second text, 0 elsewhere


class TextTokenizer:
    """A Hugging Face fast tokenizer (tokenizer.json), padding to the longest input, refusing over-long inputs."""

    def __init__(self, folder: Path, max_length: int):
        folder = Path(folder)
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.max_length = max_length
        self.pad_id = _pad_id(folder, self.tokenizer)

    def encode(self, texts: list[str], keep: int | None = None) -> Encoded:
        """Token ids of `texts`; with `keep`, each text longer than that keeps its last `keep` tokens, special
        tokens included (vLLM's `truncate_prompt_tokens`, from the left), instead of being refused."""
        if keep is not None:
            # Never fewer than the special tokens: the tokenizers library would silently not truncate.
            keep = max(int(keep), self.tokenizer.num_special_tokens_to_add(False))
            self.tokenizer.enable_truncation(keep, direction="left")
        try:
            encodings = self.tokenizer.encode_batch(texts)
        finally:
            self.tokenizer.no_truncation()
        for index, encoding in enumerate(encodings):
            if len(encoding.ids) > self.max_length:
                raise InputTooLong(index, len(encoding.ids), self.max_length)
        return self._padded(encodings)

    def encode_pairs(self, texts: list[str], pairs: list[str]) -> Encoded:
        """Token ids of each (text, pair) through the tokenizer's pair template, cut longest-first to the
        context (transformers' `truncation=True`, what cross-encoders are trained and served with)."""
        self.tokenizer.enable_truncation(self.max_length, strategy="longest_first")
        try:
            return self._padded(self.tokenizer.encode_batch(list(zip(texts, pairs))))
        finally:
            self.tokenizer.no_truncation()

    def _padded(self, encodings) -> Encoded:
        lengths = np.array([len(e.ids) for e in encodings], dtype=np.int32)
        shape = (len(encodings), int(lengths.max(initial=0)))
        input_ids = np.full(shape, self.pad_id, dtype=np.int64)
        attention_mask = np.zeros(shape, dtype=np.int64)
        token_type_ids = np.zeros(shape, dtype=np.int64)
        for row, encoding in enumerate(encodings):
            input_ids[row, : len(encoding.ids)] = encoding.ids
            attention_mask[row, : len(encoding.ids)] = 1
            token_type_ids[row, : len(encoding.ids)] = encoding.type_ids
        return Encoded(input_ids, attention_mask, lengths, token_type_ids)


def _text(value, index: int) -> str:
    try:
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError as exc:
        raise ModelError(INVALID_REQUEST, f"input {index} is not valid UTF-8 (byte {exc.start})", "input") from exc


def _pad_id(folder: Path, tokenizer: Tokenizer) -> int:
    config = folder / "tokenizer_config.json"
    pad = json.loads(config.read_text()).get("pad_token") if config.exists() else None
    if isinstance(pad, dict):  # older configs store AddedToken dicts
        pad = pad.get("content")
    pad_id = tokenizer.token_to_id(pad) if pad else None
    return 0 if pad_id is None else pad_id


class TritonPythonModel:
    """Triton model: `text_input` (STRING [-1]) -> `input_ids`, `attention_mask`, `num_input_tokens`; with
    `text_pair` (PAIR_INPUTS), pairs -> PAIR_OUTPUTS. It sends the outputs its config declares."""

    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        return tokenize.add_tensors(auto_complete_model_config)  # its embeddings model's /tokenize, /detokenize

    def initialize(self, args):
        import triton_python_backend_utils as pb_utils  # noqa: PLC0415 - only exists inside Triton

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        max_length = int(config["parameters"]["max_input_tokens"]["string_value"])
        folder = Path(args["model_repository"]) / args["model_version"]
        self.tokenizer = TextTokenizer(folder, max_length)
        # The entry points' outputs (triton_models/tokenize.py) are answered apart.
        self.outputs = [o["name"] for o in config["output"] if o["name"] in PAIR_OUTPUTS]

    def execute(self, requests):
        pb = self.pb
        responses = []
        for request in requests:
            if tokenize.is_entry_request(pb, request):
                responses.append(self._entry(request))
                continue
            raw = pb.get_input_tensor_by_name(request, INPUT).as_numpy().reshape(-1)
            try:
                texts = [_text(t, i) for i, t in enumerate(raw)]
                pair = pb.get_input_tensor_by_name(request, PAIR_INPUT)
                if pair is not None:
                    encoded = self.tokenizer.encode_pairs(texts, _pairs(pair.as_numpy().reshape(-1), len(texts)))
                else:
                    truncate = pb.get_input_tensor_by_name(request, TRUNCATE_INPUT)
                    keep = int(truncate.as_numpy().reshape(-1)[0]) if truncate is not None else None
                    encoded = self.tokenizer.encode(texts, keep)
            except ModelError as exc:
                responses.append(error_response(exc))
                continue
            arrays = {"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask,
                      "token_type_ids": encoded.token_type_ids, "num_input_tokens": encoded.lengths}
            responses.append(pb.InferenceResponse(output_tensors=[pb.Tensor(n, arrays[n]) for n in self.outputs]))
        return responses

    def _entry(self, request):
        """A /tokenize or /detokenize request: ids as the ensemble's step tokenizes a text (special tokens on
        unless asked otherwise), or the text of ids."""
        tokenizer = self.tokenizer.tokenizer

        def encode(text: str, special: bool | None) -> list[int]:
            return tokenizer.encode(text, add_special_tokens=special is not False).ids

        try:
            tensors = tokenize.answer(self.pb, request, tokenizer, encode)
        except ModelError as exc:
            return error_response(exc)
        return self.pb.InferenceResponse(output_tensors=tensors)


def _pairs(raw, count: int) -> list[str]:
    if len(raw) != count:
        raise ModelError(INVALID_REQUEST, f"{PAIR_INPUT} has {len(raw)} texts, {INPUT} has {count}: one pair per row",
                         PAIR_INPUT)
    return [_text(t, i) for i, t in enumerate(raw)]
