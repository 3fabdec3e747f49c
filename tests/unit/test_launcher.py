import socket
from pathlib import Path

import pytest

from launcher import __main__ as cli
from launcher.repository import model_names, served_models
from launcher.triton import LaunchError, TritonServer, build_backend_dir, port_in_use


def test_missing_repository_and_model_are_one_line_errors(tmp_path):
    with pytest.raises(LaunchError, match="does not exist"):
        TritonServer(tmp_path / "nope", ["m"]).start()
    with pytest.raises(LaunchError, match="'m' is not in"):
        TritonServer(tmp_path, ["m"]).start()


def test_port_conflict_is_reported(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.pbtxt").write_text('name: "m"')
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        assert port_in_use(port)
        with pytest.raises(LaunchError, match=f"port {port}"):
            TritonServer(tmp_path, ["m"], grpc_port=port).start()


def test_backend_dir_has_python_backend_stub_and_our_backends(tmp_path):
    backend_dir = build_backend_dir(tmp_path)
    assert (backend_dir / "python" / "libtriton_python.so").exists()
    assert (backend_dir / "python" / "triton_python_backend_stub").exists()
    assert (backend_dir / "onnxruntime" / "model.py").exists()


def test_command_line(tmp_path):
    server = TritonServer(tmp_path, ["a", "b"], http_port=1, grpc_port=2, metrics_port=3)
    cmd = server.command(tmp_path)
    assert "--model-control-mode=explicit" in cmd
    assert "--load-model=a" in cmd and "--load-model=b" in cmd
    assert "--grpc-port=2" in cmd and any(c.startswith("--cache-config=local") for c in cmd)


def test_repository_listing(repository: Path):
    names = model_names(repository)
    assert {"all-minilm-l6-v2", "all-minilm-l6-v2_encoder", "all-minilm-l6-v2_tokenizer"} <= set(names)
    assert "all-minilm-l6-v2" in served_models(repository)
    assert "all-minilm-l6-v2_encoder" not in served_models(repository)


def test_serve_with_empty_repository_explains(tmp_path, capsys):
    assert cli.main(["serve", "--repository", str(tmp_path)]) == 1
    assert "no models" in capsys.readouterr().err


def test_a_model_that_fails_to_load_is_explained(tmp_path):
    model = tmp_path / "broken"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text('name: "broken"\nbackend: "onnxruntime"\nmax_batch_size: 0\n'
                                        'input [{ name: "x" data_type: TYPE_FP32 dims: [1] }]\n'
                                        'output [{ name: "y" data_type: TYPE_FP32 dims: [1] }]\n')
    with pytest.raises(LaunchError) as err:
        TritonServer(tmp_path, ["broken"], startup_timeout_s=60).start()
    assert "broken" in str(err.value) and "\n" not in str(err.value)
