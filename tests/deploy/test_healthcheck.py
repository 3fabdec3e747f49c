"""docker/healthcheck.py, the images' HEALTHCHECK: 0 on 2xx, 1 on an error status or no server."""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from launcher.triton import free_port
from tests.deploy.conftest import ROOT

SCRIPT = ROOT / "docker" / "healthcheck.py"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response({"/health": 200, "/v2/health/ready": 503}.get(self.path, 404))
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def port():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def check(*args, port=None) -> int:
    env = {"MODELGATE_PORT": str(port)} if port else {}
    return subprocess.run([sys.executable, SCRIPT, *args], env=env, timeout=20).returncode


def test_frontend_health_on_modelgate_port(port):
    assert check(port=port) == 0


def test_error_status_is_unhealthy(port):
    assert check(f"http://127.0.0.1:{port}/v2/health/ready") == 1


def test_no_server_is_unhealthy():
    assert check(port=free_port()) == 1
