"""Text tokenisation inside Triton, so any Triton client can send raw text (first step of an ensemble)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"
# Tensor names, checked against the generated config.pbtxt by tests/contract.
INPUT = "text_input"
OUTPUTS = ("input_ids", "attention_mask", "num_input_tokens")


class InputTooLong(ValueError):
    """An input has more tokens than the model accepts."""

    def __init__(self, index: int, length: int, limit: int):
        super().__init__(
            f"This model's maximum context length is {limit} tokens, but input {index} has {length} tokens"
        )
        self.index, self.length, self.limit = index, length, limit


@dataclass
class Encoded:
    input_ids: np.ndarray  # int64 [n, longest], right-padded
    attention_mask: np.ndarray  # int64 [n, longest]
    lengths: np.ndarray  # int32 [n], tokens per input including special tokens


class TextTokenizer:
    """A Hugging Face fast tokenizer (tokenizer.json), padding to the longest input, refusing over-long inputs."""

    def __init__(self, folder: Path, max_length: int):
        folder = Path(folder)
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.max_length = max_length
        self.pad_id = _pad_id(folder, self.tokenizer)

    def encode(self, texts: list[str]) -> Encoded:
        encodings = self.tokenizer.encode_batch(texts)
        lengths = np.array([len(e.ids) for e in encodings], dtype=np.int32)
        for index, length in enumerate(lengths):
            if length > self.max_length:
                raise InputTooLong(index, int(length), self.max_length)
        longest = int(lengths.max(initial=0))
        input_ids = np.full((len(texts), longest), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(texts), longest), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            input_ids[row, : len(encoding.ids)] = encoding.ids
            attention_mask[row, : len(encoding.ids)] = 1
        return Encoded(input_ids, attention_mask, lengths)


def _pad_id(folder: Path, tokenizer: Tokenizer) -> int:
    config = folder / "tokenizer_config.json"
    pad = json.loads(config.read_text()).get("pad_token") if config.exists() else None
    if isinstance(pad, dict):  # older configs store AddedToken dicts
        pad = pad.get("content")
    pad_id = tokenizer.token_to_id(pad) if pad else None
    return 0 if pad_id is None else pad_id


class TritonPythonModel:
    """Triton model: `text_input` (STRING [-1]) -> `input_ids`, `attention_mask`, `num_input_tokens`."""

    def initialize(self, args):
        import triton_python_backend_utils as pb_utils  # noqa: PLC0415 - only exists inside Triton

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        max_length = int(config["parameters"]["max_input_tokens"]["string_value"])
        folder = Path(args["model_repository"]) / args["model_version"]
        self.tokenizer = TextTokenizer(folder, max_length)

    def execute(self, requests):
        pb = self.pb
        responses = []
        for request in requests:
            raw = pb.get_input_tensor_by_name(request, INPUT).as_numpy().reshape(-1)
            try:
                texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in raw]
                encoded = self.tokenizer.encode(texts)
            except (InputTooLong, UnicodeDecodeError) as exc:
                responses.append(pb.InferenceResponse(error=pb.TritonError(str(exc), pb.TritonError.INVALID_ARG)))
                continue
            arrays = (encoded.input_ids, encoded.attention_mask, encoded.lengths)
            responses.append(pb.InferenceResponse(output_tensors=[pb.Tensor(n, a) for n, a in zip(OUTPUTS, arrays)]))
        return responses
