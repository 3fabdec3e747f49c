"""The tokenizer entry points inside a model (triton_models/tokenize.py), against a stand-in for Triton's
pb_utils and SmolLM2's real tokenizer (tests/unit/conftest.py); the engine's own encoding rule."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from tokenizers.processors import TemplateProcessing
from transformers import AutoTokenizer

from tests.integration import llm_tiny
from triton_models import contract, tokenize
from triton_models.contract import ModelError
from triton_models.llava.prompt import ImagePrompt
from triton_models.llm.tokenizer import TextTokenizer


class Tensor:
    def __init__(self, name: str, array: np.ndarray):
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


def request(**inputs) -> dict:
    return {name: Tensor(name, np.asarray(value)) for name, value in inputs.items()}


pb = SimpleNamespace(Tensor=Tensor, get_input_tensor_by_name=lambda req, name: req.get(name))


def outputs(tensors: list[Tensor]) -> dict:
    return {t.name: t.array for t in tensors}


class Config:
    """Triton's auto-complete config object, as far as add_tensors uses it."""

    def __init__(self, inputs: list[str], outputs: list[str]):
        self.config = {"input": [{"name": n} for n in inputs], "output": [{"name": n} for n in outputs]}

    def as_dict(self) -> dict:
        return self.config

    def add_input(self, spec):
        assert spec["name"] not in {t["name"] for t in self.config["input"]}, "Triton refuses a second input"
        self.config["input"].append(spec)

    def add_output(self, spec):
        assert spec["name"] not in {t["name"] for t in self.config["output"]}, "Triton refuses a second output"
        self.config["output"].append(spec)


def test_tensors_are_added_where_the_config_lacks_them():
    config = tokenize.add_tensors(Config(["text_input", "stream"], ["text_output", "finish_reason"]))
    names = {t["name"]: t for t in config.as_dict()["input"] + config.as_dict()["output"]}
    assert {contract.TOKENIZE, contract.ADD_SPECIAL_TOKENS, contract.DETOKENIZE, contract.TOKEN_IDS,
            contract.TOKEN_STRS} <= set(names)
    assert "dims" not in names["text_output"]  # the chat model's own text_output is kept as it is
    assert all(names[n]["optional"] for n in (contract.TOKENIZE, contract.ADD_SPECIAL_TOKENS, contract.DETOKENIZE))
    tokenize.add_tensors(config)  # a second load adds nothing


@pytest.mark.parametrize(("inputs", "entry"), [
    ({"text_input": [b"hi"]}, False),
    ({"text_input": [b"hi"], contract.TOKENIZE: [False]}, False),
    ({"text_input": [b"hi"], contract.TOKENIZE: [True]}, True),
    ({"text_input": [b""], contract.DETOKENIZE: [1, 2]}, True),
])
def test_entry_requests_are_recognised(inputs, entry):
    assert tokenize.is_entry_request(pb, request(**inputs)) is entry


def test_tokenize_answers_the_engines_ids_and_vocabulary_entries(tokenizer):
    text = "<|im_start|>user\nHello world<|im_end|>\n"
    answer = outputs(tokenize.answer(pb, request(text_input=[text.encode()], tokenize=[True]),
                                     tokenizer.tokenizer, tokenizer.encode))
    ids = answer[contract.TOKEN_IDS].tolist()
    assert ids == tokenizer.encode(text) and answer[contract.TOKEN_IDS].dtype == np.int64
    hf = AutoTokenizer.from_pretrained(str(llm_tiny.tokenizer_dir()))
    assert [s.decode() for s in answer[contract.TOKEN_STRS]] == hf.convert_ids_to_tokens(ids)


def test_add_special_tokens_is_passed_to_the_encoder():
    seen = []

    def encode(text, special):
        seen.append((text, special))
        return [1]

    tokenizer = SimpleNamespace(id_to_token=lambda i: "x")
    tokenize.answer(pb, request(text_input=[b"a"], tokenize=[True]), tokenizer, encode)
    tokenize.answer(pb, request(text_input=[b"a"], tokenize=[True], add_special_tokens=[False]), tokenizer, encode)
    assert seen == [("a", None), ("a", False)]


def test_detokenize_keeps_special_tokens_as_transformers_decode(tokenizer):
    text = "<|im_start|>user\nCaf\u00e9 \U0001F600<|im_end|>"
    ids = tokenizer.encode(text)
    answer = outputs(tokenize.answer(pb, request(text_input=[b""], detokenize=np.array(ids, np.int64)),
                                     tokenizer.tokenizer, tokenizer.encode))
    assert answer[contract.DETOKENIZED][0].decode() == text
    hf = AutoTokenizer.from_pretrained(str(llm_tiny.tokenizer_dir()))
    assert answer[contract.DETOKENIZED][0].decode() == hf.decode(ids)


@pytest.mark.parametrize("bad", [-1, 49152, 2**40])
def test_ids_outside_the_vocabulary_are_the_clients_error(tokenizer, bad):
    with pytest.raises(ModelError) as error:
        tokenize.detokenize(tokenizer.tokenizer, np.array([1, bad], np.int64))
    assert error.value.code == contract.INVALID_TOKEN_IDS and error.value.param == "tokens"
    assert str(bad) in error.value.message and str(tokenizer.tokenizer.get_vocab_size() - 1) in error.value.message


def test_one_text_per_tokenize_request(tokenizer):
    with pytest.raises(ModelError, match="one text"):
        tokenize.answer(pb, request(text_input=[b"a", b"b"], tokenize=[True]), tokenizer.tokenizer, tokenizer.encode)


def test_the_engines_rule_no_second_bos_unless_forced(tmp_path):
    vocab = {"[UNK]": 0, "<s>": 1, "hello": 2}
    words = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    words.pre_tokenizer = Whitespace()
    words.add_special_tokens(["<s>"])
    words.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    words.save(str(tmp_path / "tokenizer.json"))
    engine = TextTokenizer(tmp_path, bos_token="<s>")
    assert engine.encode("hello") == [1, 2]  # a plain prompt gets the tokenizer's BOS
    assert engine.encode("<s> hello") == [1, 2]  # a rendered template already starts with it
    assert engine.encode("<s> hello", True) == [1, 1, 2] and engine.encode("hello", False) == [2]  # /tokenize


def test_a_vision_prompt_counts_each_image_as_its_tokens(tmp_path):
    words = Tokenizer(WordLevel({"[UNK]": 0, "describe": 1, "this": 2}, unk_token="[UNK]"))
    words.pre_tokenizer = Whitespace()
    words.add_special_tokens(["<image>"])
    words.save(str(tmp_path / "tokenizer.json"))
    prompts = ImagePrompt(TextTokenizer(tmp_path), "<image>", 3, 4)
    prompt = "describe <image> this <image>"
    ids, _ = prompts.build(prompt, np.zeros((2, 4, 2), np.float32))  # what the engine gets with two images
    assert prompts.token_ids(prompt) == ids == [1, 3, 3, 3, 3, 2, 3, 3, 3, 3]
