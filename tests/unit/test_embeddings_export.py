import argparse
import json

import pytest

from export_scripts import embeddings
from export_scripts.common import ExportError, read_config


def args(tmp_path, **overrides):
    values = {"repository": tmp_path, "force": False, "model": None, "name": None, "max_batch": 8,
              "threads": 1, "opset": 17}
    return argparse.Namespace(**{**values, **overrides})


def test_served_name():
    assert embeddings.served_name(None) == "all-minilm-l6-v2"
    assert embeddings.served_name("BAAI/bge-small-en-v1.5") == "bge-small-en-v1.5"
    assert embeddings.served_name("/models/My Model/") == "my-model"


def test_export_writes_three_models_and_skips_when_current(tmp_path):
    assert embeddings.run(args(tmp_path)) == ["all-minilm-l6-v2"]
    ensemble = read_config(tmp_path / "all-minilm-l6-v2" / "config.pbtxt")
    assert ensemble.parameters["openai_task"].string_value == "embeddings"
    assert ensemble.parameters["max_inputs_per_request"].string_value == "8"
    encoder = read_config(tmp_path / "all-minilm-l6-v2_encoder" / "config.pbtxt")
    assert encoder.response_cache.enable and encoder.max_batch_size == 8
    stamp = json.loads((tmp_path / "all-minilm-l6-v2" / ".export.json").read_text())
    assert stamp["parity_cosine"] >= embeddings.MIN_COSINE
    onnx_file = tmp_path / "all-minilm-l6-v2_encoder" / "1" / "model.onnx"
    mtime = onnx_file.stat().st_mtime_ns
    embeddings.run(args(tmp_path))
    assert onnx_file.stat().st_mtime_ns == mtime  # up to date: nothing rewritten
    embeddings.run(args(tmp_path, max_batch=4))
    assert read_config(tmp_path / "all-minilm-l6-v2_encoder" / "config.pbtxt").max_batch_size == 4


def test_failed_parity_fails_the_export(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "MIN_COSINE", 1.1)
    with pytest.raises(ExportError, match="cosine"):
        embeddings.run(args(tmp_path, name="strict"))
