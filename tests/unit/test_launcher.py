import socket
from pathlib import Path

import pytest

from launcher import __main__ as cli
from launcher.repository import model_names, served_models
from frontend.triton import TRITON_API_HEADER
from launcher.triton import RESTRICTED_PROTOCOLS, LaunchError, TritonServer, build_backend_dir, port_in_use


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


def test_port_in_use_checks_the_address_triton_binds(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert port_in_use(port) and port_in_use(port, "127.0.0.1") and port_in_use(port, "0.0.0.0")
    assert not port_in_use(port)


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


def test_command_binds_loopback_and_restricts_the_repository_protocols(tmp_path):
    cmd = TritonServer(tmp_path, ["a"], api_secret="s3cret").command(tmp_path)
    assert {"--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"} <= set(cmd)
    rule = f"{','.join(RESTRICTED_PROTOCOLS)}:{TRITON_API_HEADER}=s3cret"
    assert {f"--grpc-restricted-protocol={rule}", f"--http-restricted-api={rule}"} <= set(cmd)
    assert {"model-repository", "model-config"} <= set(RESTRICTED_PROTOCOLS)
    assert not {"inference", "health"} & set(RESTRICTED_PROTOCOLS)  # the data path and the probes stay open
    assert not any("restricted" in c for c in TritonServer(tmp_path, ["a"]).command(tmp_path))


def test_an_opened_address_is_deliberate_and_still_reached_on_loopback(tmp_path):
    server = TritonServer(tmp_path, ["a"], address="0.0.0.0", grpc_port=2, http_port=1, metrics_port=3)
    assert "--grpc-address=0.0.0.0" in server.command(tmp_path)
    assert server.grpc_url == "127.0.0.1:2" and server.http_url == "http://127.0.0.1:1"
    assert TritonServer(tmp_path, ["a"], address="10.1.2.3", grpc_port=2).grpc_url == "10.1.2.3:2"


def test_a_secret_triton_cannot_parse_is_refused(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.pbtxt").write_text('name: "m"')
    with pytest.raises(LaunchError, match="secret"):
        TritonServer(tmp_path, ["m"], api_secret="a:b=c").start()


def test_serve_defaults_keep_triton_on_loopback():
    args = cli.build_parser().parse_args(["serve"])
    assert args.triton_address == "127.0.0.1" and args.triton_api_secret is None


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


def test_triton_and_the_frontend_share_one_secret_random_per_run(repository, monkeypatch):
    monkeypatch.delenv("MODELGATE_TRITON_API_SECRET", raising=False)
    args = cli.build_parser().parse_args(["serve", "--repository", str(repository)])
    first, settings, given = cli.prepare(args)
    assert not given and len(first.api_secret) >= 32
    assert settings.triton_api_secret.get_secret_value() == first.api_secret
    assert settings.triton_grpc_url == first.grpc_url == "127.0.0.1:8001"
    assert cli.prepare(args)[0].api_secret != first.api_secret
    monkeypatch.setenv("MODELGATE_TRITON_API_SECRET", "from-env")
    assert cli.prepare(args)[0].api_secret == "from-env"
    args = cli.build_parser().parse_args(["serve", f"--repository={repository}", "--triton-api-secret=flag"])
    triton, settings, given = cli.prepare(args)
    assert given and triton.api_secret == settings.triton_api_secret.get_secret_value() == "flag"
