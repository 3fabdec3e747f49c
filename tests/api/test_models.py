from tests.api.conftest import assert_error


async def test_models_lists_only_served_ready_models(client, backend):
    r = await client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    assert {m["id"]: m["task"] for m in body["data"]} == {"emb": "embeddings", "llm": "chat"}
    assert all(m["object"] == "model" and m["owned_by"] and m["created"] > 0 for m in body["data"])
    backend.states["llm"] = "UNAVAILABLE"
    assert [m["id"] for m in (await client.get("/v1/models")).json()["data"]] == ["emb"]


async def test_retrieve_model(client):
    r = await client.get("/v1/models/emb")
    assert r.json()["id"] == "emb" and r.json()["max_model_len"] == 16
    assert_error(await client.get("/v1/models/emb_encoder"), 404, code="model_not_found")


async def test_model_while_loading_is_503(client, backend):
    await client.get("/v1/models")
    backend.states["emb"] = "LOADING"
    assert_error(await client.post("/v1/embeddings", json={"model": "emb", "input": "x"}), 503,
                 code="model_not_ready")


async def test_health_and_readiness(client, backend):
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["models"] == ["emb", "llm"]
    backend.ready = False
    assert_error(await client.get("/health/ready"), 503)


async def test_readiness_waits_for_required_models(backend, settings):
    import httpx

    from frontend.app import create_app

    app = create_app(settings.model_copy(update={"required_models": ["emb", "later"]}), backend=backend)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            error = assert_error(await c.get("/health/ready"), 503)
            assert "later" in error["message"]


async def test_unknown_route_and_method_are_envelopes(client):
    assert_error(await client.get("/v1/nothing"), 404)
    assert_error(await client.get("/v1/embeddings"), 405)


async def test_request_id_is_echoed_or_generated(client):
    r = await client.get("/health", headers={"x-request-id": "abc"})
    assert r.headers["x-request-id"] == "abc"
    assert len((await client.get("/health")).headers["x-request-id"]) == 32


async def test_unexpected_errors_are_500_envelopes(client, backend):
    async def broken():
        raise RuntimeError("boom")

    backend.repository_index = broken
    error = assert_error(await client.get("/v1/models"), 500)
    assert "boom" not in error["message"]


async def test_models_publish_what_their_task_can_take(client, backend):
    """Chat models say whether they take images; images models their sizes, max n and edits; others neither."""
    backend.models["llm"]["supports_images"] = "true"
    backend.models["sd"] = {"openai_task": "images", "sizes": "64x64, 128x128", "max_n": "4",
                            "supports_edits": "true"}
    backend.states["sd"] = "READY"
    models = {m["id"]: m for m in (await client.get("/v1/models")).json()["data"]}
    assert models["llm"]["supports_images"] is True and models["llm"]["sizes"] is None
    assert (models["sd"]["sizes"], models["sd"]["max_n"], models["sd"]["supports_edits"]) == (
        ["64x64", "128x128"], 4, True)
    assert models["emb"]["supports_images"] is None and models["emb"]["sizes"] is None
    assert (await client.get("/v1/models/sd")).json()["sizes"] == ["64x64", "128x128"]
