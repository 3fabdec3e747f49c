import pytest

from export_scripts import common


def test_digest_changes_with_content_and_options(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"a")
    first = common.export_digest([f], {"x": 1})
    assert first == common.export_digest([f], {"x": 1})
    assert first != common.export_digest([f], {"x": 2})
    f.write_bytes(b"b")
    assert first != common.export_digest([f], {"x": 1})


def test_stamps(tmp_path):
    dirs = [tmp_path / "a", tmp_path / "b"]
    assert not common.is_current(dirs, "d1")
    for d in dirs:
        d.mkdir()
    common.write_stamp(dirs, "d1", {"note": 1})
    assert common.is_current(dirs, "d1") and not common.is_current(dirs, "d2")
    (dirs[1] / common.STAMP).write_text("not json")
    assert not common.is_current(dirs, "d1")


def test_config_round_trip_and_validation(tmp_path):
    config = {"name": "m", "backend": "onnxruntime", "max_batch_size": 4,
              "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [3]}],
              "parameters": common.parameters(openai_task="embeddings", dim=3)}
    path = common.write_config(tmp_path / "m", config)
    parsed = common.read_config(path)
    assert parsed.name == "m" and parsed.max_batch_size == 4
    assert parsed.parameters["dim"].string_value == "3"
    with pytest.raises(Exception):
        common.write_config(tmp_path / "bad", {"name": "m", "no_such_field": 1})


def test_python_shim_imports_the_module(tmp_path):
    path = common.write_python_shim(tmp_path / "1", "triton_models.tokenizer")
    text = path.read_text()
    assert "from triton_models.tokenizer import TritonPythonModel" in text
    assert "MODELGATE_PYTHONPATH" in text
    compile(text, str(path), "exec")


@pytest.mark.parametrize("chosen, template, expected", [
    ("auto", "{{ '<tool_call>' }}{{ tools }}", "hermes"),
    ("auto", "{% if m.role == 'ipython' %}{% endif %}{{ '\"parameters\": ' }}{{ tools }}", "llama3_json"),
    ("auto", "<|python_tag|>{{ tools }}", "llama3_json"),
    ("auto", "{{ messages }}", "hermes"),  # no tool support: the generic format, Hermes by default
    ("llama3_json", "{{ '<tool_call>' }}", "llama3_json"),  # the operator's choice wins
])
def test_tool_call_parser_follows_the_template_unless_chosen(chosen, template, expected):
    assert common.tool_call_parser(chosen, template) == expected
