"""The chart's Grafana dashboard and PrometheusRule, held to the code so they cannot drift: every
PromQL expression parses; every metric it names is exported by a real gateway and a real
`ledgerhook worker`, scraped after a little traffic, with the labels and label values it uses; the
chart renders both only when asked; every alert links its runbook section in docs/operations.md."""

import ast
import asyncio
import functools
import json
import re
import signal
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import helm_python as helm
import jsonschema
import kubernetes_validate
import orjson
import promql_parser
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from gateway.dev.embedded import EmbeddedBroker
from gateway.dev.emulator import Emulator
from gateway.dev.samples import signed_quickbooks
from gateway.settings import Settings
from provider_auth.accounts.store import ConnectionStatus
from provider_auth.providers import Provider
from provider_auth.vault import KeyRing
from tests.fanout.worker_process import WorkerProcess, stop_every_worker
from tests.helm.test_chart import CHART_DIR, KUBERNETES_VERSION, NAMESPACE, RELEASE, Rendered, render
from tests.paths import REPO_ROOT
from tests.provider_auth.tokens.token_support import (
    CLIENT_ID,
    CLIENT_SECRET,
    TokenStack,
    key_entries,
    register_clients,
    token_stack,
)
from tests.support import (
    ADMIN_TOKEN,
    QUICKBOOKS_TOKENS,
    RunningGateway,
    fresh_database,
    make_settings,
    running_gateway,
)

DASHBOARD = CHART_DIR / "dashboards" / "ledgerhook.json"
OPERATIONS = REPO_ROOT / "docs" / "operations.md"
PACKAGES = ("gateway", "fanout", "provider_auth")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
BOTH = {"grafanaDashboard": {"enabled": True}, "prometheusRule": {"enabled": True}}
ALERTS = {
    "LedgerhookIngress503s",
    "LedgerhookSignatureFailureSpike",
    "LedgerhookRawLagGrowing",
    "LedgerhookQuarantineGrowing",
    "LedgerhookTokenRefreshFailures",
    "LedgerhookAuthenticationErrors",
    "LedgerhookPollWatermarkLag",
}
# Gauges every worker replica samples from the same tables: N replicas report the same figure N times.
REPLICATED_GAUGES = frozenset({"ledgerhook_connections", "ledgerhook_token_connections"})
# Labels Prometheus puts on a target's series when it scrapes them: no process exports them.
TARGET_LABELS = frozenset({"namespace", "job", "instance", "pod", "container", "service", "endpoint"})
# What Grafana puts in place of its built-in variables before a query reaches Prometheus.
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__interval": "30s", "__range": "6h"}
# Sample names of a family of each type, as the text exposition writes them.
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count"),
}
QB = Provider.QUICKBOOKS
# Long enough for the worker's first sweep, refresh, backfill and sync; usually a few seconds.
TRAFFIC_SECONDS = 60.0

# Pieces of the Prometheus Operator's CRDs (monitoring.coreos.com/v1): a duration, a string map.
DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}


def operator_resource(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of a Prometheus Operator resource (monitoring.coreos.com/v1) of `kind` with
    `spec`, for the members the chart uses; unknown members are refused, as a strict apply would."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {
                        "type": "string",
                        "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                        "maxLength": 253,
                    },
                    "namespace": {"type": "string"},
                    "labels": STRINGS,
                    "annotations": STRINGS,
                },
            },
            "spec": spec,
        },
    }


PROMETHEUS_RULE = operator_resource(
    "PrometheusRule",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["groups"],
        "properties": {
            "groups": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name", "rules"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": {"type": "string", "pattern": DURATION},
                        "rules": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["alert", "expr", "labels", "annotations"],
                                "properties": {
                                    "alert": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                                    "expr": {"type": "string", "minLength": 1},
                                    "for": {"type": "string", "pattern": DURATION},
                                    "keep_firing_for": {"type": "string", "pattern": DURATION},
                                    "labels": STRINGS,
                                    "annotations": STRINGS,
                                },
                            },
                        },
                    },
                },
            },
        },
    },
)


# ----- the expressions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    """One PromQL expression and where it comes from."""

    where: str
    promql: str

    def parsed(self) -> promql_parser.Expr:
        try:
            return promql_parser.parse(self.promql)
        except ValueError as exc:
            raise AssertionError(f"{self.where}: {exc}: {self.promql}") from None


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def every_panel(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside rows included."""
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def grafana_to_promql(query: str, variables: dict[str, str]) -> str:
    """The query with Grafana's variables replaced, as Grafana sends it to Prometheus."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in variables, f"{query}: ${name} is neither a dashboard variable nor a Grafana built-in"
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, query)


