"""Client mistakes against the real stack (session tritonserver + frontend): 400s naming the field, and a
refused request never hurts the next one on the same keep-alive connection (issue 12, part 3)."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.integration

MODEL = "all-minilm-l6-v2"
VOCAB = 30522  # all-MiniLM-L6-v2's, published as the ensemble's `vocab_size`
JSON = {"content-type": "application/json", "cache-control": "no-store"}


@pytest.mark.parametrize("bad_id", [2**63, VOCAB, 100_000])
def test_token_ids_outside_the_vocabulary_are_400_naming_input(http, bad_id):
    r = http.post("/v1/embeddings", json={"model": MODEL, "input": [[101, 7592, 102], [101, bad_id, 102]]})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["param"], error["code"]) == ("input", "invalid_token_ids")
    assert "check_embedding_ctx_length=False" in error["message"] and str(VOCAB) in error["message"]
    assert "onnx" not in error["message"].lower() and "Gather" not in error["message"]


def test_the_last_id_of_the_vocabulary_embeds(http):
    r = http.post("/v1/embeddings", json={"model": MODEL, "input": [101, VOCAB - 1, 102]})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"][0]["embedding"]) == 384


def test_a_refused_surrogate_keeps_the_connection_for_the_next_request(frontend):
    """Two requests on one keep-alive connection: an unpaired surrogate is a 400 that leaves the connection
    open (no reset, no 500), and the valid request after it is answered on the same socket."""
    url = urlsplit(frontend.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        bodies = [b'{"model": "%s", "input": "bad \\ud800 text"}' % MODEL.encode(),
                  b'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "\\udfff"}]}']
        for body, path in zip(bodies, ("/v1/embeddings", "/v1/chat/completions")):
            conn.request("POST", path, body=body, headers=JSON)
            response = conn.getresponse()
            assert response.status == 400, response.read()
            assert b"surrogate" in response.read()
            assert response.getheader("connection") != "close"
        socket = conn.sock
        conn.request("POST", "/v1/embeddings", body=b'{"model": "%s", "input": "good text"}' % MODEL.encode(),
                     headers=JSON)
        response = conn.getresponse()
        assert response.status == 200, response.read()
        response.read()
        assert conn.sock is socket  # the same connection, not a silent reconnect
    finally:
        conn.close()
