"""The Prometheus rules, their promtool unit tests, the example Prometheus and Alertmanager
configurations and the runbook: valid for the real tools, and consistent with each other and
with the metric names the exporter serves."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_claude.admin import usage
from otel_claude.exposition.families import FAMILIES, admin_families
from tests.conftest import need_binary

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
RECORDING = PROMETHEUS / "rules" / "otel-claude-recording.yml"
ALERTS = PROMETHEUS / "rules" / "otel-claude-alerts.yml"
RULE_FILES = (RECORDING, ALERTS)
UNIT_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
PROMETHEUS_CONFIG = PROMETHEUS / "prometheus.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/otel-claude/otel-claude/blob/main/docs/runbook.md#"
GOLDEN = ROOT / "tests" / "fixtures" / "metrics.golden.txt"
EXPOSITION = ROOT / "otel_claude" / "exposition"

#: Metric name prefixes the exporter owns; any such name in a rule must exist in it.
EXPORTER_PREFIXES = ("anthropic_", "claude_agent_", "otel_claude_")
#: Series Prometheus itself produces for every scrape target.
PROMETHEUS_SERIES = {"up"}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in _load(path)["groups"] for rule in group["rules"]]


def _alerts() -> dict[str, dict[str, Any]]:
    alerts: dict[str, dict[str, Any]] = {}
    for rule in _rules(ALERTS):
        assert "alert" in rule, f"not an alerting rule in {ALERTS.name}: {rule}"
        assert rule["alert"] not in alerts, f"alert {rule['alert']} defined twice"
        alerts[rule["alert"]] = rule
    return alerts


def _recorded_names() -> set[str]:
    rules = _rules(RECORDING)
    assert all("record" in rule for rule in rules), f"{RECORDING.name} holds an alert"
    return {rule["record"] for rule in rules}


def _test_groups() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, group) for path in UNIT_TESTS for group in _load(path)["tests"]]


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{output}"
    return output


def _runbook_anchors() -> set[str]:
    """GitHub's anchors for the runbook's headings."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", RUNBOOK.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def _exporter_metric_names() -> set[str]:
    """Names the exporter serves: the golden exposition plus every family it can render."""
    names = set(re.findall(r"^# TYPE (\S+) ", GOLDEN.read_text(encoding="utf-8"), re.M))
    families = FAMILIES + admin_families(usage.DIMENSIONS, "hash")
    names |= {family.name + "_total" for family in families}
    for source in EXPOSITION.glob("*.py"):
        text = source.read_text(encoding="utf-8")
        names |= set(re.findall(r'GaugeMetricFamily\(\s*"([a-z_][a-z0-9_]*)"', text))
        counters = re.findall(r'CounterMetricFamily\(\s*"([a-z_][a-z0-9_]*)"', text)
        names |= {name + "_total" for name in counters}
    return names


def _identifiers(expr: str) -> set[str]:
    """Metric-like identifiers of a PromQL expression (strings and label names removed)."""
    expr = re.sub(r'"[^"]*"|`[^`]*`', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    return set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))


# --- the real tools -----------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    promtool = need_binary("promtool")
    output = _run([promtool, "check", "rules", *map(str, RULE_FILES)])
    assert output.count("SUCCESS") == len(RULE_FILES), output


def test_promtool_unit_tests_pass() -> None:
    promtool = need_binary("promtool")
    assert UNIT_TESTS, "no unit tests in deploy/prometheus/tests"
    output = _run([promtool, "test", "rules", *map(str, UNIT_TESTS)])
    assert output.count("SUCCESS") == len(UNIT_TESTS), output


def test_promtool_check_config() -> None:
    promtool = need_binary("promtool")
    output = _run([promtool, "check", "config", str(PROMETHEUS_CONFIG)])
    assert "2 rule files found" in output, output  # the relative rule paths resolve


def test_amtool_check_config() -> None:
    amtool = need_binary("amtool")
    _run([amtool, "check-config", str(ALERTMANAGER_CONFIG)])


@pytest.mark.parametrize(("severity", "receiver"), [("critical", "pager"), ("warning", "chat")])
def test_alertmanager_routes_by_severity(severity: str, receiver: str) -> None:
    amtool = need_binary("amtool")
    output = _run(
        [
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_CONFIG}",
            f"severity={severity}",
            "alertname=AnthropicBudgetExceeded",
        ]
    )
    assert output.splitlines()[0].strip() == receiver, output


