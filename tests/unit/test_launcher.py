import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from launcher import __main__ as cli
from launcher.processes import group_members, stop_group
from launcher.repository import model_names, served_models
from launcher.supervise import Backoff, Supervisor
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
    # Triton's own wait for requests in flight ends before the launcher's bound, which then kills the group.
    assert "--exit-timeout-secs=24" in TritonServer(tmp_path, ["a"], stop_timeout_s=30).command(tmp_path)


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


def test_serve_restarts_triton_unless_told_to_leave_it_to_the_platform():
    assert cli.build_parser().parse_args(["serve"]).triton_restart == "always"
    assert cli.build_parser().parse_args(["serve", "--triton-restart=never"]).triton_restart == "never"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["serve", "--triton-restart=sometimes"])


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
        TritonServer(tmp_path, ["broken"], startup_timeout_s=60, run_dir=tmp_path / ".run").start()
    assert "broken" in str(err.value) and "\n" not in str(err.value)
    assert not list((tmp_path / ".run").glob("backends-*"))  # the folder goes with the failed start


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


def group(script: str) -> subprocess.Popen:
    """A shell leading a process group of its own, as tritonserver leads its stubs."""
    proc = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    deadline = time.monotonic() + 5
    while len(group_members(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    return proc


def test_stop_group_waits_for_a_graceful_stop():
    proc = group("trap 'kill $child; exit 0' INT; sleep 60 & child=$!; wait")
    started = time.monotonic()
    stop_group(proc, timeout_s=10)
    assert proc.returncode == 0 and not group_members(proc.pid) and time.monotonic() - started < 5


def test_stop_group_kills_what_outlives_the_bound():
    # The leader stops on SIGINT, its child ignores every polite signal: killed once the bound passes.
    proc = group("trap 'exit 0' INT; sh -c 'trap \"\" INT TERM; sleep 60' & wait")
    started = time.monotonic()
    stop_group(proc, timeout_s=0.5)
    assert not group_members(proc.pid) and 0.5 <= time.monotonic() - started < 5


def test_stop_group_kills_the_orphans_of_a_dead_leader_at_once():
    proc = group("sleep 60 & wait")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert group_members(proc.pid)  # the child outlives its leader, as a stub outlives a killed Triton
    started = time.monotonic()
    stop_group(proc, timeout_s=30)
    assert not group_members(proc.pid) and time.monotonic() - started < 2


class FakeServer:
    """What the Supervisor drives, with `sleep` as the server: it dies when a test kills it."""

    stop_timeout_s = 1.0

    def __init__(self):
        self.launches = 0
        self._proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self):
        self.launch()

    def launch(self):
        self.launches += 1
        self._proc = subprocess.Popen(["sleep", "60"], start_new_session=True)

    def wait_ready(self):
        pass

    def wait(self):
        proc = self._proc
        return proc.wait() if proc else None

    def stop(self, timeout_s=None):
        proc, self._proc = self._proc, None
        if proc:
            stop_group(proc, self.stop_timeout_s)


def wait_for(check, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_supervisor_restarts_a_dead_server_with_backoff():
    server = FakeServer()
    with Supervisor(server, backoff=Backoff(first_s=0.05)) as supervisor:
        first = server.pid
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: supervisor.restarts == 1)
        assert server.launches == 2 and server.pid != first
        second = server.pid
    assert server.pid is None and not group_members(second)  # stopped with the supervisor, not restarted
    assert server.launches == 2


def test_supervisor_leaves_restarts_to_the_platform_when_told():
    server, deaths = FakeServer(), []
    with Supervisor(server, restart=False, on_death=deaths.append):
        os.kill(server.pid, signal.SIGKILL)
        wait_for(lambda: deaths)
    assert deaths == [-signal.SIGKILL] and server.launches == 1


def test_supervisor_stop_ends_a_backoff_at_once():
    server = FakeServer()
    supervisor = Supervisor(server, backoff=Backoff(first_s=60)).start()
    os.kill(server.pid, signal.SIGKILL)
    wait_for(lambda: server.pid is None)  # dead and cleaned up: waiting out its backoff
    started = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - started < 2 and server.launches == 1


def test_backoff_doubles_up_to_its_cap():
    assert [Backoff(1, 30).delay(i) for i in range(7)] == [1, 2, 4, 8, 16, 30, 30]


def test_a_stop_signal_unwinds_once_then_is_only_logged():
    assert threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM)
    with cli.stop_signals() as stopping:
        with pytest.raises(cli.Stop):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs here
        assert stopping[0]
        os.kill(os.getpid(), signal.SIGINT)  # while shutting down: no second unwind
        time.sleep(0.05)
    assert signal.getsignal(signal.SIGTERM) is before
