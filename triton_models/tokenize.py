"""The tokenizer entry points of a text model (the frontend's /tokenize and /detokenize), answered with the
model's own tokenizer, so a count is exactly the engine's.

A chat model answers them itself (triton_models/llm/model.py, llava), an embeddings model through its
tokenizer step (triton_models/tokenizer.py). Tensor names are declared in triton_models.contract; `add_tensors`
puts them into a model's config at load (`auto_complete_config`), so a repository exported before them
serves them too.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tokenizers import Tokenizer

from triton_models import contract
from triton_models.contract import INVALID_REQUEST, INVALID_TOKEN_IDS, ModelError

INPUTS = (
    {"name": contract.TOKENIZE, "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
    {"name": contract.ADD_SPECIAL_TOKENS, "data_type": "TYPE_BOOL", "dims": [1], "optional": True},
    {"name": contract.DETOKENIZE, "data_type": "TYPE_INT64", "dims": [-1], "optional": True},
)
OUTPUTS = (
    {"name": contract.TOKEN_IDS, "data_type": "TYPE_INT64", "dims": [-1]},
    {"name": contract.TOKEN_STRS, "data_type": "TYPE_STRING", "dims": [-1]},
    {"name": contract.DETOKENIZED, "data_type": "TYPE_STRING", "dims": [-1]},  # the chat model's text_output
)
TEXT_INPUT = "text_input"

# text, add_special_tokens (None: the model's own rule) -> the ids the model's engine would see
Encode = Callable[[str, "bool | None"], list[int]]


def add_missing_tensors(auto_complete_model_config, inputs, outputs):
    """`inputs` and `outputs` (tensor specs), added to a model's config where it does not declare them."""
    config = auto_complete_model_config.as_dict()
    have_inputs = {t["name"] for t in config["input"]}
    have_outputs = {t["name"] for t in config["output"]}
    for spec in inputs:
        if spec["name"] not in have_inputs:
            auto_complete_model_config.add_input(spec)
    for spec in outputs:
        if spec["name"] not in have_outputs:
            auto_complete_model_config.add_output(spec)
    return auto_complete_model_config


def add_tensors(auto_complete_model_config):
    """The entry points' inputs and outputs, added to a model's config where it does not declare them."""
    return add_missing_tensors(auto_complete_model_config, INPUTS, OUTPUTS)


def is_entry_request(pb, request) -> bool:
    """A /tokenize or /detokenize request, answered by `answer` instead of the model's own work."""
    tokenize = pb.get_input_tensor_by_name(request, contract.TOKENIZE)
    return pb.get_input_tensor_by_name(request, contract.DETOKENIZE) is not None or (
        tokenize is not None and bool(tokenize.as_numpy().reshape(-1)[:1].any()))


def answer(pb, request, tokenizer: Tokenizer, encode: Encode) -> list:
    """The output tensors of an entry request: the text of DETOKENIZE's ids, or the ids and their vocabulary
    entries of `text_input` as `encode` tokenizes it. Raises ModelError for the client."""
    ids = pb.get_input_tensor_by_name(request, contract.DETOKENIZE)
    if ids is not None:
        text = detokenize(tokenizer, ids.as_numpy().reshape(-1))
        return [pb.Tensor(contract.DETOKENIZED, _strings([text]))]
    texts = pb.get_input_tensor_by_name(request, TEXT_INPUT).as_numpy().reshape(-1)
    if len(texts) != 1:
        raise ModelError(INVALID_REQUEST, f"{contract.TOKENIZE} takes one text, got {len(texts)}", "prompt")
    special = pb.get_input_tensor_by_name(request, contract.ADD_SPECIAL_TOKENS)
    token_ids = encode(_text(texts[0]), bool(special.as_numpy().reshape(-1)[0]) if special is not None else None)
    return [pb.Tensor(contract.TOKEN_IDS, np.array(token_ids, dtype=np.int64)),
            pb.Tensor(contract.TOKEN_STRS, _strings(token_strings(tokenizer, token_ids)))]


def token_strings(tokenizer: Tokenizer, ids: list[int]) -> list[str]:
    """Each id's vocabulary entry (`Ġhello`, `[CLS]`), as transformers' convert_ids_to_tokens gives them."""
    return [tokenizer.id_to_token(int(i)) or "" for i in ids]


def detokenize(tokenizer: Tokenizer, ids: np.ndarray) -> str:
    """The text of `ids`, special tokens kept (transformers' `decode` default, which vLLM's /detokenize uses);
    an id outside the vocabulary is the client's INVALID_TOKEN_IDS, never an index error."""
    vocab = tokenizer.get_vocab_size()
    bad = next((int(i) for i in ids if not 0 <= int(i) < vocab), None)
    if bad is not None:
        raise ModelError(INVALID_TOKEN_IDS, f"tokens holds token id {bad}, outside this model's vocabulary: valid "
                                            f"token ids are 0 to {vocab - 1}", "tokens")
    return tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)


def _text(value) -> str:
    try:
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError as exc:
        raise ModelError(INVALID_REQUEST, f"the text is not valid UTF-8 (byte {exc.start})", "prompt") from exc


def _strings(values: list[str]) -> np.ndarray:
    return np.array([v.encode("utf-8") for v in values], dtype=np.object_)
