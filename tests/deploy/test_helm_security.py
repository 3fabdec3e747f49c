"""Issue 11 in the chart: Triton's model control behind a header secret from a Secret, one image-URL HMAC key
for every frontend replica (generated once, kept across upgrades), and Redis whenever limits span pods."""

from __future__ import annotations

import base64
import re

import helm_python
import pytest

from frontend.settings import Settings
from launcher.triton import restricted_flags
from tests.deploy.conftest import CHART, render

SECRET_KEYS = {"triton-api-secret": "MODELGATE_TRITON_API_SECRET",
               "images-url-secret": "MODELGATE_IMAGES_URL_SECRET"}
SINGLE = {"frontend": {"replicas": 1, "autoscaling": {"enabled": False}}, "redis": {"enabled": False}}


def container(rendered, template):
    return rendered[template][0]["spec"]["template"]["spec"]["containers"][0]


def secret_refs(container_spec) -> dict[str, tuple[str, str]]:
    """env name -> (Secret name, key) for the env vars read from Secrets."""
    return {e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in container_spec.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}


def test_a_generated_secret_is_read_by_every_frontend_replica_and_triton(default_render):
    secret = default_render["secrets.yaml"][0]
    name = secret["metadata"]["name"]
    for key in SECRET_KEYS:
        assert re.fullmatch(r"[A-Za-z0-9]{48}", base64.b64decode(secret["data"][key]).decode())
    # One pod template for every replica (and the HPA's): each reads the same Secret.
    frontend = container(default_render, "frontend-deployment.yaml")
    assert secret_refs(frontend) == {env: (name, key) for key, env in SECRET_KEYS.items()}
    assert set(secret_refs(frontend)) <= {f"MODELGATE_{field.upper()}" for field in Settings.model_fields}
    triton = container(default_render, "triton-deployment.yaml")
    assert secret_refs(triton) == {"MODELGATE_TRITON_API_SECRET": (name, "triton-api-secret")}
    config = default_render["frontend-configmap.yaml"][0]["data"]
    assert not set(SECRET_KEYS.values()) & set(config)  # never in plain text


def test_generated_values_survive_upgrades_through_lookup():
    """Offline `lookup` finds nothing, so each render generates; in a cluster it returns the stored Secret."""
    text = (CHART / "templates" / "secrets.yaml").read_text()
    assert re.search(r'lookup "v1" "Secret" \.Release\.Namespace \$name', text)
    assert text.index("get $previous $key") < text.index("randAlphaNum")  # the stored value wins
    first, second = (render(revision=r)["secrets.yaml"][0]["data"] for r in (1, 2))
    assert first != second  # generated, not a constant baked into the chart


def test_triton_restricts_model_control_with_the_launchers_flags(default_render, gpu_render):
    for rendered in (default_render, gpu_render):
        triton = container(rendered, "triton-deployment.yaml")
        assert set(restricted_flags("$(MODELGATE_TRITON_API_SECRET)")) <= set(triton["args"])
        assert "MODELGATE_TRITON_API_SECRET" in secret_refs(triton)  # what Kubernetes expands $(...) from


def test_given_secrets_are_used_and_rolled_out():
    rendered = render({"secrets": {"tritonApiSecret": "t0ken", "imagesUrlSecret": "hmac key"}})
    data = rendered["secrets.yaml"][0]["data"]
    assert base64.b64decode(data["triton-api-secret"]) == b"t0ken"
    assert base64.b64decode(data["images-url-secret"]) == b"hmac key"
    for template in ("frontend-deployment.yaml", "triton-deployment.yaml"):
        before = render()[template][0]["spec"]["template"]["metadata"]["annotations"]["checksum/secrets"]
        after = rendered[template][0]["spec"]["template"]["metadata"]["annotations"]["checksum/secrets"]
        assert before != after


def test_an_existing_secret_replaces_the_generated_one():
    rendered = render({"secrets": {"existingSecret": "mine"}})
    assert rendered["secrets.yaml"] == []
    for template in ("frontend-deployment.yaml", "triton-deployment.yaml"):
        assert {name for name, _ in secret_refs(container(rendered, template)).values()} == {"mine"}


def test_a_triton_secret_its_flag_parser_would_split_is_rejected():
    with pytest.raises(helm_python.HelmError):
        render({"secrets": {"tritonApiSecret": "a:b=c"}})


@pytest.mark.parametrize("frontend", [{"autoscaling": {"enabled": True}},
                                      {"autoscaling": {"enabled": False}, "replicas": 2}],
                         ids=["hpa", "replicas"])
def test_several_frontends_without_redis_are_refused(frontend):
    with pytest.raises(helm_python.HelmError, match=r"frontend\.redisUrl is required.*redis\.enabled=true"):
        render({"frontend": frontend, "redis": {"enabled": False}})


def test_one_frontend_needs_no_redis():
    rendered = render(SINGLE)
    assert "MODELGATE_REDIS_URL" not in rendered["frontend-configmap.yaml"][0]["data"]
    assert rendered["redis-deployment.yaml"] == []


def test_bundled_redis_is_what_the_frontend_uses_and_only_it_reaches(default_render):
    service = default_render["redis-service.yaml"][0]
    port = service["spec"]["ports"][0]["port"]
    url = default_render["frontend-configmap.yaml"][0]["data"]["MODELGATE_REDIS_URL"]
    assert url == f"redis://{service['metadata']['name']}:{port}/0"
    deployment = default_render["redis-deployment.yaml"][0]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    spec = deployment["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["automountServiceAccountToken"] is False
    assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    policy = default_render["redis-networkpolicy.yaml"][0]["spec"]
    assert policy["podSelector"] == deployment["spec"]["selector"]
    frontend = default_render["frontend-deployment.yaml"][0]["spec"]["selector"]
    assert policy["ingress"] == [{"from": [{"podSelector": frontend}],
                                  "ports": [{"port": "redis", "protocol": "TCP"}]}]


def test_a_given_redis_url_replaces_the_bundled_one():
    url = "redis://redis-master:6379/0"
    rendered = render({"frontend": {"redisUrl": url}})
    assert rendered["frontend-configmap.yaml"][0]["data"]["MODELGATE_REDIS_URL"] == url
    assert rendered["redis-deployment.yaml"] == rendered["redis-service.yaml"] == []