def dashboard_expressions(dashboard: dict[str, Any]) -> list[Expression]:
    """Each panel query, with the variables as their "All" value."""
    variables = dict(GRAFANA_BUILTINS)
    for variable in dashboard["templating"]["list"]:
        variables[variable["name"]] = variable.get("allValue") or ".*"
    return [
        Expression(
            f"panel {panel['title']!r} {target['refId']}", grafana_to_promql(target["expr"], variables)
        )
        for panel in every_panel(dashboard)
        for target in panel.get("targets", [])
    ]


def variable_metrics(dashboard: dict[str, Any]) -> set[str]:
    """The metrics the dashboard's variable queries read (`label_values(metric, label)`)."""
    metrics = set()
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((\w+),\s*\w+\)", variable["definition"])
            assert found, variable["definition"]
            metrics.add(found.group(1))
    return metrics


def rules_of(rendered: Rendered) -> dict[str, dict[str, Any]]:
    (rule,) = rendered.of_kind("PrometheusRule")
    return {item["alert"]: item for group in rule["spec"]["groups"] for item in group["rules"]}


def rule_expressions(rendered: Rendered) -> list[Expression]:
    return [Expression(f"alert {name}", rule["expr"]) for name, rule in rules_of(rendered).items()]


@pytest.fixture(scope="module")
def expressions(chart: helm.Chart) -> list[Expression]:
    """Every expression of the dashboard and of the rules the chart renders with every alert on."""
    return dashboard_expressions(load_dashboard()) + rule_expressions(render(chart, BOTH))


def selectors(expr: promql_parser.Expr) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(expr, visit)
    return found


def metric_name(selector: promql_parser.VectorSelector) -> str:
    assert selector.name, f"{selector}: a selector without a metric name"
    return selector.name


def referenced_metrics(expressions: list[Expression]) -> set[str]:
    return {metric_name(s) for e in expressions for s in selectors(e.parsed())}


# ----- what the processes export -----------------------------------------------------------------


@dataclass
class Exported:
    """The metric families of a gateway and a worker, from their own /metrics."""

    families: list[Metric]

    @functools.cached_property
    def names(self) -> set[str]:
        """Every sample name the families declare, samples or not yet (`_total`, `_bucket`, ...)."""
        return {
            family.name + suffix for family in self.families for suffix in SUFFIXES.get(family.type, ("",))
        }

    def sampled(self) -> set[str]:
        """Sample names that have at least one series."""
        return {sample.name for family in self.families for sample in family.samples}

    def labels(self, name: str) -> set[str]:
        return {label for sample in self._samples(name) for label in sample.labels}

    def values(self, name: str, label: str) -> set[str]:
        return {sample.labels[label] for sample in self._samples(name) if label in sample.labels}

    def series(self, name: str, *labels: str) -> dict[tuple[str, ...], float]:
        """The value of each series of `name`, by the values of `labels`."""
        return {
            tuple(sample.labels[label] for label in labels): sample.value for sample in self._samples(name)
        }

    def _samples(self, name: str) -> list[Any]:
        return [sample for family in self.families for sample in family.samples if sample.name == name]


def scrape(*urls: str) -> Exported:
    families: list[Metric] = []
    for url in urls:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 (loopback http)
            families.extend(text_string_to_metric_families(answer.read().decode()))
    return Exported(families)


@functools.cache
def source_literals() -> frozenset[str]:
    """Every string literal in the packages: the label values the code can emit are among them."""
    literals: set[str] = set()
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    literals.add(node.value)
    return frozenset(literals)


def new_realm() -> str:
    return str(uuid.uuid4().int)[:16]


def invoice_update(realm: str, at: datetime) -> bytes:
    """A QuickBooks delivery: invoice 1001 of `realm` updated at `at`."""
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    entity = {"name": "Invoice", "id": "1001", "operation": "Update", "lastUpdated": stamp}
    return orjson.dumps(
        {"eventNotifications": [{"realmId": realm, "dataChangeEvent": {"entities": [entity]}}]}
    )


