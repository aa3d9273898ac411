"""The Grafana dashboard names only metrics the code registers: every panel's PromQL is parsed
for metric names, which must be series the server's and the nodes' collectors expose
(suffixes included); with Prometheus installed, it also parses every expression."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from fedkit.flower.local.node_metrics import NodeMetrics
from fedkit.flower.local.prometheus import Prometheus
from fedkit.run.metrics import ServerMetrics, series_names

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "fedkit.json"
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan",
}  # fmt: skip
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def expressions(dashboard: dict) -> list[str]:
    """Every target expression of every panel, rows' nested panels included."""
    found, stack = [], list(dashboard.get("panels", []))
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        found.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left after dropping strings,
    Grafana variables, label matchers, ranges, groupings, functions, keywords and numbers."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', " ", expr)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = GROUPING.sub(" ", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        follows = text[m.end() :].lstrip()[:1]
        if follows != "(" and m.group().lower() not in KEYWORDS:
            names.add(m.group())
    return names


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    node = NodeMetrics(tmp_path_factory.mktemp("node") / "reports.jsonl")
    return series_names(ServerMetrics().registry) | series_names(node.registry)


def test_the_name_extractor_finds_metrics_and_nothing_else():
    expr = (
        'histogram_quantile(0.9, sum by (le, node) (rate(fedkit_node_train_seconds_bucket{job="x"}'
        "[$__rate_interval]))) / scalar(clamp_min(increase(fedkit_rounds_completed_total[5m]), 1))"
        " > bool 2 unless on(instance) fedkit_epsilon"
    )
    assert metric_names(expr) == {
        "fedkit_node_train_seconds_bucket",
        "fedkit_rounds_completed_total",
        "fedkit_epsilon",
    }


def test_every_dashboard_query_names_a_registered_metric(registered):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = expressions(dashboard)
    assert len(exprs) >= 15
    used = set().union(*(metric_names(e) for e in exprs))
    unknown = {n: [e for e in exprs if n in metric_names(e)] for n in used - registered}
    assert not unknown, f"the dashboard queries metrics nothing registers: {unknown}"
    # it shows what the issue asks: rounds, rejections, epsilon, latency, nodes, node training
    wanted = {
        "fedkit_rounds_completed_total",
        "fedkit_replies_rejected_total",
        "fedkit_epsilon",
        "fedkit_budget_fraction",
        "fedkit_round_duration_seconds_bucket",
        "fedkit_nodes_connected",
        "fedkit_node_train_seconds_bucket",
    }
    assert wanted <= used


def test_a_misspelled_metric_would_be_caught(registered):
    assert metric_names("rate(fedkit_round_completed_total[5m])") - registered == {
        "fedkit_round_completed_total"
    }


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed")
def test_prometheus_parses_every_dashboard_query(tmp_path):
    exprs = expressions(json.loads(DASHBOARD.read_text()))
    with Prometheus(tmp_path / "prom") as prom:
        for expr in exprs:  # a parse error is an HTTP 400 that api() raises on
            prom.api("query", query=expr.replace("$__rate_interval", "1m"))
