"""Config overrides are allow-listed (issue 11, part 3), against the session's real tritonserver: a path in an
override never reaches a model, and a reload that fails leaves the loaded version serving.

Only the small embedding models are reloaded, and never changed: a refused override never reaches Triton and
the failed reload keeps the version loaded before, so the tests after these see the same models.
"""

from __future__ import annotations

import pytest
import tritonclient.grpc as grpcclient

pytestmark = pytest.mark.integration

MODEL = "all-minilm-l6-v2"
PARTS = [MODEL, f"{MODEL}_tokenizer", f"{MODEL}_encoder"]


def embeds(http) -> bool:
    body = {"model": MODEL, "input": ["still serving"], "encoding_format": "float"}
    r = http.post("/v1/embeddings", json=body, headers={"Cache-Control": "no-store"})
    return r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 384


def configs(triton) -> dict[str, dict]:
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    return {name: client.get_model_config(name, as_json=True, headers=triton.grpc_headers)["config"]
            for name in PARTS}


@pytest.mark.parametrize(("model", "override", "param"), [
    (f"{MODEL}_encoder", {"parameters": {"model_file": {"string_value": "/etc/passwd"}}},
     "config.parameters.model_file"),
    (f"{MODEL}_tokenizer", {"parameters": {"max_input_tokens": {"string_value": "../../etc/passwd"}}},
     "config.parameters.max_input_tokens"),
    (f"{MODEL}_encoder", {"default_model_filename": "/etc/passwd"}, "config.default_model_filename"),
    (f"{MODEL}_encoder", {"backend": "python"}, "config.backend"),
    (MODEL, {"parameters": {"token_input_model": {"string_value": f"{MODEL}_tokenizer"}}},
     "config.parameters.token_input_model"),
])
def test_an_override_outside_the_allow_list_is_refused_and_the_model_serves_on(http, triton, model, override,
                                                                                param):
    before = configs(triton)
    r = http.post("/admin/models/load", json={"model": model, "config": override})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and param in error["message"]
    assert configs(triton) == before  # nothing reached Triton
    assert embeds(http)


def test_a_reload_that_fails_keeps_the_loaded_version_serving(http, triton):
    encoder = f"{MODEL}_encoder"
    before = configs(triton)
    # Allowed by the contract (a list of names), refused by the model's initialize on every machine.
    override = {"parameters": {"execution_providers": {"string_value": "NoSuchExecutionProvider"}}}
    r = http.post("/admin/models/load", json={"model": encoder, "config": override})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "model_load_failed" and error["param"] == "config"
    assert "still serving" in error["message"] and "NoSuchExecutionProvider" in error["message"]
    assert configs(triton) == before
    assert embeds(http)
    states = {m["name"]: m["state"] for m in http.get("/admin/models").json()["data"]}
    assert all(states[name] == "READY" for name in PARTS)
