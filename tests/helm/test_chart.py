"""The Helm chart, rendered by Helm's own engine and validated against Kubernetes' schemas."""

import base64
import math
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from gateway.settings import Settings
from tests.paths import REPO_ROOT
from tests.test_image_recipe import image_command, image_entrypoint

CHART_DIR = REPO_ROOT / "helm" / "ledgerhook"
KUBERNETES_VERSION = "1.35"
RELEASE = "ledgerhook"
NAMESPACE = "payments"
WORKLOADS = ("Deployment", "Job")

PRODUCTION: dict[str, Any] = {
    "existingSecret": "ledgerhook-credentials",
    "config": {
        "LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS": "kafka-0.kafka:9093,kafka-1.kafka:9093",
        "LEDGERHOOK_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "LEDGERHOOK_TOPIC_REPLICATION_FACTOR": 3,
    },
    "gateway": {
        "replicas": 3,
        "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12},
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
            }
        ],
    },
    "worker": {"replicas": 2},
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "hosts": [{"host": "hooks.example.com", "paths": [{"path": "/webhooks", "pathType": "Prefix"}]}],
        "tls": [{"secretName": "hooks-tls", "hosts": ["hooks.example.com"]}],
    },
    "metrics": {"serviceMonitor": {"enabled": False}},
}

DEV_SECRETS = {
    "LEDGERHOOK_DATABASE_URL": "postgresql://ledgerhook:dev@postgres:5432/ledgerhook",
    "LEDGERHOOK_ADMIN_TOKENS": "dev-token-1,dev-token-2",
}


