"""The chart renders with a real Helm engine and every object is valid Kubernetes (offline schemas)."""

from __future__ import annotations

import copy
import re

import helm_python
import kubernetes_validate
import pytest

from tests.deploy.conftest import CHART, gpu_values, render

# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ["1.25.0", kubernetes_validate.utils.latest_version()]
# CRDs have no schema in kubernetes-validate: test_helm_objects checks the Prometheus Operator's
# ServiceMonitor, test_helm_keda validates KEDA's ScaledObject against KEDA's own schema.
CRD_KINDS = {"ServiceMonitor", "ScaledObject"}

VARIANTS = {
    "default": None,
    "gpu": gpu_values(),
    "object-store": {
        "modelRepository": {"url": "s3://models/modelgate", "credentialsSecret": "model-store"},
        "frontend": {"autoscaling": {"enabled": False}, "apiKeys": {"existingSecret": "keys"},
                     "redisUrl": "redis://redis-master:6379/0"},
        "triton": {"autoscaling": {"enabled": True}, "extraArgs": ["--log-verbose=1"]},
        "networkPolicy": {"metricsFrom": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    },
    "keda": {"triton": {"autoscaling": {"keda": {"enabled": True}}},
             "metrics": {"serviceMonitor": {"enabled": True}}},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_validates_against_kubernetes_schemas(variant):
    rendered = render(VARIANTS[variant])
    checked = 0
    for template, docs in rendered.items():
        for obj in docs:
            if obj["kind"] in CRD_KINDS:
                continue
            for version in KUBE_VERSIONS:
                kubernetes_validate.validate(obj, version, strict=True)
            checked += 1
    assert checked >= 8


def test_schema_validation_catches_a_broken_object(default_render):
    deployment = copy.deepcopy(default_render["triton-deployment.yaml"][0])
    deployment["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["httpGet"]["prot"] = 8000
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_strict_has_no_errors(variant):
    report = helm_python.lint(CHART, VARIANTS[variant], strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize(
    "values",
    [
        {"triton": {"gpus": -1}},
        {"frontend": {"replica": 3}},
        {"modelRepository": {"url": "http://bucket/models"}},
        {"modelRepository": {"export": {"precision": "int3"}}},
        {"frontend": {"autoscaling": {"targetCPUUtilizationPercentage": 0}}},
    ],
    ids=["negative-gpus", "unknown-key", "url-scheme", "precision", "cpu-target"],
)
def test_values_schema_rejects_bad_values(values):
    with pytest.raises(helm_python.HelmError):
        render(values)


def test_one_object_per_template(default_render, gpu_render):
    for rendered in (default_render, gpu_render):
        assert all(len(docs) <= 1 for docs in rendered.values())


def test_templates_stay_short():
    for template in (CHART / "templates").glob("*.yaml"):
        assert len(template.read_text().splitlines()) <= 120, template.name


def test_values_are_documented_key_by_key():
    """Every key of values.yaml has a comment right above it, or sits in a block whose key has one."""
    undocumented, documented_parents = [], []  # stack of (indent, documented)
    previous = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        key = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if key:
            indent = len(key.group(1))
            while documented_parents and documented_parents[-1][0] >= indent:
                documented_parents.pop()
            documented = previous.startswith("#") or any(d for _, d in documented_parents)
            if not documented and not stripped.endswith(":"):
                undocumented.append(stripped)
            documented_parents.append((indent, documented))
        if stripped:
            previous = stripped
    assert undocumented == []
