"""The cross-encoder export (export_scripts/rerank.py) and the tokenizer model's pair mode it relies on."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from export_scripts import rerank
from export_scripts.common import ExportError, read_config
from export_scripts.embeddings import default_model_path
from triton_models.tokenizer import TextTokenizer

QUERY = "What is the capital of France?"
DOCS = ["Paris is the capital of France.", "word " * 40, "hi"]


def args(tmp_path, **overrides):
    values = {"repository": tmp_path, "force": False, "model": None, "name": None, "max_batch": 8, "threads": 1,
              "opset": 17}
    return argparse.Namespace(**{**values, **overrides})


@pytest.fixture(scope="module")
def hf_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(default_model_path()))


@pytest.mark.parametrize("max_length", [512, 16])  # 16: the long pairs are cut, longest side first
def test_pairs_tokenise_as_transformers_does(hf_tokenizer, max_length):
    queries = [QUERY, QUERY, "a much longer query " * 5]
    encoded = TextTokenizer(default_model_path(), max_length).encode_pairs(queries, DOCS)
    expected = hf_tokenizer(queries, DOCS, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    np.testing.assert_array_equal(encoded.input_ids, expected["input_ids"])
    np.testing.assert_array_equal(encoded.token_type_ids, expected["token_type_ids"])
    np.testing.assert_array_equal(encoded.attention_mask, expected["attention_mask"])
    assert encoded.lengths.tolist() == expected["attention_mask"].sum(1).tolist()
    assert encoded.lengths.max() <= max_length and encoded.token_type_ids.max() == 1


def test_single_texts_have_no_second_segment():
    encoded = TextTokenizer(default_model_path(), 64).encode(["one text", "another one here"])
    assert not encoded.token_type_ids.any() and encoded.token_type_ids.shape == encoded.input_ids.shape


def test_export_writes_three_models_with_parity_and_skips_when_current(tmp_path):
    assert rerank.run(args(tmp_path)) == [rerank.TINY_NAME]
    ensemble = read_config(tmp_path / rerank.TINY_NAME / "config.pbtxt")
    assert ensemble.parameters["openai_task"].string_value == "rerank"
    assert ensemble.parameters["max_input_tokens"].string_value == "512"
    assert ensemble.parameters["max_inputs_per_request"].string_value == "8"
    encoder = read_config(tmp_path / f"{rerank.TINY_NAME}_encoder" / "config.pbtxt")
    assert [i.name for i in encoder.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert encoder.max_batch_size == 8 and encoder.response_cache.enable
    stamp = json.loads((tmp_path / rerank.TINY_NAME / ".export.json").read_text())
    assert stamp["parity_max_error"] <= rerank.MAX_SCORE_ERROR
    onnx_file = tmp_path / f"{rerank.TINY_NAME}_encoder" / "1" / "model.onnx"
    mtime = onnx_file.stat().st_mtime_ns
    rerank.run(args(tmp_path))
    assert onnx_file.stat().st_mtime_ns == mtime  # up to date: nothing rewritten


def test_the_tiny_model_is_the_same_every_time():
    _, first = rerank.tiny_model()
    _, second = rerank.tiny_model()
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert np.array_equal(a.numpy(), b.numpy()), name


def test_failed_parity_fails_the_export(tmp_path, monkeypatch):
    monkeypatch.setattr(rerank, "MAX_SCORE_ERROR", -1.0)
    with pytest.raises(ExportError, match="differ from transformers"):
        rerank.run(args(tmp_path, name="strict"))


def test_models_with_other_than_one_label_are_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(rerank.TINY_CONFIG, "num_labels", 2)
    with pytest.raises(ExportError, match="2 labels"):
        rerank.run(args(tmp_path, name="two-labels"))


def test_token_types_only_for_models_that_have_them():
    from transformers import BertConfig, BertForSequenceClassification

    tiny = {**rerank.TINY_CONFIG, "vocab_size": 100}
    assert rerank.token_inputs(BertForSequenceClassification(BertConfig(**tiny))) == (
        "input_ids", "attention_mask", "token_type_ids")
    one_type = BertForSequenceClassification(BertConfig(**tiny, type_vocab_size=1))  # as XLM-RoBERTa
    assert rerank.token_inputs(one_type) == ("input_ids", "attention_mask")
