"""Who may do what, against the real tritonserver: admin is never anonymous over the network, signed image
URLs are charged to the key that minted them and served without running the pipeline again, and a cached
answer never replays a URL minted for another host."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from frontend.app import create_app
from frontend.auth import hash_key
from frontend.settings import Settings
from tests.stack import run_frontend

pytestmark = pytest.mark.integration

IMAGES = "tiny-sd-random"
FAST = {"steps": 2, "size": "64x64"}


def settings_for(triton, **values) -> Settings:
    return Settings(triton_grpc_url=triton.grpc_url, model_index_ttl_s=1.0,
                    triton_api_secret=triton.api_secret or "", **values)


async def call_as(app, client_host: str, method: str, path: str, **kwargs) -> httpx.Response:
    """A request to the app (its lifespan running, the real Triton behind it) from `client_host`."""
    transport = httpx.ASGITransport(app=app, client=(client_host, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://modelgate") as client:
        return await client.request(method, path, **kwargs)


async def test_admin_without_keys_answers_loopback_only(triton):
    app = create_app(settings_for(triton))
    async with app.router.lifespan_context(app):
        for path, body in (("/admin/models", None), ("/admin/models/unload", {"model": IMAGES})):
            refused = await call_as(app, "192.0.2.7", "POST" if body else "GET", path, json=body)
            assert refused.status_code == 403, refused.text
            error = refused.json()["error"]
            assert error["code"] == "insufficient_permissions" and "MODELGATE_API_KEYS_FILE" in error["message"]
        listed = await call_as(app, "127.0.0.1", "GET", "/admin/models")
        assert listed.status_code == 200
        assert {"name": IMAGES, "state": "READY"}.items() <= {
            k: v for m in listed.json()["data"] if m["name"] == IMAGES for k, v in m.items()}.items()
        # Inference stays open without keys, from anywhere.
        served = await call_as(app, "192.0.2.7", "GET", "/v1/models")
        assert served.status_code == 200 and IMAGES in {m["id"] for m in served.json()["data"]}


@pytest.fixture(scope="module")
def keyed(triton, tmp_path_factory):
    name = f"artist-{uuid.uuid4().hex[:8]}"
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    path.write_text(json.dumps([
        {"name": name, "key_sha256": hash_key("sk-artist"), "limits": {"requests_per_minute": 3}},
        {"name": "other", "key_sha256": hash_key("sk-other")}]))
    with run_frontend(settings_for(triton, api_keys_file=str(path))) as running:
        yield running


def pipeline_runs(triton) -> float:
    """Successful requests Triton's diffusion pipeline has answered (its own metrics endpoint)."""
    text = httpx.get(f"http://127.0.0.1:{triton.metrics_port}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("nv_inference_request_success{") and f'model="{IMAGES}"' in line)


def test_image_urls_are_charged_to_their_key_and_served_without_the_pipeline(keyed, triton):
    headers = {"Authorization": "Bearer sk-artist"}
    with httpx.Client(base_url=keyed.url, timeout=120) as http:
        made = http.post("/v1/images/generations", headers=headers,
                         json={"model": IMAGES, "prompt": "a red door", "n": 2, "seed": 5, **FAST})
        assert made.status_code == 200, made.text
        urls = [d["url"] for d in made.json()["data"]]
        runs = pipeline_runs(triton)
        fetched = [http.get(url) for url in urls]  # no Authorization: the URL is the credential
        assert [r.status_code for r in fetched] == [200, 200]
        assert all(r.content.startswith(b"\x89PNG") for r in fetched) and fetched[0].content != fetched[1].content
        assert fetched[1].headers["x-ratelimit-remaining-requests"] == "0"  # counted against the minting key
        assert pipeline_runs(triton) == runs  # answered from the frontend's PNG cache, not recomputed
        over = http.get(urls[0])
        assert over.status_code == 429 and over.json()["error"]["code"] == "rate_limit_exceeded"
        # Another key is not charged for it, and tampering with a token is a 404.
        assert http.get("/v1/models", headers={"Authorization": "Bearer sk-other"}).status_code == 200
        token = urls[0].rsplit("/", 1)[1]
        assert http.get(f"/v1/images/files/{token[:-2]}xx").status_code == 404


def test_a_cached_answer_never_replays_a_url_minted_for_another_host(frontend):
    body = {"model": IMAGES, "prompt": "a blue boat", "seed": 11, **FAST}
    with httpx.Client(base_url=frontend.url, timeout=120) as http:
        first = http.post("/v1/images/generations", json=body, headers={"Host": "one.example"})
        second = http.post("/v1/images/generations", json=body, headers={"Host": "two.example"})
        assert first.status_code == second.status_code == 200
        assert first.json()["data"][0]["url"].startswith("http://one.example/")
        assert second.json()["data"][0]["url"].startswith("http://two.example/")
        assert second.headers.get("x-cache") != "hit"
        # b64_json answers are still cached: the same seed gives the same bytes, whoever asks.
        b64 = {**body, "response_format": "b64_json"}
        assert http.post("/v1/images/generations", json=b64).headers["x-cache"] == "miss"
        assert http.post("/v1/images/generations", json=b64).headers["x-cache"] == "hit"