async def send_traffic(stack: TokenStack, gateway: RunningGateway) -> None:
    """Deliveries stored, superseded, quarantined and refused; a connection whose token is due for
    refresh, polled and backfilled; one whose grant the customer revoked."""
    realm, revoked_realm, stranger = new_realm(), new_realm(), new_realm()
    grant = stack.emu.issue_grant(QB, CLIENT_ID, accounts=[realm])
    connection_id, _, _ = await stack.connect(QB, account=realm, grant=grant, expires_in=2)
    stack.emu.book(QB, realm).create("Customer", DisplayName="Acme")
    revoked = stack.emu.issue_grant(QB, CLIENT_ID, accounts=[revoked_realm])
    await stack.connect(QB, account=revoked_realm, grant=revoked)
    # Its first poll meets a 401, the refresh `invalid_grant`: the grant needs reauthorization.
    assert stack.emu.revoke(QB, revoked.grant_id)

    now = datetime.now(UTC).replace(microsecond=0)
    url = f"{gateway.base_url}/webhooks/quickbooks"
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as http:
        # Published; then an older version of the same invoice, which reconciliation drops; then an
        # account no connection has, which is quarantined.
        for body in (
            invoice_update(realm, now),
            invoice_update(realm, now - timedelta(minutes=1)),
            invoice_update(stranger, now),
        ):
            sample = signed_quickbooks(body, QUICKBOOKS_TOKENS[0])
            async with http.post(url, data=sample.body, headers=sample.headers) as answer:
                assert answer.status == 200
        forged = {"intuit-signature": "Zm9yZ2Vk", "content-type": "application/json"}
        async with http.post(url, data=invoice_update(realm, now), headers=forged) as answer:
            assert answer.status == 401
        backfill = {"since": (now - timedelta(days=1)).isoformat()}
        async with http.post(
            f"{gateway.base_url}/admin/v1/connections/{connection_id}/backfill", json=backfill, headers=admin
        ) as answer:
            assert answer.status == 202, await answer.text()


def worker_env(settings: Settings) -> dict[str, str]:
    """What `ledgerhook worker` needs beyond the test's database and topics (names without the
    `LEDGERHOOK_` prefix): the key ring and the QuickBooks app at the emulator, short intervals."""
    return {
        "ENCRYPTION_KEYS": key_entries(settings),
        "QUICKBOOKS_CLIENT_ID": CLIENT_ID,
        "QUICKBOOKS_CLIENT_SECRET": CLIENT_SECRET,
        "QUICKBOOKS_TOKEN_URL": settings.quickbooks_token_url,
        "QUICKBOOKS_API_BASE_URL": settings.quickbooks_api_base_url,
        "POLL_SYNC_SECONDS": "1",
        "POLL_INTERVAL_SECONDS": "1",
        "SWEEP_INTERVAL_SECONDS": "1",
        "TOKEN_REFRESH_INTERVAL_SECONDS": "1",
    }


async def scrape_after_traffic(postgres_url: str, bootstrap: str, wanted: set[str]) -> Exported:
    """A gateway in this loop and a `ledgerhook worker` process on a database of their own, after
    traffic, scraped once every metric in `wanted` has series (or the time is up)."""
    async with fresh_database(postgres_url, "observability") as database_url, Emulator() as emu:
        register_clients(emu)
        settings = make_settings(
            database_url,
            bootstrap,
            encryption_keys=f"k1:{KeyRing.generate_key()}",
            worker_group_id=f"fanout-{uuid.uuid4().hex[:8]}",
            quickbooks_client_id=CLIENT_ID,
            quickbooks_client_secret=CLIENT_SECRET,
            quickbooks_token_url=emu.token_url(QB),
            quickbooks_api_base_url=emu.url(f"/{QB.value}"),
        )
        async with token_stack(settings, emulator=emu) as stack, running_gateway(settings) as gateway:
            await send_traffic(stack, gateway)
            worker = WorkerProcess(settings, **worker_env(settings))
            urls = (f"{gateway.base_url}/metrics", f"http://127.0.0.1:{worker.port}/metrics")
            try:
                deadline = time.monotonic() + TRAFFIC_SECONDS
                while True:
                    try:
                        exported = await asyncio.to_thread(scrape, *urls)
                    except OSError:  # the worker's port is not open yet
                        exported = Exported([])
                    if wanted <= exported.sampled() or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                assert exported.families, f"the worker never answered /metrics:\n{worker.logs()}"
                return exported
            finally:
                await worker.stop(signal.SIGTERM)
                stop_every_worker()


@pytest.fixture(scope="module")
def exported(postgres_url: str, broker: EmbeddedBroker, expressions: list[Expression]) -> Exported:
    wanted = referenced_metrics(expressions) | variable_metrics(load_dashboard())
    return asyncio.run(scrape_after_traffic(postgres_url, broker.bootstrap, wanted))


