"""Every cross-encoder in the repository speaks what frontend/services/rerank.py sends and reads."""

from __future__ import annotations

from export_scripts.common import read_config
from frontend.services import rerank as rerank_service
from launcher.repository import model_names
from triton_models import tokenizer
from triton_models.contract import CROSS_ENCODER, SCORING


def cross_encoders(repository):
    configs = {name: read_config(repository / name / "config.pbtxt") for name in model_names(repository)}
    served = [(name, c) for name, c in configs.items() if "openai_task" in c.parameters
              and SCORING.get(c.parameters["openai_task"].string_value) == CROSS_ENCODER]
    return configs, served


def test_cross_encoders_speak_what_the_frontend_sends(repository):
    configs, served = cross_encoders(repository)
    assert served, "no cross-encoder exported (python -m export_scripts rerank)"
    for name, config in served:
        assert [t.name for t in config.input] == [rerank_service.TEXT_INPUT, rerank_service.PAIR_INPUT], name
        assert {t.name for t in config.output} == {rerank_service.SCORE, rerank_service.NUM_TOKENS}, name
        assert int(config.parameters["max_input_tokens"].string_value) > 0
        chunk = int(config.parameters["max_inputs_per_request"].string_value)
        steps = config.ensemble_scheduling.step
        assert configs[steps[0].model_name].parameters["max_input_tokens"] == config.parameters["max_input_tokens"]
        assert [t.name for t in configs[steps[0].model_name].input] == list(tokenizer.PAIR_INPUTS)
        encoder = configs[steps[-1].model_name]
        assert encoder.backend == "onnxruntime" and encoder.max_batch_size >= chunk, name
        assert [t.name for t in encoder.output] == [rerank_service.SCORE] and list(encoder.output[0].dims) == [1]
