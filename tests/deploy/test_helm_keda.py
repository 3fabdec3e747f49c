"""The KEDA option for Triton (`triton.autoscaling.keda`): a ScaledObject valid against KEDA's own CRD schema
(vendored: kubernetes-validate has none), a Prometheus trigger on the engines' waiting sequences by default,
exclusive with the chart's HPA."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import helm_python
import jsonschema
import pytest

from tests.deploy.conftest import NAMESPACE, RELEASE, render
from triton_models.llm.metrics import SEQUENCES

SCHEMA = Path(__file__).parent / "schemas" / "keda-scaledobject-v1alpha1.json"
TRITON = f"{RELEASE}-modelgate-triton"
KEDA = {"triton": {"autoscaling": {"keda": {"enabled": True}}}}
# The Prometheus scaler's metadata (pkg/scalers/prometheus_scaler.go, KEDA v2.20): required keys first.
PROMETHEUS_REQUIRED = {"serverAddress", "query", "threshold"}
PROMETHEUS_OPTIONAL = {"queryParameters", "activationThreshold", "namespace", "customHeaders",
                       "ignoreNullValues", "unsafeSsl", "awsRegion", "timeout", "identityOwner"}


def strict(schema):
    """KEDA's schema as the API server applies it with strict field validation (what `kubectl apply` does by
    default): an object schema with properties admits no other field unless it says so."""
    schema = copy.deepcopy(schema)

    def close(node):
        if isinstance(node, dict):
            if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


@pytest.fixture(scope="module")
def validator():
    return jsonschema.Draft7Validator(strict(json.loads(SCHEMA.read_text())))


def scaled_object(values=None) -> dict:
    return render(values or KEDA)["triton-scaledobject.yaml"][0]


def check(validator, obj: dict) -> None:
    """KEDA's schema, plus its one CEL rule (x-kubernetes-validations) written out."""
    validator.validate(obj)
    spec = obj["spec"]
    assert spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100), "min <= max (KEDA's CEL rule)"
    assert obj["apiVersion"] == "keda.sh/v1alpha1" and obj["kind"] == "ScaledObject"


def test_off_by_default(default_render):
    assert default_render["triton-scaledobject.yaml"] == []


def test_the_scaled_object_validates_against_kedas_crd_schema(validator):
    obj = scaled_object()
    check(validator, obj)
    variants = [
        {"authenticationRef": "prometheus-auth", "metricType": "Value", "threshold": 2.5,
         "pollingInterval": 30,
         "query": "histogram_quantile(0.9, sum by (le) (rate(modelgate_engine_queue_time_seconds_bucket[2m])))"},
        {"serverAddress": "https://prometheus.example.com"},
    ]
    for keda in variants:
        check(validator, scaled_object({"triton": {"autoscaling": {"keda": {"enabled": True, **keda}}}}))


@pytest.mark.parametrize("breakage", ["unknown field", "no triggers", "metadata missing", "string max"])
def test_the_schema_check_catches_a_broken_object(validator, breakage):
    obj = scaled_object()
    if breakage == "unknown field":
        obj["spec"]["minReplicas"] = 1  # the HPA's spelling
    elif breakage == "no triggers":
        obj["spec"]["triggers"] = []
    elif breakage == "metadata missing":
        del obj["spec"]["triggers"][0]["metadata"]
    else:
        obj["spec"]["maxReplicaCount"] = "4"
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(obj)


def test_it_scales_the_triton_deployment_between_the_autoscaling_bounds():
    keda = {"minReplicas": 2, "maxReplicas": 6, "keda": {"enabled": True}}
    rendered = render({"triton": {"autoscaling": keda}})
    spec = rendered["triton-scaledobject.yaml"][0]["spec"]
    deployment = rendered["triton-deployment.yaml"][0]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                      "name": deployment["metadata"]["name"]}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 6)
    assert "replicas" not in deployment["spec"]  # KEDA's HPA owns the count
    assert rendered["triton-hpa.yaml"] == []
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 600}


def test_the_default_trigger_sums_the_engines_waiting_sequences_of_this_release():
    [trigger] = scaled_object()["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    metadata = trigger["metadata"]
    assert PROMETHEUS_REQUIRED <= metadata.keys() <= PROMETHEUS_REQUIRED | PROMETHEUS_OPTIONAL
    assert all(isinstance(v, str) for v in metadata.values())  # the CRD's metadata is a string map
    assert float(metadata["threshold"]) == 4
    query = metadata["query"]
    match = re.fullmatch(r"sum\((\w+)\{(.*)\}\)", query)
    assert match, query
    assert match.group(1) == SEQUENCES.name  # the gauge the chat engine exports (triton_models.llm.metrics)
    labels = dict(re.findall(r'(\w+)(?:=~|=)"([^"]*)"', match.group(2)))
    assert labels["state"] == "waiting" and "waiting" in SEQUENCES.values
    assert labels["namespace"] == NAMESPACE and re.fullmatch(labels["pod"], f"{TRITON}-6d9f7c-x2x9z")
    assert not re.fullmatch(labels["pod"], f"{RELEASE}-modelgate-frontend-6d9f7c-x2x9z")
    assert "gpu" not in query.lower()


def test_query_threshold_and_credentials_come_from_values():
    custom = {"query": "sum(rate(modelgate_requests_total[1m]))", "threshold": 12, "authenticationRef": "prom",
              "serverAddress": "http://prom.monitoring:9090"}
    rendered = scaled_object({"triton": {"autoscaling": {"keda": {"enabled": True, **custom}}}})
    [trigger] = rendered["spec"]["triggers"]
    assert trigger["metadata"] == {"serverAddress": "http://prom.monitoring:9090", "query": custom["query"],
                                   "threshold": "12"}
    assert trigger["authenticationRef"] == {"name": "prom"}


def test_the_chart_refuses_keda_beside_its_hpa():
    both = "triton.autoscaling.enabled .* triton.autoscaling.keda.enabled"
    with pytest.raises(helm_python.HelmError, match=both):
        render({"triton": {"autoscaling": {"enabled": True, "keda": {"enabled": True}}}})


@pytest.mark.parametrize("keda", [
    {"metricType": "Utilization"},
    {"threshold": "four"},
    {"threshold": 0},
    {"pollingInterval": 0},
    {"serverAddress": "prometheus:9090"},
    {"authenticationRef": "Not_A_Name"},
    {"cooldownPeriod": 300},
], ids=["metric-type", "threshold-word", "threshold-zero", "polling", "server-scheme", "auth-name",
        "unknown-key"])
def test_values_schema_rejects_bad_keda_values(keda):
    with pytest.raises(helm_python.HelmError):
        render({"triton": {"autoscaling": {"keda": {"enabled": True, **keda}}}})


def test_helm_lint_strict_with_keda():
    report = helm_python.lint(Path(__file__).resolve().parents[2] / "helm" / "modelgate", KEDA, strict=True)
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []
