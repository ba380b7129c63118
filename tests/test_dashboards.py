"""Grafana dashboards: the committed JSON matches grafana/build.py, is structurally sound for
Grafana's import, and every query reads metrics the exporter really serves.

No network and no Grafana: the end-to-end suite runs ``panel_queries()`` against a real
Prometheus; here each query is parsed by ``promtool`` (when installed) and checked lexically.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from otel_claude.admin import usage
from otel_claude.exposition import families
from tests.conftest import need_binary

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
BUILD = GRAFANA / "build.py"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
DS = {"type": "prometheus", "uid": "${datasource}"}
EXPECTED_UIDS = {
    "otel-claude-cost",
    "otel-claude-tokens",
    "otel-claude-claude-code",
    "otel-claude-agents",
    "otel-claude-health",
}
#: Grafana unit ids the dashboards may use (a typo would silently show raw numbers).
UNITS = {"short", "currencyUSD", "percentunit", "s", "dateTimeFromNow", "bytes", "reqps", "cps"}
#: Panels allowed to read both metric families in one query: ratios, never sums.
MIXED_FAMILY_PANELS = {("otel-claude-cost", "Client-side estimate / billed")}


def _load_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_build", BUILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # as other tests do it: not registered in sys.modules
    return module


build = _load_build()


@cache
def _dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in DASHBOARD_FILES}


def _data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in build.iter_panels(dashboard) if p["type"] != "row"]


@cache
def exporter_metric_names() -> frozenset[str]:
    """Every series name the exporter can serve: golden file, families, collector literals."""
    names: set[str] = set()
    golden = ROOT / "tests" / "fixtures" / "metrics.golden.txt"
    for line in golden.read_text(encoding="utf-8").splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    all_families = (
        *families.core_families(project_label=True),
        *families.admin_families(usage.DIMENSIONS, "hash"),
    )
    names.update(family.name + "_total" for family in all_families)
    for path in (ROOT / "otel_claude" / "exposition").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        for kind, name in re.findall(r'(Gauge|Counter)MetricFamily\(\s*"(\w+)"', text):
            names.add(name + "_total" if kind == "Counter" else name)
    return frozenset(names)


# --------------------------------------------------------------------------------------
# (a) generated files are in sync


def test_committed_json_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(BUILD), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_check_reports_a_difference() -> None:
    files = build.render_files()
    path = next(iter(files))
    files[path] += " "
    assert build.check(files) == [f"out of date: {path.name}"]


def test_every_dashboard_is_generated() -> None:
    assert set(_dashboards()) == EXPECTED_UIDS
    assert {d.uid for d in build.dashboards()} == EXPECTED_UIDS


# --------------------------------------------------------------------------------------
# (b) structure Grafana imports


@pytest.mark.parametrize("uid", sorted(EXPECTED_UIDS))
def test_top_level(uid: str) -> None:
    board = _dashboards()[uid]
    required = {
        "annotations",
        "description",
        "editable",
        "links",
        "panels",
        "refresh",
        "schemaVersion",
        "tags",
        "templating",
        "time",
        "timezone",
        "title",
        "uid",
    }
    assert required <= set(board)
    assert board["uid"] == uid and len(uid) <= 40
    assert board["id"] is None
    assert board["title"].startswith("otel-claude / ")
    assert board["tags"] == ["otel-claude"]
    assert 39 <= board["schemaVersion"] <= 41
    assert set(board["time"]) == {"from", "to"}


def test_titles_are_distinct() -> None:
    titles = [board["title"] for board in _dashboards().values()]
    assert len(set(titles)) == len(titles)


@pytest.mark.parametrize("uid", sorted(EXPECTED_UIDS))
def test_links_to_the_other_dashboards(uid: str) -> None:
    links = _dashboards()[uid]["links"]
    assert any(
        link["type"] == "dashboards" and link["tags"] == ["otel-claude"] and link["asDropdown"]
        for link in links
    ), links


@pytest.mark.parametrize("uid", sorted(EXPECTED_UIDS))
def test_variables(uid: str) -> None:
    variables = _dashboards()[uid]["templating"]["list"]
    names = [v["name"] for v in variables]
    assert len(set(names)) == len(names)
    first = variables[0]
    assert (first["name"], first["type"], first["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    assert "job" in names
    defined = {"datasource"}
    for variable in variables[1:]:
        assert variable["type"] == "query", variable["name"]
        assert variable["datasource"] == DS
        assert variable["multi"] and variable["includeAll"] and variable["allValue"] == ".*"
        assert variable["query"] == variable["definition"]
        assert re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]), variable["query"]
        # A chained variable may only use variables defined before it.
        assert build.variables_in(variable["query"]) <= defined, variable["name"]
        defined.add(variable["name"])


@pytest.mark.parametrize("uid", sorted(EXPECTED_UIDS))
def test_panels(uid: str) -> None:
    board = _dashboards()[uid]
    panels = list(build.iter_panels(board))
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids)
    data = _data_panels(board)
    titles = [p["title"] for p in data]
    assert len(set(titles)) == len(titles), "panel titles identify queries: keep them unique"
    assert data, "no panels"
    for panel in data:
        where = f"{uid}: {panel['title']}"
        assert panel["type"] in {"stat", "timeseries", "bargauge", "table"}, where
        assert len(panel["description"]) > 40, where
        assert panel["datasource"] == DS, where
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["unit"] in UNITS, where
        for override in panel["fieldConfig"]["overrides"]:
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    assert prop["value"] in UNITS, where
        targets = panel["targets"]
        assert targets, where
        refs = [t["refId"] for t in targets]
        assert len(set(refs)) == len(refs), where
        for target in targets:
            assert target["datasource"] == DS, where
            assert target["expr"].strip(), where
            assert target["instant"] != target["range"], where
        if panel["type"] in {"stat", "bargauge", "table"}:
            assert all(t["instant"] for t in targets), f"{where}: single values are instant"


@pytest.mark.parametrize("uid", sorted(EXPECTED_UIDS))
def test_grid_layout(uid: str) -> None:
    boxes = []
    for panel in build.iter_panels(_dashboards()[uid]):
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0, panel["title"]
        assert pos["x"] >= 0 and pos["y"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            assert (pos["x"], pos["w"], pos["h"]) == (0, 24, 1), panel["title"]
        boxes.append((panel["title"], pos["x"], pos["y"], pos["w"], pos["h"]))
    for a, b in itertools.combinations(boxes, 2):
        overlap_x = a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
        overlap_y = a[2] < b[2] + b[4] and b[2] < a[2] + a[4]
        assert not (overlap_x and overlap_y), f"{a[0]!r} overlaps {b[0]!r}"


@pytest.mark.parametrize("uid", sorted(EXPECTED_UIDS))
def test_every_variable_used_is_defined(uid: str) -> None:
    board = _dashboards()[uid]
    defined = {v["name"] for v in board["templating"]["list"]}
    builtins = set(build.BUILTIN_SUBSTITUTES)
    for panel in _data_panels(board):
        for target in panel["targets"]:
            used = build.variables_in(target["expr"])
            assert used <= defined | builtins, (panel["title"], used - defined - builtins)


# --------------------------------------------------------------------------------------
# (c) queries


def _balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            if not stack or stack.pop() != pairs[char]:
                return False
    return not stack


def test_panel_queries_cover_every_target() -> None:
    boards = list(_dashboards().values())
    queries = build.panel_queries(boards)
    targets = sum(len(p["targets"]) for b in boards for p in _data_panels(b))
    assert len(queries) == targets
    assert sorted(build.panel_queries()) == sorted(queries)
    assert all(len(q) == 3 for q in queries)


def test_substitution() -> None:
    expr = 'sum(rate(x{a=~"$a", b=~"${b}", c=~"${c:regex}"}[$__rate_interval])) [$__range]'
    assert build.substitute(expr) == 'sum(rate(x{a=~".*", b=~".*", c=~".*"}[1m])) [1h]'
    with pytest.raises(ValueError, match="__unknown"):
        build.substitute("x[$__unknown]")


def test_referenced_metrics() -> None:
    expr = (
        'sum by (model) (increase(a_total{job=~".*", x="or"}[1h]))\n/ on (model) '
        "(max(b_bytes offset 5m) > 0) or vector(0) * time() - 1e3"
    )
    assert build.referenced_metrics(expr) == {"a_total", "b_bytes"}
    selector = '{__name__=~"c_total|d_total", job=~".*"}'
    assert build.referenced_metrics(selector) == {"c_total", "d_total"}


def test_queries_are_well_formed_and_read_real_metrics() -> None:
    known = exporter_metric_names()
    assert {"claude_agent_tokens_total", "otel_claude_admin_requests_total"} <= known
    for query in build.panel_queries(list(_dashboards().values())):
        where = f"{query.dashboard_uid}: {query.panel_title}: {query.expr}"
        assert "$" not in query.expr and "[[" not in query.expr, where
        assert _balanced(query.expr), where
        assert query.metrics, where
        assert query.metrics <= known, f"{where}: unknown {sorted(query.metrics - known)}"


def test_variable_queries_read_real_metrics() -> None:
    known = exporter_metric_names()
    for board in _dashboards().values():
        for variable in board["templating"]["list"][1:]:
            selector = re.fullmatch(r"label_values\((.+), \w+\)", variable["query"])
            assert selector is not None
            metrics = build.referenced_metrics(build.substitute(selector.group(1)))
            assert metrics and metrics <= known, variable["query"]


def test_sparse_metrics_are_real() -> None:
    assert build.SPARSE_METRICS <= exporter_metric_names()


def test_sparse_counters_show_zero_not_no_data() -> None:
    """Error, retry and reject counters have no series until something happens: 0 is the
    honest answer there, and the end-to-end run requires every query to return data."""
    for query in build.panel_queries():
        if query.metrics <= build.SPARSE_METRICS:
            assert "vector(0)" in query.expr or query.expr.endswith(" * 0"), query


def test_families_are_never_mixed() -> None:
    """``claude_agent_*`` is contained in the org's billing data: adding them double counts."""
    for query in build.panel_queries():
        org = any(m.startswith("anthropic_") for m in query.metrics)
        client = any(m.startswith("claude_agent_") for m in query.metrics)
        if org and client:
            assert (query.dashboard_uid, query.panel_title) in MIXED_FAMILY_PANELS, query


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    """``promtool check rules`` parses each expression as a recording rule (no server)."""
    promtool = need_binary("promtool")
    exprs = [q.expr for q in build.panel_queries()]
    for board in _dashboards().values():
        for variable in board["templating"]["list"][1:]:
            match = re.fullmatch(r"label_values\((.+), \w+\)", variable["query"])
            assert match is not None
            exprs.append(build.substitute(match.group(1)))
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "rules.yml"
    path.write_text(
        json.dumps({"groups": [{"name": "dashboards", "rules": rules}]})
    )  # JSON is YAML
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


# --------------------------------------------------------------------------------------
# provisioning


def test_provisioning_files() -> None:
    datasource = (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    provider = (GRAFANA / "provisioning" / "dashboards" / "otel-claude.yml").read_text()
    yaml = pytest.importorskip("yaml")
    ds = yaml.safe_load(datasource)
    assert ds["apiVersion"] == 1
    [source] = ds["datasources"]
    assert (source["type"], source["uid"], source["url"]) == (
        "prometheus",
        "prometheus",
        "http://prometheus:9090",
    )
    prov = yaml.safe_load(provider)
    assert prov["apiVersion"] == 1
    [entry] = prov["providers"]
    assert (entry["type"], entry["folder"], entry["options"]["path"]) == (
        "file",
        "otel-claude",
        "/var/lib/grafana/dashboards",
    )
