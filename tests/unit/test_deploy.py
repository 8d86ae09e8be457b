"""deploy/: the Grafana dashboard and the Prometheus alert rules query only metrics ackflow registers,
and the rules have the shape Prometheus loads (checked in Python: promtool is not at hand)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "ackflow-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
# Series Prometheus makes itself, not an exporter: allowed in queries.
PROMETHEUS_SERIES = {"up"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_DURATION = re.compile(r"\[[^\]]*\]")
_MATCHERS = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_STRINGS = re.compile(r'"[^"]*"|\'[^\']*\'')
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b")


def metric_names(expr: str) -> set[str]:
    """The series a PromQL expression reads: identifiers that are not functions, keywords or labels."""
    text = _STRINGS.sub("", _MATCHERS.sub("", _DURATION.sub("", expr)))
    text = _GROUPING.sub("", _NUMBER.sub("", text))
    names = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        if match[0] not in PROMQL_WORDS and not rest.startswith("("):
            names.add(match[0])
    return names


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def registered_names() -> set[str]:
    """Every series name ackflow.metrics registers in prometheus-client's default registry (importing it
    registers them), with the suffixes its counters and histograms are exposed under."""
    from prometheus_client import REGISTRY

    import ackflow.metrics  # noqa: F401  (its import registers the metrics)

    names: set[str] = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return names


def test_the_metric_name_extraction_finds_series_and_skips_functions_labels_and_keywords() -> None:
    expr = 'histogram_quantile(0.99, sum by (le, kind) (rate(a_seconds_bucket{kind!="x"}[5m]))) / b_total and up'
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "up"}


def test_every_metric_the_dashboard_and_the_alerts_query_is_registered_by_ackflow() -> None:
    queried = {name for expr in dashboard_exprs() + [r["expr"] for r in alert_rules()] for name in metric_names(expr)}
    assert len(queried) >= 15, queried
    ours = queried - PROMETHEUS_SERIES
    assert all(name.startswith("ackflow_") for name in ours), ours
    unknown = sorted(ours - registered_names())
    assert unknown == [], f"deploy/ queries metrics ackflow does not register: {unknown}"


def test_the_dashboard_is_grafana_json_on_a_prometheus_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"]), "panel ids must be unique"
    assert all(p["datasource"]["uid"] == "${" + variable["name"] + "}" and p["targets"] for p in panels)
    assert all(t["refId"] and t["expr"].strip() for p in panels for t in p["targets"])
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30


def test_the_alert_rules_have_the_structure_prometheus_loads() -> None:
    document = yaml.safe_load(ALERTS.read_text())
    assert set(document) == {"groups"} and document["groups"]
    names = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"} and group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule
            assert rule["alert"].isidentifier() and isinstance(rule["expr"], str) and rule["expr"].strip()
            assert re.fullmatch(r"\d+[smhd]", rule["for"]), rule
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule
            assert {"summary", "description"} <= set(rule["annotations"]), rule
            assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
            names.append(rule["alert"])
    assert len(names) == len(set(names)), "alert names must be unique"


def test_the_alerts_cover_backlog_dead_letters_webhook_failures_admission_and_dependencies() -> None:
    by_metric = {name for rule in alert_rules() for name in metric_names(rule["expr"])}
    assert {
        "ackflow_outbox_oldest_age_seconds",
        "ackflow_outbox_dead_letters",
        "ackflow_webhook_attempts_total",
        "ackflow_admission_oldest_wait_seconds",
        "ackflow_dependency_up",
    } <= by_metric
