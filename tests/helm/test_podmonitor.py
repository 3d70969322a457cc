"""The chart's PodMonitor: the Prometheus Operator scrapes the worker, which has no Service, through
its pods' health port, rendered with the gateway's ServiceMonitor and sharing its settings."""

from collections.abc import Iterator
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest

from tests.helm.test_chart import (
    CHART_DIR,
    KUBERNETES_VERSION,
    NAMESPACE,
    PRODUCTION,
    RELEASE,
    Rendered,
    container,
    render,
)
from tests.helm.test_observability import DURATION, STRINGS, operator_resource

# A PodMonitor as the Prometheus Operator accepts it, for the members the chart uses.
POD_MONITOR = operator_resource(
    "PodMonitor",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["selector"],
        "properties": {
            "selector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"matchLabels": STRINGS},
            },
            "namespaceSelector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "any": {"type": "boolean"},
                    "matchNames": {"type": "array", "items": {"type": "string"}},
                },
            },
            "podMetricsEndpoints": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string", "minLength": 1},
                        "path": {"type": "string"},
                        "interval": {"type": "string", "pattern": DURATION},
                        "scrapeTimeout": {"type": "string", "pattern": DURATION},
                    },
                },
            },
        },
    },
)
MONITORED = {"metrics": {"serviceMonitor": {"enabled": True}}}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def pod_monitors(rendered: Rendered) -> list[dict[str, Any]]:
    return rendered.of_kind("PodMonitor")


def test_no_pod_monitor_unless_the_service_monitor_is_enabled(chart: helm.Chart) -> None:
    assert pod_monitors(render(chart)) == []
    assert pod_monitors(render(chart, PRODUCTION)) == []
    assert pod_monitors(render(chart, {"grafanaDashboard": {"enabled": True}})) == []


def test_the_pod_monitor_scrapes_the_worker_pods_on_their_health_port(chart: helm.Chart) -> None:
    rendered = render(chart, MONITORED)
    (monitor,) = pod_monitors(rendered)
    jsonschema.validate(monitor, POD_MONITOR)
    assert monitor["metadata"]["name"] == f"{RELEASE}-worker"
    assert monitor["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    assert monitor["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE

    worker = rendered.one("Deployment", "worker")
    pod_labels = worker["spec"]["template"]["metadata"]["labels"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    # The worker's pods only: the gateway's (scraped by the ServiceMonitor) are not selected twice.
    gateway_labels = rendered.one("Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= gateway_labels.items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}

    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    ports = {port["name"]: port["containerPort"] for port in container(worker)["ports"]}
    assert endpoint["port"] in ports
    assert ports[endpoint["port"]] == 9000  # the worker's LEDGERHOOK_WORKER_PORT, serving /metrics
    assert endpoint["path"] == "/metrics"
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("30s", "10s")

    # Beside the gateway's ServiceMonitor, which stays as it was.
    service_monitor = rendered.one("ServiceMonitor")
    assert service_monitor["spec"]["endpoints"][0]["port"] == "http"


def test_the_pod_monitor_follows_the_worker_port_and_the_service_monitor_settings(
    chart: helm.Chart,
) -> None:
    values = {
        "worker": {"port": 9100},
        "metrics": {
            "serviceMonitor": {
                "enabled": True,
                "interval": "15s",
                "scrapeTimeout": "5s",
                "labels": {"release": "kube-prometheus-stack"},
            }
        },
    }
    rendered = render(chart, values)
    (monitor,) = pod_monitors(rendered)
    jsonschema.validate(monitor, POD_MONITOR)
    service_monitor = rendered.one("ServiceMonitor")
    for labelled in (monitor, service_monitor):
        assert labelled["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("15s", "5s")
    assert service_monitor["spec"]["endpoints"][0]["interval"] == "15s"
    # The port is named, so a new port number needs nothing more.
    ports = {
        port["name"]: port["containerPort"]
        for port in container(rendered.one("Deployment", "worker"))["ports"]
    }
    assert ports[endpoint["port"]] == 9100


def test_no_pod_monitor_without_a_worker(chart: helm.Chart) -> None:
    rendered = render(chart, {**MONITORED, "worker": {"enabled": False}})
    assert pod_monitors(rendered) == []
    assert len(rendered.of_kind("ServiceMonitor")) == 1


def test_every_manifest_validates_with_the_monitors(chart: helm.Chart) -> None:
    values = {**PRODUCTION, "metrics": {"serviceMonitor": {"enabled": True}}}
    rendered = render(chart, values)
    assert len(pod_monitors(rendered)) == 1
    for doc in rendered.docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # custom resources: the Kubernetes schemas do not know them (POD_MONITOR above)
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_chart_lints_clean_with_the_monitors() -> None:
    report = helm.lint(CHART_DIR, MONITORED, strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [message for message in report["messages"] if message["severity"] >= 2] == []
