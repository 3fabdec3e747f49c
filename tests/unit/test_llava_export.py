"""The LLaVA exporter from a model folder (the `--model` path taken for llava-hf ids and folders)."""

from __future__ import annotations

import json

import pytest

from export_scripts import llava
from export_scripts.__main__ import main as export_main
from export_scripts.common import STAMP, read_config


@pytest.fixture(scope="module")
def source_folder(tmp_path_factory):
    """tiny-llava-random saved as transformers saves any LLaVA checkpoint (processor + weights + configs)."""
    folder = tmp_path_factory.mktemp("My-Llava")
    processor, model = llava.tiny_model()
    processor.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def test_export_from_a_folder_is_named_after_it_and_stamped(source_folder, tmp_path):
    repository = tmp_path / "repo"
    assert export_main(["llava", f"--model={source_folder}", f"--repository={repository}", "--max-images=2"]) == 0
    name = source_folder.name.lower()
    assert sorted(p.name for p in repository.iterdir()) == [name, f"{name}_vision"]
    params = {k: v.string_value for k, v in read_config(repository / name / "config.pbtxt").parameters.items()}
    assert params["vision_model"] == f"{name}_vision" and params["max_images"] == "2"
    stamp = json.loads((repository / name / STAMP).read_text())
    assert stamp["parity_tokens"] == llava.PARITY_TOKENS and stamp["source"] == str(source_folder)
    before = (repository / name / "1" / llava.LM_FILE).stat().st_mtime_ns
    assert export_main(["llava", f"--model={source_folder}", f"--repository={repository}", "--max-images=2"]) == 0
    assert (repository / name / "1" / llava.LM_FILE).stat().st_mtime_ns == before  # up to date: skipped


def test_a_missing_folder_fails_the_export(tmp_path, capsys):
    assert export_main(["llava", f"--model={tmp_path / 'nope'}", f"--repository={tmp_path / 'repo'}"]) == 1
    assert "cannot load LLaVA model" in capsys.readouterr().err
    assert not (tmp_path / "repo" / "nope").exists()
