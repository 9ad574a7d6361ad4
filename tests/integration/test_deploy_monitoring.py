"""Meta-monitoring: deploy/prometheus/driftowner.rules.yml passes `promtool check rules` and its
unit tests (`promtool test rules`), and the rules and the Grafana dashboard
(deploy/grafana/driftowner.json) name only metrics driftowner really exports."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftowner.metrics import Metrics
from driftowner.store import SqlStore
from tests.conftest import require_binary

DEPLOY = Path(__file__).parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "driftowner.rules.yml"
RULES_TESTS = DEPLOY / "prometheus" / "driftowner.rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "driftowner.json"
STANDARD = {"up"}
"""Metrics Prometheus itself records for every target."""
PROBE = {"probe_success"}
"""The blackbox exporter's probe result: the only readiness signal (driftowner exports none)."""
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, label names and keywords
    left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(GROUPING, " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group() in KEYWORDS:
            continue
        names.add(match.group())
    return names


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every sample name driftowner's /metrics can carry, from its own registry."""
    store = SqlStore(f"sqlite:///{tmp_path_factory.mktemp('metrics')}/store.db")
    store.open()
    try:
        metrics = Metrics(store, lambda: datetime.now(UTC))
        suffixes = {
            "counter": ["_total"],
            "histogram": ["_bucket", "_sum", "_count"],
            "info": ["_info"],
            "gauge": [""],
        }
        return {
            family.name + suffix
            for family in metrics.registry.collect()
            for suffix in suffixes[family.type]
        }
    finally:
        store.close()


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (a, b) (rate(foo_total{x="y", le="+Inf"}[5m])) > on(b) bar', {"foo_total", "bar"}),
        ("histogram_quantile(0.9, sum by (le) (rate(x_bucket[1d] offset 1h)))", {"x_bucket"}),
        ('up{job="driftowner"} == 0 and ignoring(job) absent(q)', {"up", "q"}),
    ],
)
def test_metric_names_finds_every_selected_metric(expr: str, names: set[str]) -> None:
    """The checker below is only as good as this: it finds each selector's metric name and
    nothing else (no functions, label names, durations or keywords)."""
    assert metric_names(expr) == names


def test_exported_names_include_the_contract_metrics(exported: set[str]) -> None:
    """The list the checks compare against is the real one (counters with _total, histograms
    with _bucket), not an empty set that would let anything through."""
    assert {
        "driftowner_source_up",
        "driftowner_source_errors_total",
        "driftowner_evaluation_duration_seconds_bucket",
        "driftowner_incidents_open",
        "driftowner_incident_slo_breaches_total",
        "driftowner_outbox_pending",
        "driftowner_leader",
        "driftowner_build_info",
    } <= exported


def test_rules_pass_promtool_check_rules() -> None:
    """Prometheus's own checker accepts the rules file (PromQL parses, templates render)."""
    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_pass_their_promtool_unit_tests() -> None:
    """Each alert fires on the series that should fire it and stays silent otherwise, as
    deploy/prometheus/driftowner.rules.test.yml states."""
    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "test", "rules", RULES_TESTS.name],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULES_TESTS.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_rules_cover_every_failure_the_issue_names() -> None:
    """Daemon down, not ready, source down, query errors, outbox backlog, failing
    notifications, SLO breaches and no leader each have an alert."""
    alerts = {rule["alert"] for rule in _rules()}
    assert {
        "DriftownerDown",
        "DriftownerNotReady",
        "DriftownerSourceDown",
        "DriftownerQueryErrorsRising",
        "DriftownerOutboxGrowing",
        "DriftownerNotificationsFailing",
        "DriftownerSLOBreached",
        "DriftownerNoLeader",
    } <= alerts


def test_every_alert_is_unit_tested() -> None:
    """No alert in the rules file goes without a promtool test case."""
    tests = yaml.safe_load(RULES_TESTS.read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    assert {rule["alert"] for rule in _rules()} == tested


def test_rules_name_only_exported_metrics(exported: set[str]) -> None:
    """Every metric the rules select is one driftowner exports, `up`, or the blackbox
    exporter's probe_success."""
    for rule in _rules():
        unknown = metric_names(rule["expr"]) - exported - STANDARD - PROBE
        assert not unknown, f"{rule['alert']}: {sorted(unknown)}"


def _targets(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "expr" in node:
            yield node
        for value in node.values():
            yield from _targets(value)
    elif isinstance(node, list):
        for value in node:
            yield from _targets(value)


def test_dashboard_names_only_exported_metrics(exported: set[str]) -> None:
    """The dashboard parses, and each panel's PromQL selects only metrics driftowner exports
    (or `up`)."""
    dashboard = json.loads(DASHBOARD.read_text())
    targets = list(_targets(dashboard))
    assert len(targets) >= 15
    for target in targets:
        names = metric_names(target["expr"])
        assert names, target["expr"]
        assert not names - exported - STANDARD, target["expr"]


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    """Incidents open by owner and system, time to acknowledge and resolve, SLO breaches,
    source health, the outbox and evaluation time each have a panel."""
    exprs = " ".join(t["expr"] for t in _targets(json.loads(DASHBOARD.read_text())))
    for metric in (
        "driftowner_incidents_open",
        "driftowner_incident_time_to_acknowledge_seconds_bucket",
        "driftowner_incident_time_to_resolve_seconds_bucket",
        "driftowner_incident_slo_breaches_total",
        "driftowner_source_up",
        "driftowner_outbox_pending",
        "driftowner_evaluation_duration_seconds_bucket",
    ):
        assert metric in exprs
    assert "sum by (owner, system) (driftowner_incidents_open)" in exprs


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every dashboard query (checked as recording rules)."""
    promtool = require_binary("promtool")
    exprs = [t["expr"] for t in _targets(json.loads(DASHBOARD.read_text()))]
    recorded = [{"record": f"dashboard:query{i}", "expr": e} for i, e in enumerate(exprs)]
    rules = {"groups": [{"name": "dashboard", "rules": recorded}]}
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_slo_breaches_are_grouped_by_the_labels_the_metric_has(tmp_path: Path) -> None:
    """driftowner_incident_slo_breaches_total carries {owner, system, slo} as DESIGN names
    them, and the alert and the dashboard group by exactly those (a label the metric lacks
    would silently merge every system into one series)."""
    from driftowner.store import Changes
    from tests.unit.factories import incident

    store = SqlStore(f"sqlite:///{tmp_path}/store.db")
    store.open()
    try:
        store.apply(Changes(opened=[incident()]))
        metrics = Metrics(store, lambda: datetime.now(UTC))
        family = next(
            f for f in metrics.registry.collect() if f.name == "driftowner_incident_slo_breaches"
        )
    finally:
        store.close()
    labels = {frozenset(sample.labels) for sample in family.samples}
    assert labels == {frozenset({"owner", "system", "slo"})}
    slo_exprs = [rule["expr"] for rule in _rules() if "slo_breaches" in rule["expr"]]
    slo_exprs += [
        t["expr"]
        for t in _targets(json.loads(DASHBOARD.read_text()))
        if "slo_breaches" in t["expr"]
    ]
    assert slo_exprs
    for expr in slo_exprs:
        (grouping,) = re.findall(r"\bby \(([^)]*)\)", expr)
        assert {label.strip() for label in grouping.split(",")} == {"owner", "system", "slo"}