# ----- expressions against the code ------------------------------------------------------------------


def test_every_expression_parses(expressions: list[Expression]) -> None:
    assert len(expressions) > len(ALERTS)
    failures = []
    for expression in expressions:
        try:
            expression.parsed()
        except AssertionError as exc:
            failures.append(str(exc))
    assert failures == []


def test_every_metric_named_is_exported_by_the_gateway_or_the_worker(
    expressions: list[Expression], exported: Exported
) -> None:
    used = referenced_metrics(expressions) | variable_metrics(load_dashboard())
    assert used - exported.names == set(), "named but exported by neither process"
    # Labelled families have series only once something happened: the traffic made them all.
    assert used - exported.sampled() == set(), "exported, but the traffic gave them no series"


def test_every_label_used_is_on_the_metrics_series(expressions: list[Expression], exported: Exported) -> None:
    failures: list[str] = []
    for expression in expressions:
        tree = expression.parsed()
        result_labels(tree, labels_of=exported.labels, failures=failures, where=expression.where)
        for selector in selectors(tree):
            name = metric_name(selector)
            for matcher in selector.matchers.matchers:
                if matcher.name in TARGET_LABELS:
                    continue
                if matcher.name not in exported.labels(name):
                    failures.append(f"{expression.where}: {name} has no label {matcher.name!r}")
                    continue
                for value in matched_values(matcher):
                    if value not in exported.values(name, matcher.name) and value not in source_literals():
                        failures.append(
                            f"{expression.where}: {name}{{{matcher.name}}} never takes the value {value!r}"
                        )
    assert failures == []


def matched_values(matcher: promql_parser.Matcher) -> list[str]:
    """The label values a matcher names: its value, or each alternative of a plain `a|b` regex."""
    if matcher.op in (promql_parser.MatchOp.Equal, promql_parser.MatchOp.NotEqual):
        return [matcher.value]
    if re.fullmatch(r"\w+(\|\w+)*", matcher.value):
        return matcher.value.split("|")
    return []


def result_labels(
    expr: promql_parser.Expr, *, labels_of: Callable[[str], set[str]], failures: list[str], where: str
) -> frozenset[str]:
    """The labels `expr`'s series can carry; a grouping or matching on another label is a failure."""

    def inner(node: promql_parser.Expr) -> frozenset[str]:
        return result_labels(node, labels_of=labels_of, failures=failures, where=where)

    if isinstance(expr, promql_parser.VectorSelector):
        return frozenset(labels_of(metric_name(expr))) | TARGET_LABELS
    if isinstance(expr, promql_parser.MatrixSelector):
        return inner(expr.vector_selector)
    if isinstance(expr, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)):
        return inner(expr.expr)
    if isinstance(expr, promql_parser.AggregateExpr):
        below = inner(expr.expr)
        if expr.modifier is None:
            return frozenset()
        grouping = frozenset(expr.modifier.labels)
        if grouping - below:
            failures.append(f"{where}: {expr} groups by {sorted(grouping - below)}, which its series lack")
        return grouping if expr.modifier.type == promql_parser.AggModifierType.By else below - grouping
    if isinstance(expr, promql_parser.Call):
        args = frozenset().union(*(inner(arg) for arg in expr.args if isinstance(arg, promql_parser.Expr)))
        return args - {"le"} if expr.func.name == "histogram_quantile" else args
    if isinstance(expr, promql_parser.BinaryExpr):
        left, right = inner(expr.lhs), inner(expr.rhs)
        matching = expr.modifier.matching if expr.modifier else None
        if matching is not None and matching.type == promql_parser.LabelModifierType.Include:
            missing = frozenset(matching.labels) - (left & right)
            if missing:
                failures.append(f"{where}: {expr} matches on {sorted(missing)}, missing on one side")
        return left | right
    return frozenset()  # number and string literals


