"""What is in a model repository folder, read from the config.pbtxt files themselves."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc


def model_names(repository: Path) -> list[str]:
    """Every model folder (one holding a config.pbtxt), sorted."""
    return sorted(p.parent.name for p in Path(repository).glob("*/config.pbtxt"))


def served_models(repository: Path) -> list[str]:
    """Models whose config declares an `openai_task`: what the frontend serves."""
    served = []
    for name in model_names(repository):
        config = text_format.Parse((Path(repository) / name / "config.pbtxt").read_text(), mc.ModelConfig())
        if config.parameters.get("openai_task") and config.parameters["openai_task"].string_value:
            served.append(name)
    return served
