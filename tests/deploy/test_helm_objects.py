"""The rendered objects carry what issue 7 asks for: probes, GPUs, HPAs, Secret mount, NetworkPolicy, ..."""

from __future__ import annotations

import yaml

from tests.deploy.conftest import CHART, RELEASE, container_flags, objects, render

TRITON = f"{RELEASE}-modelgate-triton"
FRONTEND = f"{RELEASE}-modelgate-frontend"


def pod_spec(rendered, template):
    return rendered[template][0]["spec"]["template"]["spec"]


def container(rendered, template):
    return pod_spec(rendered, template)["containers"][0]


def test_triton_probes_on_v2_health_with_a_long_startup(default_render):
    triton = container(default_render, "triton-deployment.yaml")
    port_names = {p["name"] for p in triton["ports"]}
    assert port_names == {"http", "grpc", "metrics"}
    assert triton["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    startup = triton["startupProbe"]
    assert startup["httpGet"]["port"] in port_names
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # model loading takes minutes


def test_triton_command_serves_the_model_repository(default_render, gpu_render):
    args = container(default_render, "triton-deployment.yaml")["args"]
    assert args[0] == "tritonserver"
    assert {"--model-repository=/models", "--model-control-mode=explicit", "--load-model=*"} <= set(args)
    assert "--cache-config=local,size=268435456" in args
    assert not any(a.startswith("--model-config-name") for a in args)
    assert "--model-config-name=gpu" in container(gpu_render, "triton-deployment.yaml")["args"]


def test_gpu_values_request_and_limit_gpus_on_gpu_nodes(default_render, gpu_render):
    cpu = container(default_render, "triton-deployment.yaml")["resources"]
    assert "nvidia.com/gpu" not in cpu["limits"] and "nvidia.com/gpu" not in cpu["requests"]
    gpu = container(gpu_render, "triton-deployment.yaml")["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == gpu["requests"]["nvidia.com/gpu"] == 1
    spec = pod_spec(gpu_render, "triton-deployment.yaml")
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    job = gpu_render["export-job.yaml"][0]["spec"]["template"]["spec"]
    assert job["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_triton_has_memory_backed_shm(default_render):
    spec = pod_spec(default_render, "triton-deployment.yaml")
    dshm = next(v for v in spec["volumes"] if v["name"] == "dshm")
    assert dshm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container(default_render, "triton-deployment.yaml")["volumeMounts"]


def test_frontend_probes_and_settings(default_render):
    frontend = container(default_render, "frontend-deployment.yaml")
    assert frontend["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert frontend["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert frontend["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod_spec(default_render, "frontend-deployment.yaml")["securityContext"]["runAsNonRoot"] is True
    config = default_render["frontend-configmap.yaml"][0]
    assert frontend["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    assert all(key.startswith("MODELGATE_") for key in config["data"])
    assert config["data"]["MODELGATE_PORT"] == str(frontend["ports"][0]["containerPort"])


def test_frontend_round_robins_over_the_headless_triton_service(default_render):
    service = default_render["triton-service.yaml"][0]
    assert service["spec"]["clusterIP"] == "None"
    grpc = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    url = default_render["frontend-configmap.yaml"][0]["data"]["MODELGATE_TRITON_GRPC_URL"]
    assert url == f"dns:///{service['metadata']['name']}:{grpc['port']}"


def test_settings_override_the_chart_wiring():
    rendered = render({"frontend": {"settings": {"triton_grpc_url": "triton.example:8001", "LOG_LEVEL": "DEBUG"}}})
    data = rendered["frontend-configmap.yaml"][0]["data"]
    assert data["MODELGATE_TRITON_GRPC_URL"] == "triton.example:8001"
    assert data["MODELGATE_LOG_LEVEL"] == "DEBUG"


def test_api_key_secret_is_mounted_where_the_setting_points(default_render):
    secret = default_render["frontend-secret.yaml"][0]
    assert secret["kind"] == "Secret" and "keys.json" in secret["data"]
    spec = pod_spec(default_render, "frontend-deployment.yaml")
    volume = next(v for v in spec["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "api-keys")
    assert mount["readOnly"] is True
    path = f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    assert path == "/etc/modelgate/keys.json"
    assert default_render["frontend-configmap.yaml"][0]["data"]["MODELGATE_API_KEYS_FILE"] == path


def test_config_changes_roll_the_frontend():
    before = render()["frontend-deployment.yaml"][0]["spec"]["template"]["metadata"]["annotations"]
    after = render({"frontend": {"settings": {"LOG_LEVEL": "DEBUG"}}})
    after = after["frontend-deployment.yaml"][0]["spec"]["template"]["metadata"]["annotations"]
    assert before["checksum/config"] != after["checksum/config"]
    assert before["checksum/api-keys"] == after["checksum/api-keys"]


def test_frontend_hpa_on_cpu_and_replicas_left_to_it(default_render):
    hpa = default_render["frontend-hpa.yaml"][0]
    assert hpa["spec"]["scaleTargetRef"]["name"] == FRONTEND
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in default_render["frontend-deployment.yaml"][0]["spec"]


def test_triton_hpa_on_the_custom_metric_the_adapter_serves(default_render, gpu_render):
    assert default_render["triton-hpa.yaml"] == []
    hpa = gpu_render["triton-hpa.yaml"][0]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": TRITON}
    metric = hpa["spec"]["metrics"][0]
    assert metric["type"] == "Pods"
    adapter = yaml.safe_load((CHART / "prometheus-adapter-values.yaml").read_text())
    served = {rule["name"]["as"] for rule in adapter["rules"]["custom"]}
    assert metric["pods"]["metric"]["name"] in served
    assert "triton_pending_requests" in served
    for rule in adapter["rules"]["custom"]:
        assert rule["seriesQuery"].startswith("nv_inference_")  # Triton's own metric families
        assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]


def test_pod_disruption_budgets_select_their_pods(default_render):
    for component in ("triton", "frontend"):
        pdb = default_render[f"{component}-pdb.yaml"][0]
        deployment = default_render[f"{component}-deployment.yaml"][0]
        assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_network_policy_admits_only_frontend_pods_to_triton_grpc(default_render):
    policy = default_render["triton-networkpolicy.yaml"][0]["spec"]
    triton = default_render["triton-deployment.yaml"][0]["spec"]
    frontend = default_render["frontend-deployment.yaml"][0]["spec"]
    assert policy["podSelector"] == triton["selector"]
    assert policy["policyTypes"] == ["Ingress"]
    [rule] = policy["ingress"]
    assert rule["from"] == [{"podSelector": frontend["selector"]}]
    assert rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]


def test_network_policy_can_admit_scrapers_to_metrics_only():
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    rendered = render({"networkPolicy": {"metricsFrom": [peer]}})
    rules = rendered["triton-networkpolicy.yaml"][0]["spec"]["ingress"]
    assert rules[1] == {"from": [peer], "ports": [{"port": "metrics", "protocol": "TCP"}]}


def test_model_repository_from_pvc_filled_by_the_export_job(default_render):
    pvc = default_render["models-pvc.yaml"][0]
    spec = pod_spec(default_render, "triton-deployment.yaml")
    claim = next(v for v in spec["volumes"] if v["name"] == "models")["persistentVolumeClaim"]
    assert claim == {"claimName": pvc["metadata"]["name"], "readOnly": True}
    job = default_render["export-job.yaml"][0]
    job_spec = job["spec"]["template"]["spec"]
    assert job_spec["volumes"][0]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    marker = next(e["value"] for e in job_spec["containers"][0]["env"] if e["name"] == "EXPORT_MARKER")
    wait = spec["initContainers"][0]
    assert {"name": "MARKER", "value": marker} in wait["env"]


def test_each_revision_exports_and_waits_for_its_own_marker():
    first, second = render(revision=1), render(revision=2)
    assert first["export-job.yaml"][0]["metadata"]["name"] != second["export-job.yaml"][0]["metadata"]["name"]
    env = [pod_spec(r, "triton-deployment.yaml")["initContainers"][0]["env"][0]["value"] for r in (first, second)]
    assert env[0] != env[1]


def test_object_store_repository_needs_no_pvc_nor_export():
    rendered = render({"modelRepository": {"url": "gs://bucket/models", "credentialsSecret": "gcs"}})
    kinds = {kind for kind, _ in objects(rendered)}
    assert "PersistentVolumeClaim" not in kinds and "Job" not in kinds
    triton = container(rendered, "triton-deployment.yaml")
    assert "--model-repository=gs://bucket/models" in triton["args"]
    assert triton["envFrom"] == [{"secretRef": {"name": "gcs"}}]
    assert "initContainers" not in pod_spec(rendered, "triton-deployment.yaml")


def test_service_monitors_scrape_named_service_ports(default_render, gpu_render):
    assert default_render["triton-servicemonitor.yaml"] == []
    for component, port in (("triton", "metrics"), ("frontend", "http")):
        monitor = gpu_render[f"{component}-servicemonitor.yaml"][0]
        service = gpu_render[f"{component}-service.yaml"][0]
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert monitor["spec"]["endpoints"][0]["port"] == port
        assert port in {p["name"] for p in service["spec"]["ports"]}


def test_services_target_named_container_ports(default_render):
    for component in ("triton", "frontend"):
        names = {p["name"] for p in container(default_render, f"{component}-deployment.yaml")["ports"]}
        for port in default_render[f"{component}-service.yaml"][0]["spec"]["ports"]:
            assert port["targetPort"] in names


def test_every_pod_runs_as_non_root(default_render, gpu_render):
    for rendered in (default_render, gpu_render):
        for template in ("triton-deployment.yaml", "frontend-deployment.yaml", "export-job.yaml"):
            spec = pod_spec(rendered, template)
            assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] > 0
            assert spec["automountServiceAccountToken"] is False
            for c in spec["containers"] + spec.get("initContainers", []):
                assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_triton_args_repeat_the_image_cmd(default_render):
    assert set(container_flags()) <= set(container(default_render, "triton-deployment.yaml")["args"])
