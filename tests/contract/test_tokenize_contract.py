"""The tokenizer entry points (/tokenize, /detokenize) reach a tokenizer for every text model the repository
serves: an embeddings ensemble names its tokenizer step, and the models that answer them add the entry
points' tensors at load (their exported configs, written before, need not declare them)."""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc

from export_scripts.common import read_config
from launcher.repository import model_names
from triton_models import contract, tokenize


def test_embeddings_ensembles_name_their_tokenizer_step(repository):
    configs = {name: read_config(repository / name / "config.pbtxt") for name in model_names(repository)}
    embeddings = [c for c in configs.values() if c.parameters.get("openai_task") is not None
                  and c.parameters["openai_task"].string_value == "embeddings"]
    assert embeddings
    for config in embeddings:
        tokenizer = config.parameters[contract.TOKENIZER_MODEL].string_value
        assert tokenizer == config.ensemble_scheduling.step[0].model_name  # the step that tokenizes its text
        assert "triton_models.tokenizer" in (repository / tokenizer / "1" / "model.py").read_text()


def test_the_entry_tensors_are_optional_and_new_to_every_model(repository):
    entry_inputs = {t["name"] for t in tokenize.INPUTS}
    assert all(t["optional"] for t in tokenize.INPUTS)
    for name in model_names(repository):
        config = read_config(repository / name / "config.pbtxt")
        assert not entry_inputs & {t.name for t in config.input}, name  # never one of a model's own inputs
        for output in config.output:  # the chat models' text_output carries the detokenized text as declared
            if output.name == contract.DETOKENIZED:
                assert output.data_type == mc.TYPE_STRING and list(output.dims) == [-1], name