# --- consistency --------------------------------------------------------------------------


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    alerts = set(_alerts())
    firing: set[str] = set()
    quiet: set[str] = set()
    for _file, group in _test_groups():
        for case in group.get("alert_rule_test") or []:
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    unknown = (firing | quiet) - alerts
    assert not unknown, f"tests for alerts that do not exist: {sorted(unknown)}"
    assert not alerts - firing, f"alerts never tested firing: {sorted(alerts - firing)}"
    assert not alerts - quiet, f"alerts never tested quiet: {sorted(alerts - quiet)}"


def test_unit_tests_load_both_rule_files() -> None:
    for path in UNIT_TESTS:
        loaded = {(path.parent / p).resolve() for p in _load(path)["rule_files"]}
        assert loaded == {p.resolve() for p in RULE_FILES}, path.name


@pytest.mark.parametrize("alert", sorted(_alerts()))
def test_alert_labels_annotations_and_runbook(alert: str) -> None:
    rule = _alerts()[alert]
    assert rule.get("labels", {}).get("severity") in ("warning", "critical"), rule
    annotations = rule.get("annotations", {})
    assert annotations.get("summary"), f"{alert}: no summary"
    assert "$value" in annotations.get("description", ""), f"{alert}: description lacks $value"
    anchor = alert.lower()
    assert annotations.get("runbook_url") == RUNBOOK_URL + anchor
    assert anchor in _runbook_anchors(), f"docs/runbook.md has no section {alert}"


def test_budget_exceeded_fires_at_once() -> None:
    """The end-to-end stack test waits seconds, not minutes, for this alert."""
    rule = _alerts()["AnthropicBudgetExceeded"]
    assert rule["for"] == "0m"
    assert rule["labels"]["severity"] == "critical"


def test_rules_use_only_metrics_the_exporter_serves() -> None:
    served = _exporter_metric_names()
    recorded = _recorded_names()
    unknown: set[str] = set()
    for path in RULE_FILES:
        for rule in _rules(path):
            # The expression, and queries inside annotation templates.
            texts = [str(rule["expr"]), *map(str, rule.get("annotations", {}).values())]
            for name in _identifiers(texts[0]):
                if ":" in name and name not in recorded:
                    unknown.add(name)
                elif name.startswith(EXPORTER_PREFIXES) and name not in served:
                    unknown.add(name)
            for text in texts[1:]:
                unknown |= set(re.findall(r"\botel_claude:[a-z0-9_:]+", text)) - recorded
    assert not unknown, f"not served by the exporter nor recorded: {sorted(unknown)}"


def test_metric_name_check_is_not_vacuous() -> None:
    served = _exporter_metric_names()
    used: set[str] = set()
    for path in RULE_FILES:
        for rule in _rules(path):
            names = _identifiers(str(rule["expr"]))
            used |= {n for n in names if n.startswith(EXPORTER_PREFIXES)}
            used |= names & PROMETHEUS_SERIES
    assert {
        "anthropic_api_tokens_total",
        "anthropic_api_cost_usd_total",
        "anthropic_api_cost_month_to_date_usd",
        "anthropic_api_budget_usd",
        "anthropic_api_newest_bucket_end_timestamp_seconds",
        "claude_agent_tokens_total",
        "claude_agent_unpriced_tokens_total",
        "otel_claude_source_up",
        "otel_claude_source_errors_total",
        "otel_claude_admin_requests_total",
        "otel_claude_ingest_rejected_total",
        "up",
    } <= used, sorted(used)
    assert {"anthropic_api_cost_month_to_date_usd", "otel_claude_admin_requests_total"} <= served
    assert "anthropic_api_nonexistent_total" not in served


def test_recording_rules_are_named_and_tested() -> None:
    recorded = _recorded_names()
    assert recorded, "no recording rules"
    for name in recorded:
        assert re.fullmatch(r"otel_claude:[a-z0-9_]+(:[a-z0-9_]+)?", name), name
    tested = " ".join(
        str(case["expr"])
        for _file, group in _test_groups()
        for case in group.get("promql_expr_test") or []
    )
    untested = {n for n in recorded if not re.search(rf"{re.escape(n)}(?![\w:])", tested)}
    assert not untested, f"recording rules without a promql_expr_test: {sorted(untested)}"


def test_rule_groups_inherit_the_evaluation_interval() -> None:
    """A group's own `interval` would override a shorter global one (the end-to-end stack
    evaluates every second); the example configuration evaluates every minute."""
    for path in RULE_FILES:
        for group in _load(path)["groups"]:
            assert "interval" not in group, (path.name, group["name"])
    assert _load(PROMETHEUS_CONFIG)["global"]["evaluation_interval"] == "1m"
