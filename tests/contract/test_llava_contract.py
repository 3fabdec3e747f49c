"""The exported LLaVA folders match what triton_models/llava, the chat engine and the frontend rely on,
and the export's parity check refuses a pipeline that drifts from transformers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tokenizers import Tokenizer
from tritonclient.grpc import model_config_pb2 as mc

from export_scripts import llava
from export_scripts.__main__ import main as export_main
from export_scripts.common import ExportError, read_config
from tests.conftest import REPOSITORY
from tests.contract.test_llm_contract import INPUTS, OUTPUTS
from triton_models.llava.preprocess import ImageProcessor

NAME = llava.TINY_NAME


@pytest.fixture(scope="module")
def dirs() -> tuple[Path, Path]:
    assert export_main(["llava", f"--repository={REPOSITORY}"]) == 0, "llava export failed"
    return REPOSITORY / NAME, REPOSITORY / f"{NAME}_vision"


def params(config) -> dict[str, str]:
    return {k: v.string_value for k, v in config.parameters.items()}


def test_the_chat_contract_plus_the_image_input(dirs):
    config = read_config(dirs[0] / "config.pbtxt")
    assert config.backend == "python" and config.max_batch_size == 0
    assert config.model_transaction_policy.decoupled
    inputs = {i.name: (mc.DataType.Name(i.data_type), i.optional) for i in config.input}
    image = next(i for i in config.input if i.name == "image")
    assert inputs == {**INPUTS, "image": ("TYPE_STRING", True)} and list(image.dims) == [-1]
    assert {o.name: (mc.DataType.Name(o.data_type), list(o.dims)) for o in config.output} == OUTPUTS
    p = params(config)
    assert p["openai_task"] == "chat" and p["supports_images"] == "true" and int(p["max_images"]) >= 1
    assert p["vision_model"] == dirs[1].name
    assert (dirs[0] / "1" / "model.py").read_text().count("triton_models.llava.model") == 1


def test_image_tokens_agree_across_tokenizer_vision_model_and_processor(dirs):
    p = params(read_config(dirs[0] / "config.pbtxt"))
    tokenizer = Tokenizer.from_file(str(dirs[0] / "1" / "tokenizer.json"))
    assert tokenizer.token_to_id(p["image_token"]) == int(p["image_token_id"])
    vision = read_config(dirs[1] / "config.pbtxt")
    assert vision.backend == "onnxruntime" and vision.max_batch_size >= int(p["max_images"])
    (pixels,), (features,) = vision.input, vision.output
    assert (pixels.name, features.name) == ("pixel_values", "image_features")
    processor = ImageProcessor.from_folder(dirs[0] / "1")
    assert list(pixels.dims) == [3, *processor.output_size]
    table = np.load(dirs[0] / "1" / p["embeddings_file"], mmap_mode="r")
    assert list(features.dims) == [int(p["image_seq_length"]), table.shape[1]]
    assert table.shape[0] == json.loads((dirs[0] / "1" / "config.json").read_text())["text_config"]["vocab_size"]


def test_the_language_model_takes_inputs_embeds_with_a_kv_cache(dirs):
    graph = onnx.load(str(dirs[0] / "1" / llava.LM_FILE), load_external_data=False).graph
    names = [i.name for i in graph.input]
    assert names[:4] == ["inputs_embeds", "attention_mask", "position_ids", "logits_index"]
    assert all(n.startswith("past_key_values.") for n in names[4:]) and len(names[4:]) % 2 == 0
    assert graph.output[0].name == "logits"


@pytest.fixture(scope="module")
def source():
    return llava.tiny_model()


def test_parity_refuses_a_language_model_that_drifts(dirs, source):
    processor, model = source
    with torch.no_grad():
        model.lm_head.weight.add_(torch.randn_like(model.lm_head.weight))  # PyTorch no longer matches the files
    try:
        with pytest.raises(ExportError, match="greedy tokens"):
            llava.check_parity(processor, model, dirs[0] / "1", dirs[1] / "1" / llava.VISION_FILE, threads=1)
    finally:
        source_again = llava.tiny_model()
        model.load_state_dict(source_again[1].state_dict())
    info = llava.check_parity(processor, model, dirs[0] / "1", dirs[1] / "1" / llava.VISION_FILE, threads=1)
    assert info["parity_tokens"] == llava.PARITY_TOKENS


def test_parity_refuses_preprocessing_that_differs(dirs, source, tmp_path):
    processor, model = source
    for f in (dirs[0] / "1").iterdir():
        (tmp_path / f.name).symlink_to(f)
    (tmp_path / "processor_config.json").unlink()
    config = json.loads((dirs[0] / "1" / "processor_config.json").read_text())
    config["image_processor"]["image_mean"] = [0.5, 0.5, 0.5]
    (tmp_path / "processor_config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="preprocessing differs"):
        llava.check_parity(processor, model, tmp_path, dirs[1] / "1" / llava.VISION_FILE, threads=1)
