"""Triton is reachable only by the frontend (issue 11, part 1): under the launcher its three ports listen on
loopback, and its model-repository and model-config protocols refuse any call without the header secret,
over HTTP and gRPC, while the frontend given that secret still lists, loads and serves models.

One tritonserver of this module's own (the embedding models), started with a secret, as `make serve` does.
"""

from __future__ import annotations

import ipaddress
import secrets
import time

import httpx
import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from export_scripts.__main__ import main as export_main
from frontend.settings import Settings
from frontend.triton import TRITON_API_HEADER, TRITON_GRPC_API_METADATA
from launcher.triton import TritonServer
from tests.conftest import REPOSITORY
from tests.stack import run_frontend

pytestmark = pytest.mark.integration

MODEL = "all-minilm-l6-v2"
PARTS = [MODEL, f"{MODEL}_tokenizer", f"{MODEL}_encoder"]
SECRET = secrets.token_urlsafe(24)
ADMIN_KEY = "sk-sealed-admin"


@pytest.fixture(scope="module")
def sealed():
    """The launcher's defaults (loopback) plus a secret, as `python -m launcher serve` starts Triton."""
    assert export_main(["embeddings", f"--repository={REPOSITORY}"]) == 0
    with TritonServer(REPOSITORY, PARTS, api_secret=SECRET) as server:
        yield server


@pytest.fixture(scope="module")
def grpc(sealed):
    with grpcclient.InferenceServerClient(sealed.grpc_url) as client:
        yield client


def unload_url(server: TritonServer, model: str = MODEL) -> str:
    return f"{server.http_url}/v2/repository/models/{model}/unload"


def embeds(client: grpcclient.InferenceServerClient) -> bool:
    """The served ensemble answers (inference is not restricted): one unit-length 384-d vector."""
    text = grpcclient.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"still serving"], dtype=object))
    vector = client.infer(MODEL, [text]).as_numpy("embedding")
    return vector.shape == (1, 384) and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3


def state(server: TritonServer, model: str) -> str:
    index = httpx.post(f"{server.http_url}/v2/repository/index", headers={TRITON_API_HEADER: SECRET}).json()
    return next((m.get("state", "") for m in index if m["name"] == model), "")


def test_every_port_listens_on_loopback_only(sealed):
    listening = [c.laddr for c in psutil.Process(sealed.pid).net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN]
    assert {addr.port for addr in listening} == {sealed.http_port, sealed.grpc_port, sealed.metrics_port}
    for addr in listening:
        ip = ipaddress.ip_address(addr.ip)
        ip = getattr(ip, "ipv4_mapped", None) or ip  # gRPC listens as ::ffff:127.0.0.1
        assert ip.is_loopback, f"{addr.ip}:{addr.port} is reachable from other hosts"


def test_http_repository_calls_without_the_header_are_refused(sealed, grpc):
    for headers in ({}, {TRITON_API_HEADER: "wrong"}):
        assert httpx.post(unload_url(sealed), headers=headers).status_code == 403
        assert httpx.post(f"{sealed.http_url}/v2/repository/index", headers=headers).status_code == 403
        assert httpx.get(f"{sealed.http_url}/v2/models/{MODEL}/config", headers=headers).status_code == 403
    time.sleep(0.5)  # an accepted unload returns before the model is gone
    assert state(sealed, MODEL) == "READY"
    assert embeds(grpc)


def test_grpc_repository_calls_without_the_header_are_refused(sealed, grpc):
    override = '{"backend": "python", "parameters": {"model_file": {"string_value": "/etc/passwd"}}}'
    calls = [lambda **kw: grpc.unload_model(MODEL, **kw), lambda **kw: grpc.get_model_repository_index(**kw),
             lambda **kw: grpc.load_model(MODEL, config=override, **kw)]
    for call in calls:
        for headers in (None, {TRITON_GRPC_API_METADATA: "wrong"}):
            with pytest.raises(InferenceServerException, match="restricted"):
                call(headers=headers)
    assert state(sealed, MODEL) == "READY"
    assert embeds(grpc)


def test_the_header_unlocks_unload_and_load(sealed, grpc):
    assert httpx.post(unload_url(sealed), headers={TRITON_API_HEADER: SECRET}).status_code == 200
    deadline = time.monotonic() + 60
    while state(sealed, MODEL) == "READY" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert state(sealed, MODEL) != "READY"
    grpc.load_model(MODEL, headers={TRITON_GRPC_API_METADATA: SECRET})
    assert state(sealed, MODEL) == "READY"
    assert embeds(grpc)


def test_the_frontend_with_the_secret_lists_loads_and_serves(sealed):
    settings = Settings(triton_grpc_url=sealed.grpc_url, triton_api_secret=SECRET,
                        api_keys=f"ops={ADMIN_KEY}", model_index_ttl_s=0)
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with run_frontend(settings) as frontend, \
            httpx.Client(base_url=frontend.url, headers=auth, timeout=120) as http:
        assert MODEL in {m["id"] for m in http.get("/v1/models").json()["data"]}
        loaded = http.post("/admin/models/load", json={"model": MODEL})
        assert loaded.status_code == 200 and loaded.json()["state"] == "READY"
        r = http.post("/v1/embeddings", json={"model": MODEL, "input": "sealed but served"})
        assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 384


def test_a_frontend_without_the_secret_cannot_reach_the_repository(sealed):
    settings = Settings(triton_grpc_url=sealed.grpc_url, api_keys=f"ops={ADMIN_KEY}", model_index_ttl_s=0)
    with run_frontend(settings) as frontend:
        r = httpx.post(f"{frontend.url}/admin/models/load", json={"model": MODEL},
                       headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60)
    assert r.status_code == 503 and "restricted" in r.json()["error"]["message"]  # says why
    assert state(sealed, MODEL) == "READY"