@dataclass
class Rendered:
    """One `helm template`: the manifests as dicts, and NOTES.txt."""

    docs: list[dict[str, Any]]
    notes: str

    def kinds(self) -> list[str]:
        return sorted(doc["kind"] for doc in self.docs)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str, component: str | None = None) -> dict[str, Any]:
        found = [
            doc
            for doc in self.of_kind(kind)
            if component is None or doc["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]
        assert len(found) == 1, f"expected one {kind} {component or ''}, found {len(found)}"
        return found[0]

    def workloads(self) -> list[dict[str, Any]]:
        return [doc for doc in self.docs if doc["kind"] in WORKLOADS]


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> Rendered:
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    docs: list[dict[str, Any]] = []
    notes = ""
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return Rendered(docs, notes)


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1
    only: dict[str, Any] = containers[0]
    return only


def env(workload: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container(workload).get("env", [])}


def secret_refs(workload: dict[str, Any]) -> list[str]:
    return [
        item["secretRef"]["name"] for item in container(workload).get("envFrom", []) if "secretRef" in item
    ]


@pytest.fixture(scope="module")
def default(chart: helm.Chart) -> Rendered:
    return render(chart)


@pytest.fixture(scope="module")
def production(chart: helm.Chart) -> Rendered:
    return render(chart, PRODUCTION)


@pytest.fixture(scope="module")
def dev_secrets(chart: helm.Chart) -> Rendered:
    return render(chart, {"secrets": DEV_SECRETS, "gateway": {"replicas": 2}})


@pytest.mark.parametrize("scenario", ["default", "production", "dev_secrets"])
def test_every_manifest_validates_strictly(scenario: str, request: pytest.FixtureRequest) -> None:
    rendered: Rendered = request.getfixturevalue(scenario)
    assert rendered.docs
    for doc in rendered.docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")


def test_default_kinds(default: Rendered) -> None:
    assert default.kinds() == ["ConfigMap", "Deployment", "Deployment", "Job", "Service", "ServiceAccount"]
    names = {doc["metadata"]["name"] for doc in default.of_kind("Deployment")}
    assert names == {"ledgerhook-gateway", "ledgerhook-worker"}


def test_production_kinds(production: Rendered) -> None:
    assert production.kinds() == [
        "ConfigMap",
        "Deployment",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Ingress",
        "Job",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]


def test_optional_parts_switch_off(chart: helm.Chart) -> None:
    rendered = render(
        chart,
        {"worker": {"enabled": False}, "migrate": {"enabled": False}, "serviceAccount": {"create": False}},
    )
    assert rendered.kinds() == ["ConfigMap", "Deployment", "Service"]
    assert pod_spec(rendered.one("Deployment"))["serviceAccountName"] == "default"


def test_probes_point_at_health_endpoints(default: Rendered) -> None:
    gateway = container(default.one("Deployment", "gateway"))
    assert gateway["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert gateway["command"] + gateway["args"] == ["ledgerhook", "serve"]


def test_worker_serves_health_and_metrics_on_its_port(default: Rendered, chart: helm.Chart) -> None:
    deployment = default.one("Deployment", "worker")
    worker = container(deployment)
    assert worker["command"] + worker["args"] == ["ledgerhook", "worker"]
    assert worker["ports"] == [{"name": "health", "containerPort": 9000, "protocol": "TCP"}]
    assert {"name": "LEDGERHOOK_WORKER_PORT", "value": "9000"} in worker["env"]
    assert worker["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "health"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9000"
    # No Service selects the worker: nothing but probes and scrapers talk to it.
    assert all(
        s["spec"]["selector"].get("app.kubernetes.io/component") != "worker"
        for s in default.of_kind("Service")
    )

    rendered = render(
        chart, {"worker": {"replicas": 4, "port": 9100, "livenessProbe": {"periodSeconds": 30}}}
    )
    worker_deployment = rendered.one("Deployment", "worker")
    assert worker_deployment["spec"]["replicas"] == 4
    assert container(worker_deployment)["livenessProbe"]["periodSeconds"] == 30
    assert container(worker_deployment)["ports"][0]["containerPort"] == 9100


@pytest.mark.parametrize(
    ("shutdown", "expected_env"),
    [
        ({}, ("10", "20")),
        ({"drainSeconds": 7.5, "timeoutSeconds": 42, "marginSeconds": 1}, ("7.5", "42")),
        ({"drainSeconds": 0, "timeoutSeconds": 0.2, "marginSeconds": 1}, ("0", "0.2")),
    ],
    ids=["defaults", "fractional-drain", "tiny-timeout"],
)
def test_grace_period_exceeds_drain_plus_shutdown_timeout(
    chart: helm.Chart, shutdown: dict[str, Any], expected_env: tuple[str, str]
) -> None:
    rendered = render(chart, {"shutdown": shutdown})
    for component in ("gateway", "worker"):
        deployment = rendered.one("Deployment", component)
        variables = env(deployment)
        drain = variables["LEDGERHOOK_SHUTDOWN_DRAIN_SECONDS"]
        timeout = variables["LEDGERHOOK_SHUTDOWN_TIMEOUT_SECONDS"]
        assert (drain, timeout) == expected_env
        grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
        assert isinstance(grace, int)
        assert grace > float(drain) + float(timeout)
        assert grace == math.ceil(float(drain)) + math.ceil(float(timeout)) + shutdown.get(
            "marginSeconds", 10
        )


def test_existing_secret_renders_no_secret_data(production: Rendered) -> None:
    assert production.of_kind("Secret") == []
    for doc in production.docs:
        assert "data" not in doc or doc["kind"] == "ConfigMap"
        assert "stringData" not in doc
    for workload in production.workloads():
        assert secret_refs(workload) == ["ledgerhook-credentials"]


def test_chart_created_secret_for_development(dev_secrets: Rendered) -> None:
    secrets = {doc["metadata"]["name"]: doc for doc in dev_secrets.of_kind("Secret")}
    assert set(secrets) == {"ledgerhook", "ledgerhook-migrate"}
    for secret in secrets.values():
        decoded = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
        assert decoded == DEV_SECRETS

    # The release's Secret is an ordinary resource; the migration's copy exists before the Job runs.
    assert "helm.sh/hook" not in secrets["ledgerhook"]["metadata"].get("annotations", {})
    hook_copy = secrets["ledgerhook-migrate"]["metadata"]["annotations"]
    job = dev_secrets.one("Job")
    assert hook_copy["helm.sh/hook"] == job["metadata"]["annotations"]["helm.sh/hook"]
    assert int(hook_copy["helm.sh/hook-weight"]) < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])

    assert secret_refs(job) == ["ledgerhook-migrate"]
    for component in ("gateway", "worker"):
        deployment = dev_secrets.one("Deployment", component)
        assert secret_refs(deployment) == ["ledgerhook"]
        assert "checksum/secret" in deployment["spec"]["template"]["metadata"]["annotations"]
    assert "chart values" in dev_secrets.notes


def test_no_secret_configured_is_explained(default: Rendered) -> None:
    assert default.of_kind("Secret") == []
    for workload in default.workloads():
        assert secret_refs(workload) == []
    assert "no Secret is configured" in default.notes
    assert "LEDGERHOOK_DATABASE_URL" in default.notes


def test_security_context_on_every_pod_and_container(production: Rendered) -> None:
    assert len(production.workloads()) == 3
    for workload in production.workloads():
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        assert spec["enableServiceLinks"] is False
        context = container(workload)["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        # A read-only root filesystem still needs a writable /tmp.
        mounts = {mount["mountPath"]: mount["name"] for mount in container(workload)["volumeMounts"]}
        assert mounts["/tmp"] in {volume["name"] for volume in spec["volumes"]}
    assert production.one("ServiceAccount")["automountServiceAccountToken"] is False


def test_migrate_job_is_a_pre_install_and_pre_upgrade_hook(production: Rendered) -> None:
    job = production.one("Job", "migrate")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {
        "before-hook-creation",
        "hook-succeeded",
    }
    migrate = container(job)
    assert migrate["command"] + migrate["args"] == ["ledgerhook", "migrate"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    # The ConfigMap does not exist yet at pre-install: the settings are inline.
    variables = env(job)
    assert variables["LEDGERHOOK_KAFKA_BOOTSTRAP_SERVERS"] == "kafka-0.kafka:9093,kafka-1.kafka:9093"
    assert variables["LEDGERHOOK_TOPIC_REPLICATION_FACTOR"] == "3"
    assert not any("configMapRef" in item for item in migrate.get("envFrom", []))
    # The chart's ServiceAccount does not exist yet either.
    assert pod_spec(job)["serviceAccountName"] == "default"


def test_config_is_a_configmap_loaded_by_every_long_running_container(chart: helm.Chart) -> None:
    config = {
        "LEDGERHOOK_MAX_BODY_BYTES": 2097152,
        "LEDGERHOOK_ACK_TIMEOUT_SECONDS": 1.5,
        "LEDGERHOOK_KAFKA_IDEMPOTENT_PRODUCER": False,
        "LEDGERHOOK_LOG_LEVEL": "DEBUG",
    }
    rendered = render(chart, {"config": config})
    configmap = rendered.one("ConfigMap")
    assert configmap["data"] == {
        "LEDGERHOOK_MAX_BODY_BYTES": "2097152",
        "LEDGERHOOK_ACK_TIMEOUT_SECONDS": "1.5",
        "LEDGERHOOK_KAFKA_IDEMPOTENT_PRODUCER": "false",
        "LEDGERHOOK_LOG_LEVEL": "DEBUG",
    }
    for component in ("gateway", "worker"):
        deployment = rendered.one("Deployment", component)
        refs = [
            item["configMapRef"]["name"]
            for item in container(deployment)["envFrom"]
            if "configMapRef" in item
        ]
        assert refs == [configmap["metadata"]["name"]]

    # A config change changes the pod template, so the pods roll.
    before = render(chart).one("Deployment", "gateway")["spec"]["template"]["metadata"]["annotations"]
    after = rendered.one("Deployment", "gateway")["spec"]["template"]["metadata"]["annotations"]
    assert before["checksum/config"] != after["checksum/config"]


def test_service_and_ingress_reach_the_gateway_only(production: Rendered) -> None:
    service = production.one("Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    selector = service["spec"]["selector"]
    gateway_labels = production.one("Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    worker_labels = production.one("Deployment", "worker")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= gateway_labels.items()
    assert not selector.items() <= worker_labels.items()

    ingress = production.one("Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "hooks.example.com"
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/webhooks"
    assert path["backend"]["service"] == {"name": service["metadata"]["name"], "port": {"name": "http"}}
    assert "https://hooks.example.com/webhooks" in production.notes


def test_autoscaling_and_disruption_budget(production: Rendered, default: Rendered) -> None:
    gateway = production.one("Deployment", "gateway")
    assert "replicas" not in gateway["spec"]  # the HPA owns it
    hpa = production.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": gateway["metadata"]["name"],
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    pdb = production.one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == gateway["spec"]["selector"]["matchLabels"]

    assert default.one("Deployment", "gateway")["spec"]["replicas"] == 1
    assert default.of_kind("PodDisruptionBudget") == []


def test_disruption_budget_follows_the_replica_count(chart: helm.Chart) -> None:
    assert render(chart, {"gateway": {"replicas": 2}}).of_kind("PodDisruptionBudget")
    one_by_hpa = {"gateway": {"replicas": 5, "autoscaling": {"enabled": True, "minReplicas": 1}}}
    assert render(chart, one_by_hpa).of_kind("PodDisruptionBudget") == []
    switched_off = {"gateway": {"replicas": 3, "podDisruptionBudget": {"enabled": False}}}
    assert render(chart, switched_off).of_kind("PodDisruptionBudget") == []


def test_topology_spread_selects_its_own_pods(production: Rendered) -> None:
    gateway = production.one("Deployment", "gateway")
    (constraint,) = pod_spec(gateway)["topologySpreadConstraints"]
    assert constraint["topologyKey"] == "topology.kubernetes.io/zone"
    assert constraint["labelSelector"]["matchLabels"] == gateway["spec"]["selector"]["matchLabels"]
    assert "topologySpreadConstraints" not in pod_spec(production.one("Deployment", "worker"))


def test_metrics_scrape_annotations_and_optional_service_monitor(
    chart: helm.Chart, default: Rendered, production: Rendered
) -> None:
    annotations = default.one("Deployment", "gateway")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8000"
    assert annotations["prometheus.io/path"] == "/metrics"
    for rendered in (default, production):
        assert not any(doc["apiVersion"].startswith("monitoring.coreos.com") for doc in rendered.docs)

    monitored = render(
        chart,
        {
            "metrics": {
                "scrapeAnnotations": False,
                "serviceMonitor": {"enabled": True, "labels": {"team": "x"}},
            }
        },
    )
    monitor = monitored.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["team"] == "x"
    service = monitored.one("Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    pod_annotations = monitored.one("Deployment", "gateway")["spec"]["template"]["metadata"]["annotations"]
    assert "prometheus.io/scrape" not in pod_annotations


def test_image_defaults_to_app_version(chart: helm.Chart, default: Rendered) -> None:
    app_version = chart.metadata["appVersion"]
    for workload in default.workloads():
        assert container(workload)["image"] == f"ghcr.io/ledgerhook/ledgerhook:{app_version}"
    digest = "sha256:" + "a" * 64
    pinned = render(chart, {"image": {"tag": "1.2.3", "digest": digest}})
    for workload in pinned.workloads():
        assert container(workload)["image"] == f"ghcr.io/ledgerhook/ledgerhook:1.2.3@{digest}"


def test_app_version_is_the_package_version(chart: helm.Chart) -> None:
    # The default image tag is the appVersion: the image the Dockerfile builds from this package.
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert chart.metadata["appVersion"] == project["version"]


def test_containers_run_the_images_entrypoint_with_one_command(production: Rendered) -> None:
    entrypoint = image_entrypoint()
    commands = {}
    for workload in production.workloads():
        runs = container(workload)
        # No override of the image's ENTRYPOINT, or one equal to it: only the command differs.
        assert runs.get("command", entrypoint) == entrypoint
        commands[workload["metadata"]["labels"]["app.kubernetes.io/component"]] = runs["args"]
    assert commands == {"gateway": image_command(), "worker": ["worker"], "migrate": ["migrate"]}


def test_standard_labels(production: Rendered) -> None:
    for doc in production.docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "ledgerhook"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == "0.1.0"


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"gateway": {"replicas": "three"}}, "replicas"),
        ({"gateway": {"port": 70000}}, "port"),
        ({"config": {"LEDGERHOOK_DATABASE_URL": "postgresql://leak"}}, "LEDGERHOOK_DATABASE_URL"),
        ({"config": {"LEDGERHOOK_SHUTDOWN_DRAIN_SECONDS": 3}}, "LEDGERHOOK_SHUTDOWN_DRAIN_SECONDS"),
        ({"config": {"LOG_LEVEL": "INFO"}}, "LOG_LEVEL"),
        ({"shutdown": {"timeoutSeconds": 0}}, "timeoutSeconds"),
        ({"existingSecret": "Not_A_Name"}, "existingSecret"),
        ({"replicas": 3}, "replicas"),
    ],
    ids=[
        "replicas-not-a-number",
        "port-out-of-range",
        "secret-in-configmap",
        "chart-managed-setting-in-config",
        "config-key-without-prefix",
        "zero-shutdown-timeout",
        "invalid-secret-name",
        "unknown-top-level-key",
    ],
)
def test_schema_rejects_bad_values(chart: helm.Chart, values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=complaint):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_config_refuses_every_secret_setting(chart: helm.Chart) -> None:
    """Each setting typed as a secret belongs in the Secret, never in the ConfigMap."""
    secret_settings = [
        f"LEDGERHOOK_{name.upper()}"
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation)
    ]
    assert "LEDGERHOOK_CONSOLE_SESSION_KEY" in secret_settings  # the search finds them
    for name in secret_settings:
        with pytest.raises(helm.HelmValuesError, match=name):
            chart.render({"config": {name: "leak"}}, name=RELEASE, namespace=NAMESPACE)


def test_hpa_bounds_are_checked(chart: helm.Chart) -> None:
    bad = {"gateway": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}}
    with pytest.raises(helm.HelmError, match="minReplicas must not exceed maxReplicas"):
        chart.render(bad, name=RELEASE, namespace=NAMESPACE)


def test_chart_lints_clean() -> None:
    for values in (None, PRODUCTION):
        report = helm.lint(CHART_DIR, values, strict=True, namespace=NAMESPACE)
        assert report["errors"] == []
        assert [message for message in report["messages"] if message["severity"] >= 2] == []