def test_gauges_every_worker_reports_are_taken_once_per_namespace(expressions: list[Expression]) -> None:
    """Summing a replicated gauge over the workers would multiply it by their number: each of its
    selectors sits right under a `max` that keeps the namespace apart."""
    failures: list[str] = []
    checked = 0

    def visit(node: promql_parser.Expr) -> None:
        nonlocal checked
        if not isinstance(node, promql_parser.AggregateExpr):
            return
        inner = node.expr
        while isinstance(inner, promql_parser.ParenExpr):
            inner = inner.expr
        if isinstance(inner, promql_parser.VectorSelector) and inner.name in REPLICATED_GAUGES:
            checked += 1
            grouping = node.modifier.labels if node.modifier else []
            kind = node.modifier.type if node.modifier else None
            if (
                str(node.op) != "max"
                or kind != promql_parser.AggModifierType.By
                or "namespace" not in grouping
            ):
                failures.append(f"{node}")

    for expression in expressions:
        promql_parser.walk(expression.parsed(), visit)
    used = sum(
        1 for e in expressions for selector in selectors(e.parsed()) if selector.name in REPLICATED_GAUGES
    )
    assert checked == used >= 2, "a replicated gauge read without an aggregation"
    assert failures == []


def test_the_worker_exports_every_connection_status_with_zeros(exported: Exported) -> None:
    # The traffic's database holds two QuickBooks connections (one may be needs_reauth by now);
    # every other provider and status has a series too, at 0.
    counts = exported.series("ledgerhook_connections", "provider", "status")
    assert counts.keys() == {(p.value, s.value) for p in Provider for s in ConnectionStatus}
    assert sum(counts.values()) == 2
    assert counts[(QB.value, ConnectionStatus.ACTIVE.value)] >= 1
    assert sum(value for (provider, _), value in counts.items() if provider == QB.value) == 2


# ----- the dashboard ---------------------------------------------------------------------------------


def test_dashboard_is_valid_and_every_panel_reads_the_datasource_variable() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "ledgerhook"
    assert dashboard["schemaVersion"] >= 39  # Grafana 11 and later
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["datasource"] == DATASOURCE

    panels = every_panel(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    queried = [panel for panel in panels if panel["type"] != "row"]
    assert len(queried) >= 20
    for panel in queried:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(target["datasource"] == DATASOURCE for target in panel["targets"]), panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_dashboard_panels_sit_side_by_side_without_overlapping() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in every_panel(load_dashboard()):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = panel["title"]


def test_chart_ships_the_dashboard_for_the_grafana_sidecar_only_when_enabled(chart: helm.Chart) -> None:
    def dashboards(rendered: Rendered) -> list[dict[str, Any]]:
        return [
            doc for doc in rendered.of_kind("ConfigMap") if doc["metadata"]["name"].endswith("-dashboard")
        ]

    assert dashboards(render(chart)) == []
    annotated = {"grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Ledgerhook"}}}
    (configmap,) = dashboards(render(chart, annotated))
    kubernetes_validate.validate(configmap, KUBERNETES_VERSION, strict=True)
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Ledgerhook"}
    assert "namespace" not in configmap["metadata"]
    assert json.loads(configmap["data"]["ledgerhook.json"]) == load_dashboard()

    relabelled = {
        "grafanaDashboard": {
            "enabled": True,
            "label": "dashboards.example.com/load",
            "labelValue": "yes",
            "namespace": "monitoring",
        }
    }
    (moved,) = dashboards(render(chart, relabelled))
    assert moved["metadata"]["labels"]["dashboards.example.com/load"] == "yes"
    assert "grafana_dashboard" not in moved["metadata"]["labels"]
    assert moved["metadata"]["namespace"] == "monitoring"


# ----- the alerts ------------------------------------------------------------------------------------


