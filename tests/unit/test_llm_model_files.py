"""Config values naming model files (`model_file`, `embeddings_file`, `default_model_filename`) stay plain
file names inside the version folder: a load-time override cannot point a model at another path."""

from __future__ import annotations

from pathlib import Path

import pytest

from triton_models import UnsafeConfigValue, version_file


@pytest.mark.parametrize("name", ["model_q4.onnx", "embeddings.npy", "model..onnx", ".hidden", "m o d e l"])
def test_plain_names_are_files_of_the_version_folder(tmp_path, name):
    assert version_file(tmp_path, name, "model_file") == tmp_path / name


@pytest.mark.parametrize("name", [
    "/etc/passwd", "../../etc/passwd", "..", ".", "", "sub/model.onnx", "..\\model.onnx", "C:\\model.onnx",
    "model.onnx\0.txt",
])
def test_paths_are_refused_naming_the_key(tmp_path, name):
    with pytest.raises(UnsafeConfigValue, match="config parameter embeddings_file must be a file name"):
        version_file(tmp_path, name, "embeddings_file")


def test_the_refusal_is_a_value_error_triton_reports_as_the_load_failure():
    # initialize lets it propagate; Triton turns any exception from initialize into the failed load's message.
    assert issubclass(UnsafeConfigValue, ValueError)
    with pytest.raises(ValueError, match="'/etc/passwd'"):
        version_file(Path("/models/tiny-llm/1"), "/etc/passwd", "model_file")