def test_chart_renders_the_prometheus_rule_only_when_enabled(chart: helm.Chart) -> None:
    assert render(chart).of_kind("PrometheusRule") == []
    assert render(chart, {"grafanaDashboard": {"enabled": True}}).of_kind("PrometheusRule") == []

    rendered = render(chart, BOTH)
    (rule,) = rendered.of_kind("PrometheusRule")
    jsonschema.validate(rule, PROMETHEUS_RULE)
    assert rule["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    rules = rules_of(rendered)
    assert set(rules) == ALERTS
    for name, alert in rules.items():
        assert alert["labels"]["severity"], name
        assert {"summary", "description", "runbook_url"} <= alert["annotations"].keys(), name
        # The release's series only: every selector carries the namespace.
        for selector in selectors(promql_parser.parse(alert["expr"])):
            assert f'namespace="{NAMESPACE}"' in str(selector), f"{name}: {selector}"


def test_alert_thresholds_durations_labels_and_matchers_come_from_values(chart: helm.Chart) -> None:
    values = {
        "prometheusRule": {
            "enabled": True,
            "labels": {"release": "kube-prometheus-stack"},
            "alertLabels": {"team": "integrations"},
            "runbookBaseUrl": "https://runbooks.example.com/ledgerhook.md",
            "matchers": 'job="ledgerhook"',
            "alerts": {
                "ingress503s": {"threshold": 0.05, "for": "2m", "severity": "page"},
                "rawLagGrowing": {"threshold": 2500000},
                "pollWatermarkLag": {"enabled": False},
            },
        }
    }
    rendered = render(chart, values)
    (rule,) = rendered.of_kind("PrometheusRule")
    jsonschema.validate(rule, PROMETHEUS_RULE)
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rules = rules_of(rendered)
    assert set(rules) == ALERTS - {"LedgerhookPollWatermarkLag"}

    ingress = rules["LedgerhookIngress503s"]
    assert ingress["for"] == "2m"
    assert ingress["labels"] == {"severity": "page", "team": "integrations"}
    assert threshold(ingress) == 0.05
    # Whole numbers are written out, never in exponent form.
    assert "> 2500000" in rules["LedgerhookRawLagGrowing"]["expr"]
    assert threshold(rules["LedgerhookRawLagGrowing"]) == 2500000
    for name, alert in rules.items():
        assert alert["annotations"]["runbook_url"].startswith("https://runbooks.example.com/ledgerhook.md#")
        for selector in selectors(promql_parser.parse(alert["expr"])):
            text = str(selector)
            assert 'job="ledgerhook"' in text and "namespace" not in text, f"{name}: {text}"


def threshold(alert: dict[str, Any]) -> float:
    """The number the alert's expression compares with last (the right side of its comparison)."""
    tree = promql_parser.parse(alert["expr"])
    while isinstance(tree, promql_parser.BinaryExpr) and not isinstance(
        tree.rhs, promql_parser.NumberLiteral
    ):
        tree = tree.lhs
    assert isinstance(tree, promql_parser.BinaryExpr) and isinstance(tree.rhs, promql_parser.NumberLiteral)
    return tree.rhs.val


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(markdown: str) -> list[tuple[int, str]]:
    """(level, text) of every heading outside code blocks."""
    found = []
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"(#{1,6}) (.+)", line)):
            found.append((len(match.group(1)), match.group(2)))
    return found


def runbook_sections() -> dict[str, str]:
    """Anchor -> heading of each section under "## Runbooks" in docs/operations.md."""
    sections: dict[str, str] = {}
    inside = False
    for level, text in headings(OPERATIONS.read_text()):
        if level <= 2:
            inside = text == "Runbooks"
        elif inside and level == 3:
            sections[github_anchor(text)] = text
    return sections


def test_every_alert_links_its_runbook_section(chart: helm.Chart) -> None:
    base = "https://github.com/ledgerhook/ledgerhook/blob/main/docs/operations.md#"
    sections = runbook_sections()
    for name, alert in rules_of(render(chart, BOTH)).items():
        url = alert["annotations"]["runbook_url"]
        assert url.startswith(base), url
        anchor = url.removeprefix(base)
        assert anchor in sections, f"{name}: docs/operations.md has no runbook section #{anchor}"
        assert sections[anchor] == name
    # And no runbook for an alert that does not exist.
    assert set(sections.values()) == ALERTS


def test_operations_links_within_the_page_resolve() -> None:
    text = OPERATIONS.read_text()
    anchors = {github_anchor(heading) for _, heading in headings(text)}
    links = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert links
    assert links - anchors == set()


def test_chart_lints_clean_with_dashboard_and_alerts() -> None:
    report = helm.lint(CHART_DIR, BOTH, strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [message for message in report["messages"] if message["severity"] >= 2] == []


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"prometheusRule": {"alerts": {"ingress503s": {"for": "five minutes"}}}}, "for"),
        ({"prometheusRule": {"alerts": {"quarantineGrowing": {"threshold": -1}}}}, "threshold"),
        ({"prometheusRule": {"alerts": {"diskFull": {"enabled": True}}}}, "diskFull"),
        ({"prometheusRule": {"runbookBaseUrl": "docs/operations.md"}}, "runbookBaseUrl"),
        ({"grafanaDashboard": {"label": "not a label"}}, "label"),
        ({"grafanaDashboard": {"namespace": "Not_A_Namespace"}}, "namespace"),
    ],
    ids=[
        "duration-in-words",
        "negative-threshold",
        "unknown-alert",
        "runbook-url-not-absolute",
        "invalid-label-name",
        "invalid-namespace",
    ],
)
def test_schema_rejects_bad_observability_values(
    chart: helm.Chart, values: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=complaint):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
