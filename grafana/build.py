#!/usr/bin/env python3
"""The otel-claude Grafana dashboards, written as code.

Run ``python grafana/build.py`` to (re)write ``grafana/dashboards/*.json``;
``python grafana/build.py --check`` exits 1 when the committed JSON differs from what this
file generates, so a hand edit of the JSON cannot drift from the source.

Why code and not hand-made JSON: five dashboards share one datasource variable, one set of
label filters and one layout discipline; generating them keeps every panel's description,
unit and datasource in place and lets tests (and the end-to-end run against a real
Prometheus) reach every query through ``panel_queries()``.

The JSON is the classic dashboard model (``schemaVersion`` 39, Grafana 11 and later migrate it
on load). Every panel and target reads ``${datasource}``, a variable of type ``datasource``
limited to Prometheus, so the files work both provisioned and imported by hand.

Counting rule the dashboards respect: the client-side family (``claude_agent_*``) and the
organization's billing family (``anthropic_api_*``, ``anthropic_claude_code_*``) describe
overlapping usage, so no query ever adds one to the other. They are shown side by side.

This file is a script, not a package module; import it by path, e.g.::

    spec = importlib.util.spec_from_file_location("grafana_build", "grafana/build.py")
    build = importlib.util.module_from_spec(spec); spec.loader.exec_module(build)
    for uid, title, expr in build.panel_queries(): ...
"""

# No ``from __future__ import annotations``: with string annotations, dataclasses look the
# module up in sys.modules, which fails when callers load this script by path.
import argparse
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

JSON = dict[str, Any]

HERE = Path(__file__).resolve().parent
DASHBOARD_DIR = HERE / "dashboards"
SCHEMA_VERSION = 39
TAG = "otel-claude"
DS: JSON = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24

#: What ``panel_queries()`` puts in place of Grafana's built-in interval variables.
BUILTIN_SUBSTITUTES = {
    "__interval": "1m",
    "__rate_interval": "1m",
    "__range": "1h",
}
#: What ``panel_queries()`` puts in place of every dashboard variable (all are multi-value
#: regex matchers whose "All" value is ``.*``).
VARIABLE_SUBSTITUTE = ".*"

#: Metrics that legitimately have no series in a healthy setup: they appear only once
#: something goes wrong (errors, retries, rejects, downward revisions) or once a feature is
#: used (web search, unpriced models, pruning). Panels reading only these fall back to 0.
SPARSE_METRICS = frozenset(
    {
        "claude_agent_unpriced_tokens_total",
        "claude_agent_web_search_requests_total",
        "anthropic_api_web_search_requests_total",
        "otel_claude_ingest_rejected_total",
        "otel_claude_ledger_keys_pruned_total",
        "otel_claude_source_errors_total",
        "otel_claude_admin_retries_total",
        "anthropic_api_tokens_revised_down_total",
        "anthropic_api_cost_revised_down_usd_total",
    }
)

# --------------------------------------------------------------------------------------
# PromQL helpers


def sel(metric: str, *matchers: str) -> str:
    """``metric{m1, m2}``; matchers are plain PromQL label matchers."""
    return metric + "{" + ", ".join(m for m in matchers if m) + "}"


def inc(selector: str, window: str = "$__range") -> str:
    """``increase(selector[window])``."""
    return f"increase({selector}[{window}])"


def rate(selector: str, window: str = "$__rate_interval") -> str:
    """``rate(selector[window])``."""
    return f"rate({selector}[{window}])"


def total(expr: str, by: str = "") -> str:
    """``sum(expr)`` or ``sum by (labels) (expr)``."""
    return f"sum by ({by}) ({expr})" if by else f"sum({expr})"


def share(part: str, whole: str) -> str:
    """``part / whole`` where ``part`` is contained in ``whole`` (a hit ratio, a success
    rate): it can only be undefined as 0/0, which Prometheus answers with NaN ("n/a")."""
    return f"{part}\n/\n{whole}"


def per(numerator: str, denominator: str, on: str = "") -> str:
    """``numerator / denominator`` (cost per commit, ...); NaN ("n/a") where the denominator
    is 0 instead of +Inf, so the panel still answers (``on``: the labels of a by-query)."""
    return f"{numerator}\n/\n({denominator} > 0)\nor on ({on})\n{numerator} * 0 / 0"


def only_where(numerator: str, denominator: str) -> str:
    """``numerator / denominator`` only for series with a positive denominator (others are
    left out, e.g. workspaces without a budget)."""
    return f"{numerator}\n/\n({denominator} > 0)"


def zero_if_absent(expr: str) -> str:
    """For counters whose series appear only once something happened: 0 rather than
    "no data" (``on ()``: the 0 is added only when the query has no series at all)."""
    return f"{expr} or on () vector(0)"


def with_names(expr: str, label: str, info: str, name_label: str) -> str:
    """Add a human name from an ``*_info`` gauge; keep rows the info gauge does not know."""
    names = f"max by ({label}, {name_label}) ({info})"
    return (
        f"({expr})\n  * on ({label}) group_left ({name_label})\n  {names}\n"
        f"or on ({label})\n({expr})"
    )


JOB = 'job=~"$job"'
INPUT_SIDE = 'token_type=~"input|cache_read|cache_creation.*"'
CACHE_READ = 'token_type="cache_read"'
CACHE_WRITES = 'token_type=~"cache_creation_5m|cache_creation_1h"'


# --------------------------------------------------------------------------------------
# Panel model


class Target(NamedTuple):
    """One PromQL query of a panel."""

    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False


@dataclass
class Panel:
    """A panel without position or id; ``w``/``h`` are grid units."""

    type: str
    title: str
    description: str
    unit: str
    targets: list[Target]
    w: int = 12
    h: int = 8
    defaults: JSON = field(default_factory=dict)
    custom: JSON = field(default_factory=dict)
    options: JSON = field(default_factory=dict)
    overrides: list[JSON] = field(default_factory=list)
    transformations: list[JSON] = field(default_factory=list)
    interval: str | None = None

    def render(self, panel_id: int, x: int, y: int) -> JSON:
        """The panel's JSON at grid position (x, y)."""
        refs = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        targets = []
        for ref, target in zip(refs, self.targets, strict=False):
            targets.append(
                {
                    "datasource": DS,
                    "editorMode": "code",
                    "expr": target.expr,
                    "format": "table" if target.table else "time_series",
                    "instant": target.instant,
                    "legendFormat": target.legend or "__auto",
                    "range": not target.instant,
                    "refId": ref,
                }
            )
        defaults: JSON = {"unit": self.unit, **self.defaults}
        if self.type != "timeseries":
            # 0/0 ratios (no usage in the range) come back as NaN: show "n/a" instead.
            mappings = list(defaults.get("mappings", []))
            index = sum(len(m["options"]) if m["type"] == "value" else 1 for m in mappings)
            nan = {"match": "nan", "result": {"index": index, "text": "n/a"}}
            defaults["mappings"] = [*mappings, {"options": nan, "type": "special"}]
        if self.custom:
            defaults["custom"] = self.custom
        body: JSON = {
            "id": panel_id,
            "type": self.type,
            "title": self.title,
            "description": self.description,
            "datasource": DS,
            "gridPos": {"h": self.h, "w": self.w, "x": x, "y": y},
            "fieldConfig": {"defaults": defaults, "overrides": self.overrides},
            "options": self.options,
            "targets": targets,
        }
        if self.interval:
            body["interval"] = self.interval
        if self.transformations:
            body["transformations"] = self.transformations
        return body


def _thresholds(*steps: tuple[str, float]) -> JSON:
    return {
        "mode": "absolute",
        "steps": [{"color": "green", "value": None}]
        + [{"color": color, "value": value} for color, value in steps],
    }


_REDUCE_LAST = {"calcs": ["lastNotNull"], "fields": "", "values": False}


def stat(
    title: str,
    description: str,
    unit: str,
    *targets: Target,
    w: int = 4,
    h: int = 4,
    thresholds: Sequence[tuple[str, float]] = (),
    mappings: list[JSON] | None = None,
    text_mode: str = "auto",
    decimals: int | None = None,
) -> Panel:
    """A single number, evaluated as an instant query at the end of the time range."""
    defaults: JSON = {
        "color": {"mode": "thresholds"},
        "thresholds": _thresholds(*thresholds),
    }
    if mappings:
        defaults["mappings"] = mappings
    if decimals is not None:
        defaults["decimals"] = decimals
    return Panel(
        "stat",
        title,
        description,
        unit,
        [t._replace(instant=True) for t in targets],
        w=w,
        h=h,
        defaults=defaults,
        options={
            "colorMode": "value",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": _REDUCE_LAST,
            "textMode": text_mode,
        },
    )


def timeseries(
    title: str,
    description: str,
    unit: str,
    *targets: Target,
    w: int = 12,
    h: int = 8,
    bars: bool = False,
    stack: bool = False,
    interval: str | None = None,
    min_value: float | None = 0,
    max_value: float | None = None,
) -> Panel:
    """A graph over the dashboard's time range."""
    defaults: JSON = {"color": {"mode": "palette-classic"}}
    if min_value is not None:
        defaults["min"] = min_value
    if max_value is not None:
        defaults["max"] = max_value
    custom = {
        "drawStyle": "bars" if bars else "line",
        "fillOpacity": 60 if bars else 10,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stack else "none"},
    }
    return Panel(
        "timeseries",
        title,
        description,
        unit,
        list(targets),
        w=w,
        h=h,
        defaults=defaults,
        custom=custom,
        options={
            "legend": {
                "calcs": [],
                "displayMode": "list",
                "placement": "bottom",
                "showLegend": True,
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        interval=interval,
    )


def bargauge(
    title: str,
    description: str,
    unit: str,
    *targets: Target,
    w: int = 8,
    h: int = 8,
    thresholds: Sequence[tuple[str, float]] = (),
    max_value: float | None = None,
) -> Panel:
    """Horizontal bars of instant values, one per series (a ranking)."""
    defaults: JSON = {
        "color": {"mode": "thresholds"},
        "min": 0,
        "thresholds": _thresholds(*thresholds),
    }
    if max_value is not None:
        defaults["max"] = max_value
    return Panel(
        "bargauge",
        title,
        description,
        unit,
        [t._replace(instant=True) for t in targets],
        w=w,
        h=h,
        defaults=defaults,
        options={
            "displayMode": "gradient",
            "orientation": "horizontal",
            "reduceOptions": _REDUCE_LAST,
            "showUnfilled": True,
            "valueMode": "color",
        },
    )


@dataclass(frozen=True)
class Column:
    """A value column of a table: the query, its header and unit."""

    expr: str
    header: str
    unit: str = "short"


def table(
    title: str,
    description: str,
    unit: str,
    columns: Sequence[Column],
    *,
    w: int = 24,
    h: int = 8,
    sort_by: str | None = None,
) -> Panel:
    """Instant queries merged into one table; each query is one named value column."""
    refs = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    overrides = []
    for ref, column in zip(refs, columns, strict=False):
        properties: list[JSON] = [{"id": "displayName", "value": column.header}]
        if column.unit != unit:
            properties.append({"id": "unit", "value": column.unit})
        # Grafana names the value column "Value" for one query, "Value #<refId>" for several.
        name = f"Value #{ref}" if len(columns) > 1 else "Value"
        overrides.append({"matcher": {"id": "byName", "options": name}, "properties": properties})
    options: JSON = {
        "cellHeight": "sm",
        "footer": {"countRows": False, "fields": "", "reducer": ["sum"], "show": False},
        "showHeader": True,
    }
    if sort_by:
        options["sortBy"] = [{"desc": True, "displayName": sort_by}]
    return Panel(
        "table",
        title,
        description,
        unit,
        [Target(c.expr, instant=True, table=True) for c in columns],
        w=w,
        h=h,
        options=options,
        overrides=overrides,
        transformations=[
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {"excludeByName": {"Time": True}, "indexByName": {}, "renameByName": {}},
            },
        ],
    )


@dataclass
class Section:
    """Panels under an optional row header, laid out left to right, wrapping at 24."""

    title: str | None
    panels: list[Panel]


# --------------------------------------------------------------------------------------
# Variables


def datasource_variable() -> JSON:
    """The ``datasource`` variable every panel and target reads."""
    return {
        "current": {},
        "hide": 0,
        "includeAll": False,
        "label": "Data source",
        "multi": False,
        "name": "datasource",
        "options": [],
        "query": "prometheus",
        "refresh": 1,
        "regex": "",
        "type": "datasource",
    }


def query_variable(name: str, label: str, query: str, description: str) -> JSON:
    """A multi-select label-values variable; "All" is ``.*`` so absent labels match too."""
    return {
        "allValue": ".*",
        "current": {},
        "datasource": DS,
        "definition": query,
        "description": description,
        "hide": 0,
        "includeAll": True,
        "label": label,
        "multi": True,
        "name": name,
        "options": [],
        "query": query,
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "type": "query",
    }


def job_variable() -> JSON:
    """Which exporter(s): every exporter exposes ``otel_claude_build_info``."""
    return query_variable(
        "job",
        "Job",
        "label_values(otel_claude_build_info, job)",
        "Prometheus job of the otel-claude exporter(s). With several exporters polling the "
        "same organization, pick one: their Admin API numbers are the same data.",
    )


# --------------------------------------------------------------------------------------
# Dashboards


@dataclass
class Dashboard:
    """One dashboard: identity, variables and sections of panels."""

    uid: str
    title: str
    description: str
    variables: list[JSON]
    sections: list[Section]
    time_from: str = "now-24h"
    refresh: str = "1m"
    timezone: str = "browser"

    def render(self) -> JSON:
        """The dashboard JSON (classic model)."""
        return {
            "annotations": {
                "list": [
                    {
                        "builtIn": 1,
                        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                        "enable": True,
                        "hide": True,
                        "iconColor": "rgba(0, 211, 255, 1)",
                        "name": "Annotations & Alerts",
                        "type": "dashboard",
                    }
                ]
            },
            "description": self.description,
            "editable": True,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,
            "id": None,
            "links": [
                {
                    "asDropdown": True,
                    "icon": "external link",
                    "includeVars": True,
                    "keepTime": True,
                    "tags": [TAG],
                    "targetBlank": False,
                    "title": "otel-claude dashboards",
                    "tooltip": "",
                    "type": "dashboards",
                    "url": "",
                }
            ],
            "liveNow": False,
            "panels": list(self._layout()),
            "refresh": self.refresh,
            "schemaVersion": SCHEMA_VERSION,
            "tags": [TAG],
            "templating": {"list": [datasource_variable(), *self.variables]},
            "time": {"from": self.time_from, "to": "now"},
            "timepicker": {},
            "timezone": self.timezone,
            "title": self.title,
            "uid": self.uid,
            "version": 1,
            "weekStart": "",
        }

    def _layout(self) -> Iterator[JSON]:
        panel_id = 0
        y = 0
        for section in self.sections:
            if section.title is not None:
                panel_id += 1
                yield {
                    "collapsed": False,
                    "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                    "id": panel_id,
                    "panels": [],
                    "title": section.title,
                    "type": "row",
                }
                y += 1
            x = 0
            line_height = 0
            for panel in section.panels:
                if panel.w > GRID_WIDTH:
                    raise ValueError(f"{panel.title}: wider than the grid")
                if x + panel.w > GRID_WIDTH:
                    y += line_height
                    x = 0
                    line_height = 0
                panel_id += 1
                yield panel.render(panel_id, x, y)
                x += panel.w
                line_height = max(line_height, panel.h)
            y += line_height


def cost_dashboard() -> Dashboard:
    """Billed spend from the Admin API cost report, budgets and a month-end forecast."""
    ws = 'workspace_id=~"$workspace_id"'
    model = 'model=~"$model"'
    cost = "anthropic_api_cost_usd_total"
    mtd = total(sel("anthropic_api_cost_month_to_date_usd", JOB, ws))
    org_mtd = total(sel("anthropic_api_cost_month_to_date_usd", JOB))
    org_budget = total(sel("anthropic_api_budget_usd", JOB, 'scope="organization"'))
    ws_mtd = total(sel("anthropic_api_cost_month_to_date_usd", JOB, ws), "workspace_id")
    ws_budget = total(sel("anthropic_api_budget_usd", JOB, ws, 'scope="workspace"'), "workspace_id")
    # Linear forecast: month-to-date spend divided by the elapsed fraction of the UTC month.
    # The elapsed time is at least one hour so the first minutes of a month stay finite.
    elapsed_days = "clamp_min(day_of_month() - 1 + (hour() + minute() / 60) / 24, 1 / 24)"

    def forecast(spend: str) -> str:
        return f"{spend}\n* days_in_month()\n/ {elapsed_days}"

    def spend_by(label: str) -> Target:
        return Target(
            total(inc(sel(cost, JOB, ws, model), "$__interval"), label), "{{" + label + "}}"
        )

    def agent_cost(cost_source: str, window: str = "$__range") -> str:
        matcher = f'cost_source="{cost_source}"'
        return total(inc(sel("claude_agent_cost_usd_total", JOB, model, matcher), window))

    billed = total(inc(sel(cost, JOB, ws, model)))
    estimated = agent_cost("estimated")
    reported = agent_cost("reported")
    key_tokens = sel("anthropic_api_tokens_total", JOB, ws, model, 'api_key_id=~"$api_key_id"')
    top_keys = "topk(10, " + total(inc(key_tokens), "api_key_id") + ")"

    overview = [
        stat(
            "Spend today",
            "Billed cost of the current UTC day so far, summed over the selected workspaces. "
            "From `anthropic_api_cost_today_usd` (Admin API cost report, re-read every poll; "
            "the API fills a day in over several hours, so today's figure keeps rising "
            "after the usage happened). Not filtered by model.",
            "currencyUSD",
            Target(total(sel("anthropic_api_cost_today_usd", JOB, ws))),
        ),
        stat(
            "Month to date",
            "Billed cost of the current UTC month so far, summed over the selected workspaces. "
            "From `anthropic_api_cost_month_to_date_usd` (Admin API cost report). "
            "Not filtered by model.",
            "currencyUSD",
            Target(mtd),
        ),
        stat(
            "Forecast to month end",
            "Linear projection of the month's bill for the selected workspaces: month-to-date "
            "cost divided by the fraction of the UTC month that has elapsed "
            "(`day_of_month()`, `hour()`, `minute()`, `days_in_month()`, evaluated by "
            "Prometheus in UTC). It assumes the rest of the month spends at the average rate "
            "so far, and runs high early in a month and on days after a spike.",
            "currencyUSD",
            Target(forecast(mtd)),
        ),
        stat(
            "Organization budget",
            "Monthly organization budget from the exporter's configuration "
            "(`[admin.budgets] organization`), exposed as "
            '`anthropic_api_budget_usd{scope="organization"}`. No data: no budget configured.',
            "currencyUSD",
            Target(org_budget),
        ),
        stat(
            "Budget used",
            "Month-to-date billed cost of the whole organization (all workspaces, whatever "
            "the workspace filter) divided by the configured organization budget. "
            "Orange from 80 %, red from 100 %.",
            "percentunit",
            Target(per(org_mtd, org_budget)),
            thresholds=(("orange", 0.8), ("red", 1.0)),
        ),
        stat(
            "Forecast budget use",
            "Projected month-end organization bill (linear forecast, see 'Forecast to month "
            "end') divided by the organization budget: above 100 % the budget will not hold "
            "at the current pace.",
            "percentunit",
            Target(per(forecast(org_mtd), org_budget)),
            thresholds=(("orange", 0.8), ("red", 1.0)),
        ),
    ]
    breakdown_note = (
        " Each bar is the billed cost recorded by the exporter during that interval "
        "(`increase(anthropic_api_cost_usd_total[$__interval])`): the cost report is daily "
        "and revised during the day, so cost appears when the API publishes it, not "
        "at the minute the tokens were used. Downward revisions are never subtracted "
        "(see `anthropic_api_cost_revised_down_usd_total` on the health dashboard)."
    )
    breakdown = [
        timeseries(
            "Billed spend by workspace",
            "Billed USD per interval by workspace (`default` is the organization's default "
            "workspace)." + breakdown_note,
            "currencyUSD",
            spend_by("workspace_id"),
            bars=True,
            stack=True,
            interval="5m",
        ),
        timeseries(
            "Billed spend by model",
            "Billed USD per interval by model (normalized model id; `none` for costs that "
            "belong to no model, such as web search)." + breakdown_note,
            "currencyUSD",
            spend_by("model"),
            bars=True,
            stack=True,
            interval="5m",
        ),
        timeseries(
            "Billed spend by cost type",
            "Billed USD per interval by the cost report's `cost_type` (`tokens`, "
            "`web_search`, `code_execution`)." + breakdown_note,
            "currencyUSD",
            spend_by("cost_type"),
            bars=True,
            stack=True,
            interval="5m",
        ),
        timeseries(
            "Billed spend by token type",
            "Billed USD per interval by the cost report's `token_type` "
            "(`uncached_input_tokens`, `output_tokens`, `cache_read_input_tokens`, "
            "`cache_creation.ephemeral_5m_input_tokens`, "
            "`cache_creation.ephemeral_1h_input_tokens`; `none` when not token-priced)."
            + breakdown_note,
            "currencyUSD",
            spend_by("token_type"),
            bars=True,
            stack=True,
            interval="5m",
        ),
        bargauge(
            "Month to date by workspace",
            "Billed cost of the current UTC month per workspace "
            "(`anthropic_api_cost_month_to_date_usd`), with the workspace name from "
            "`anthropic_api_workspace_info` when the names source is enabled.",
            "currencyUSD",
            Target(
                with_names(
                    ws_mtd,
                    "workspace_id",
                    sel("anthropic_api_workspace_info", JOB),
                    "workspace_name",
                ),
                "{{workspace_id}} {{workspace_name}}",
            ),
        ),
        bargauge(
            "Budget used by workspace",
            "Month-to-date billed cost of each workspace divided by its configured budget "
            '(`[admin.budgets.workspaces]`, `anthropic_api_budget_usd{scope="workspace"}`). '
            "Only workspaces with a budget appear; one without billed cost this month shows 0.",
            "percentunit",
            Target(
                only_where(
                    f"({ws_mtd}\nor\n{ws_budget} * 0)",
                    ws_budget,
                ),
                "{{workspace_id}}",
            ),
            thresholds=(("orange", 0.8), ("red", 1.0)),
            max_value=1,
        ),
        table(
            "Top API keys by tokens",
            "The cost report has no API-key dimension, so this ranks API keys by tokens "
            "instead of dollars: the 10 keys with the most tokens of all types in the "
            "selected range (`anthropic_api_tokens_total` from the usage report), with "
            "names from `anthropic_api_key_info`. Needs `api_key_id` in `admin.group_by`; "
            "`console` is usage made in the Console without a key. Token mixes differ "
            "(output costs more than cache reads), so the order is not exactly the order "
            "of spend.",
            "short",
            [
                Column(
                    with_names(
                        top_keys, "api_key_id", sel("anthropic_api_key_info", JOB), "api_key_name"
                    ),
                    "Tokens in range",
                )
            ],
            w=8,
            sort_by="Tokens in range",
        ),
    ]
    compare_note = (
        " Billed cost already contains what agents report client-side, so these lines "
        "overlap and must never be added together. Client-side series have no workspace "
        "label and ignore the workspace filter."
    )
    versus = [
        timeseries(
            "Billed vs client-side cost (trailing 24 h)",
            "Cost of the 24 hours before each point: billed by Anthropic "
            "(`anthropic_api_cost_usd_total`, Admin API), estimated by otel-claude from its "
            'price table (`claude_agent_cost_usd_total{cost_source="estimated"}`) and '
            "reported by the Agent SDK / Claude Code result messages "
            '(`cost_source="reported"`, also a client-side estimate).' + compare_note,
            "currencyUSD",
            Target(total(inc(sel(cost, JOB, ws, model), "1d")), "billed (Admin API)"),
            Target(agent_cost("estimated", "1d"), "estimated client-side"),
            Target(agent_cost("reported", "1d"), "reported client-side"),
            w=12,
        ),
        bargauge(
            "Billed vs client-side cost in range",
            "The same three figures over the selected time range "
            "(`increase(...[$__range])`)." + compare_note,
            "currencyUSD",
            Target(billed, "billed (Admin API)"),
            Target(estimated, "estimated client-side"),
            Target(reported, "reported client-side"),
            w=6,
        ),
        stat(
            "Client-side estimate / billed",
            "Estimated client-side cost divided by billed cost over the selected range: the "
            "share of the bill that otel-claude sees from agents and transcripts. Far below "
            "100 %: usage that does not pass through the exporter (other apps, "
            "teammates); above 100 %: prices in the table are higher than billed ones, or "
            "the billed data has not caught up yet.",
            "percentunit",
            Target(per(estimated, billed)),
            w=6,
            h=8,
        ),
    ]
    return Dashboard(
        uid="otel-claude-cost",
        title="otel-claude / Cost",
        description="Billed Claude spend (Admin API cost report), budgets, month-end "
        "forecast, and billed vs client-side estimates.",
        variables=[
            job_variable(),
            query_variable(
                "workspace_id",
                "Workspace",
                'label_values(anthropic_api_cost_usd_total{job=~"$job"}, workspace_id)',
                "Workspace ids from the cost report (`default`: the default workspace).",
            ),
            query_variable(
                "model",
                "Model",
                'label_values(anthropic_api_cost_usd_total{job=~"$job"}, model)',
                "Normalized model ids from the cost report (`none`: not a model cost).",
            ),
            query_variable(
                "api_key_id",
                "API key",
                'label_values(anthropic_api_tokens_total{job=~"$job"}, api_key_id)',
                "API key ids from the usage report; empty unless `admin.group_by` includes "
                "`api_key_id`.",
            ),
        ],
        sections=[
            Section(None, overview),
            Section("Where the money goes (billed)", breakdown),
            Section("Billed vs client-side estimates", versus),
        ],
        time_from="now-7d",
        refresh="5m",
        timezone="utc",
    )


def _cache_panels(
    family: str, filters: Sequence[str], *, per: str, per_label: str, who: str
) -> list[Panel]:
    """Token and prompt-cache panels of one token family (never mixed with the other)."""
    tokens = f"`{family}`"
    all_tokens = sel(family, *filters)

    def typed(matcher: str) -> str:
        return sel(family, *filters, matcher)

    def hit_ratio(window: str, by: str = "") -> str:
        return share(
            total(inc(typed(CACHE_READ), window), by), total(inc(typed(INPUT_SIDE), window), by)
        )

    hit_note = (
        "Cache hit ratio = cache reads / all input-side tokens "
        "(uncached `input` + `cache_read` + `cache_creation_5m` + `cache_creation_1h`)."
    )
    return [
        stat(
            "Tokens in range",
            f"All tokens of all types {who} in the selected range ({tokens}, "
            "`increase(...[$__range])`).",
            "short",
            Target(total(inc(all_tokens))),
            w=6,
        ),
        stat(
            "Cache hit ratio",
            hit_note + " Over the selected range; higher means more input was served from "
            "the prompt cache at a tenth of the input price.",
            "percentunit",
            Target(hit_ratio("$__range")),
            w=6,
        ),
        stat(
            "1-hour share of cache writes",
            "Cache-write tokens with a 1-hour lifetime (billed at 2x input) as a share of all "
            "cache writes (5-minute writes are billed at 1.25x), over the selected range.",
            "percentunit",
            Target(
                share(
                    total(inc(typed('token_type="cache_creation_1h"'))),
                    total(inc(typed(CACHE_WRITES))),
                )
            ),
            w=6,
        ),
        timeseries(
            "Token rate by type, tokens/s",
            f"Tokens per second by token type ({tokens}, `rate(...[$__rate_interval])`). "
            "`input` is uncached input only.",
            "short",
            Target(total(rate(all_tokens), "token_type"), "{{token_type}}"),
            stack=True,
        ),
        timeseries(
            "Token rate by model, tokens/s",
            f"Tokens per second of all types by normalized model id ({tokens}).",
            "short",
            Target(total(rate(all_tokens), "model"), "{{model}}"),
            stack=True,
        ),
        timeseries(
            "Cache hit ratio, trailing 1 h",
            hit_note + " Each point covers the hour before it.",
            "percentunit",
            Target(hit_ratio("1h"), "cache hit ratio"),
            max_value=1,
        ),
        timeseries(
            "Cache writes 5 min vs 1 h, tokens/s",
            "Prompt-cache writes per second by lifetime: `cache_creation_5m` (billed at 1.25x "
            f"the input price) and `cache_creation_1h` (2x), from {tokens}.",
            "short",
            Target(total(rate(typed(CACHE_WRITES)), "token_type"), "{{token_type}}"),
        ),
        bargauge(
            f"Cache hit ratio by {per}",
            hit_note + f" Per {per}, over the selected range.",
            "percentunit",
            Target(hit_ratio("$__range", per_label), "{{" + per_label + "}}"),
            max_value=1,
        ),
    ]


def tokens_dashboard() -> Dashboard:
    """Token usage and prompt caching, one section per family."""
    org = [JOB, 'workspace_id=~"$workspace_id"', 'model=~"$model"']
    agent = [JOB, 'model=~"$model"', 'source=~"$source"']
    cost = "anthropic_api_cost_usd_total"

    def saved_usd(window: str, by: str = "") -> str:
        # Without caching, every cached token would be plain input. A cache read costs 0.1x
        # input, so it saved 9x its own cost; a write costs 1.25x (5 min) or 2x (1 h) input,
        # so it added 0.2x resp. 0.5x of its own cost.
        terms = [
            ("9", 'token_type="cache_read_input_tokens"'),
            ("-0.2", 'token_type="cache_creation.ephemeral_5m_input_tokens"'),
            ("-0.5", 'token_type="cache_creation.ephemeral_1h_input_tokens"'),
        ]
        parts = [f"{w} * {inc(sel(cost, *org, m), window)}" for w, m in terms]
        return total("\n  " + "\n  or ".join(parts) + "\n", by)

    def saved_tokens(window: str, by: str = "") -> str:
        family = "claude_agent_tokens_total"
        terms = [
            ("0.9", 'token_type="cache_read"'),
            ("-0.25", 'token_type="cache_creation_5m"'),
            ("-1", 'token_type="cache_creation_1h"'),
        ]
        parts = [f"{w} * {inc(sel(family, *agent, m), window)}" for w, m in terms]
        return total("\n  " + "\n  or ".join(parts) + "\n", by)

    saved_note = (
        "Approximation: without caching, every cache-read and cache-write token would have "
        "been billed as plain input. A cache read costs 0.1x the input price, so it saved "
        "9x its own billed cost; a 5-minute write costs 1.25x and a 1-hour write 2x, so "
        "they cost 0.2x resp. 0.5x of their billed amount extra. Net saving = "
        "9 x read cost - 0.2 x 5m-write cost - 0.5 x 1h-write cost, from the cost "
        "report's per-token-type amounts (`anthropic_api_cost_usd_total`), which carry batch "
        "and long-context multipliers already. Negative: caches written but not reused."
    )
    org_panels = _cache_panels(
        "anthropic_api_tokens_total",
        org,
        per="workspace",
        per_label="workspace_id",
        who="billed to the organization (Admin API usage report)",
    )
    org_panels.insert(
        3,
        stat(
            "Saved by caching, USD",
            saved_note + " Over the selected range, selected workspaces and models.",
            "currencyUSD",
            Target(saved_usd("$__range")),
            w=6,
        ),
    )
    org_panels += [
        bargauge(
            "Saved by caching by workspace",
            saved_note + " Per workspace, over the selected range.",
            "currencyUSD",
            Target(saved_usd("$__range", "workspace_id"), "{{workspace_id}}"),
        ),
        timeseries(
            "Saved by caching, trailing 24 h",
            saved_note + " Each point covers the 24 hours before it.",
            "currencyUSD",
            Target(saved_usd("1d"), "saved by caching"),
            w=8,
            min_value=None,
        ),
    ]
    saved_tokens_note = (
        "Approximation in input-token equivalents (client-side cost is not split by token "
        "type): a cache read saves 0.9 of an input token's price, a 5-minute write costs "
        "0.25 and a 1-hour write 1.0 input-token price extra. Net = 0.9 x cache_read - "
        "0.25 x cache_creation_5m - 1 x cache_creation_1h. Multiply by a model's input "
        "price per token for dollars."
    )
    agent_panels = _cache_panels(
        "claude_agent_tokens_total",
        agent,
        per="model",
        per_label="model",
        who="seen client-side (Agent SDK, stream-json ingest, Claude Code transcripts)",
    )
    agent_panels.insert(
        3,
        stat(
            "Input tokens saved by caching",
            saved_tokens_note + " Over the selected range.",
            "short",
            Target(saved_tokens("$__range")),
            w=6,
        ),
    )
    agent_panels += [
        bargauge(
            "Tokens by source",
            "All tokens in the selected range by client-side source: `ingest` (HTTP / "
            "`otel-claude ingest`), `sdk` (Python API), `transcript` (Claude Code transcript "
            "files). Each API response counts once even when several sources saw it.",
            "short",
            Target(total(inc(sel("claude_agent_tokens_total", *agent)), "source"), "{{source}}"),
        ),
        bargauge(
            "Input tokens saved by caching by model",
            saved_tokens_note + " Per model, over the selected range.",
            "short",
            Target(saved_tokens("$__range", "model"), "{{model}}"),
        ),
    ]
    # One dashboard shows both families: the suffix keeps every title unique and says which.
    for panel in org_panels:
        panel.title += " (org)"
    for panel in agent_panels:
        panel.title += " (client-side)"
    return Dashboard(
        uid="otel-claude-tokens",
        title="otel-claude / Tokens and cache",
        description="Token usage by type and model and prompt-cache efficiency, for the "
        "organization's billing data and for client-side agents, never summed together.",
        variables=[
            job_variable(),
            query_variable(
                "workspace_id",
                "Workspace",
                'label_values(anthropic_api_tokens_total{job=~"$job"}, workspace_id)',
                "Workspace ids from the usage report (Admin API section only).",
            ),
            query_variable(
                "model",
                "Model",
                'label_values({__name__=~"anthropic_api_tokens_total|claude_agent_tokens_total",'
                ' job=~"$job"}, model)',
                "Normalized model ids of both token families.",
            ),
            query_variable(
                "source",
                "Client source",
                'label_values(claude_agent_tokens_total{job=~"$job"}, source)',
                "Client-side source (ingest, sdk, transcript); client-side section only.",
            ),
        ],
        sections=[
            Section(
                "Organization: Admin API usage report (anthropic_api_tokens_total)", org_panels
            ),
            Section("Client-side agents (claude_agent_tokens_total)", agent_panels),
        ],
    )


def claude_code_dashboard() -> Dashboard:
    """Claude Code analytics per actor: activity, output, acceptance and cost."""
    actor = 'actor=~"$actor"'
    model = 'model=~"$model"'

    def cc(name: str, *matchers: str) -> str:
        return sel(f"anthropic_claude_code_{name}_total", JOB, actor, *matchers)

    sessions = cc("sessions")
    added = cc("lines", 'type="added"')
    removed = cc("lines", 'type="removed"')
    commits = cc("commits")
    prs = cc("pull_requests")
    decisions = cc("tool_decisions")
    accepted = cc("tool_decisions", 'decision="accepted"')
    cost = cc("estimated_cost_usd", model)

    def in_range(selector: str, by: str = "") -> str:
        return total(inc(selector), by)

    def acceptance(by: str = "") -> str:
        return share(in_range(accepted, by), in_range(decisions, by))

    src = (
        " From the Claude Code analytics API (`anthropic_claude_code_*`, one record per user "
        "and UTC day, read about an hour late), over the selected range."
    )
    per_day = (
        " Each point is the trailing 24 hours; the API reports whole days, so values move "
        "in steps as a day's figures are published and revised."
    )
    actors = zero_if_absent("count(" + in_range(sessions, "actor") + " > 0)")
    stats = [
        stat(
            "Active users",
            "Actors with at least one Claude Code session. An actor is a user's e-mail "
            '(hashed unless `admin.actor_labels = "plain"`) or an API key\'s name.' + src,
            "short",
            Target(actors),
            w=3,
        ),
        stat(
            "Sessions",
            "Claude Code sessions started." + src,
            "short",
            Target(in_range(sessions)),
            w=3,
        ),
        stat(
            "Lines added",
            'Lines of code added by Claude Code (`type="added"`).' + src,
            "short",
            Target(in_range(added)),
            w=3,
        ),
        stat(
            "Lines removed",
            'Lines of code removed by Claude Code (`type="removed"`).' + src,
            "short",
            Target(in_range(removed)),
            w=3,
        ),
        stat(
            "Commits",
            "Git commits made by Claude Code." + src,
            "short",
            Target(in_range(commits)),
            w=3,
        ),
        stat(
            "Pull requests",
            "Pull requests opened by Claude Code." + src,
            "short",
            Target(in_range(prs)),
            w=3,
        ),
        stat(
            "Edit acceptance rate",
            "Accepted edit-tool proposals / (accepted + rejected), from "
            "`anthropic_claude_code_tool_decisions_total` over all tools." + src,
            "percentunit",
            Target(acceptance()),
            w=3,
        ),
        stat(
            "Estimated cost",
            "Claude Code's own cost estimate (`anthropic_claude_code_estimated_cost_usd_total`"
            ", integer cents from the API), not the bill; billed cost is on the Cost "
            "dashboard." + src,
            "currencyUSD",
            Target(in_range(cost)),
            w=3,
        ),
        stat(
            "Cost per user",
            "Estimated cost divided by the number of active users." + src,
            "currencyUSD",
            Target(per(in_range(cost), actors)),
            w=6,
        ),
        stat(
            "Cost per session",
            "Estimated cost divided by sessions." + src,
            "currencyUSD",
            Target(per(in_range(cost), in_range(sessions))),
            w=6,
        ),
        stat(
            "Cost per commit",
            "Estimated cost divided by commits made by Claude Code; no data without commits." + src,
            "currencyUSD",
            Target(per(in_range(cost), in_range(commits))),
            w=6,
        ),
        stat(
            "Cost per pull request",
            "Estimated cost divided by pull requests opened by Claude Code; no data without "
            "pull requests." + src,
            "currencyUSD",
            Target(per(in_range(cost), in_range(prs))),
            w=6,
        ),
    ]
    per_actor = table(
        "Per user",
        "One row per actor over the selected range: sessions, lines, commits, pull requests, "
        "edit acceptance rate and estimated cost (Claude Code analytics API).",
        "short",
        [
            Column(in_range(sessions, "actor"), "Sessions"),
            Column(in_range(added, "actor"), "Lines added"),
            Column(in_range(removed, "actor"), "Lines removed"),
            Column(in_range(commits, "actor"), "Commits"),
            Column(in_range(prs, "actor"), "Pull requests"),
            Column(acceptance("actor"), "Edit acceptance", "percentunit"),
            Column(in_range(cost, "actor"), "Estimated cost", "currencyUSD"),
            Column(
                per(in_range(cost, "actor"), in_range(commits, "actor"), "actor"),
                "Cost per commit",
                "currencyUSD",
            ),
        ],
        h=10,
        sort_by="Estimated cost",
    )
    trends = [
        timeseries(
            "Lines per day",
            "Lines added and removed by Claude Code, all selected actors." + per_day,
            "short",
            Target(total(inc(cc("lines"), "1d"), "type"), "{{type}}"),
        ),
        timeseries(
            "Sessions per day by user",
            "Claude Code sessions per actor." + per_day,
            "short",
            Target(total(inc(sessions, "1d"), "actor"), "{{actor}}"),
            stack=True,
        ),
        timeseries(
            "Commits and pull requests per day",
            "Commits and pull requests made by Claude Code, all selected actors." + per_day,
            "short",
            Target(total(inc(commits, "1d")), "commits"),
            Target(total(inc(prs, "1d")), "pull requests"),
        ),
        timeseries(
            "Estimated cost per day by model",
            "Claude Code's estimated cost per model (not the bill)." + per_day,
            "currencyUSD",
            Target(total(inc(cost, "1d"), "model"), "{{model}}"),
            stack=True,
        ),
        bargauge(
            "Edit acceptance rate by tool",
            "Accepted / (accepted + rejected) proposals per edit tool (`tool` label of "
            "`anthropic_claude_code_tool_decisions_total`)." + src,
            "percentunit",
            Target(acceptance("tool"), "{{tool}}"),
            max_value=1,
        ),
        bargauge(
            "Estimated cost by user (top 15)",
            "The 15 actors with the highest estimated Claude Code cost." + src,
            "currencyUSD",
            Target("topk(15, " + in_range(cost, "actor") + ")", "{{actor}}"),
        ),
        timeseries(
            "Claude Code tokens per day by type",
            "Tokens used by Claude Code (`anthropic_claude_code_tokens_total`; this API "
            "reports `cache_creation` without the 5 min / 1 h split)." + per_day,
            "short",
            Target(total(inc(cc("tokens", model), "1d"), "token_type"), "{{token_type}}"),
            w=8,
            stack=True,
        ),
    ]
    return Dashboard(
        uid="otel-claude-claude-code",
        title="otel-claude / Claude Code team",
        description="Claude Code adoption and output per user from the Claude Code analytics "
        "API: sessions, lines, commits, pull requests, edit acceptance and estimated cost.",
        variables=[
            job_variable(),
            query_variable(
                "actor",
                "User",
                'label_values(anthropic_claude_code_sessions_total{job=~"$job"}, actor)',
                "Claude Code actor: e-mail (hashed by default) or API key name.",
            ),
            query_variable(
                "model",
                "Model",
                'label_values(anthropic_claude_code_tokens_total{job=~"$job"}, model)',
                "Model of Claude Code tokens and estimated cost.",
            ),
        ],
        sections=[
            Section(None, stats),
            Section("Per user", [per_actor]),
            Section("Trends", trends),
        ],
        time_from="now-7d",
        refresh="5m",
        timezone="utc",
    )


def agents_dashboard() -> Dashboard:
    """Client-side agent apps: tokens, cost, conversations, steps."""
    model = 'model=~"$model"'
    source = 'source=~"$source"'
    project = 'project=~"$project"'
    tokens = sel("claude_agent_tokens_total", JOB, model, source, project)
    cost_family = "claude_agent_cost_usd_total"
    estimated = sel(cost_family, JOB, model, project, 'cost_source="estimated"')
    reported_all = sel(cost_family, JOB, project, 'cost_source="reported"')
    conversations = sel("claude_agent_conversations_total", JOB)
    failed_conversations = sel("claude_agent_conversations_total", JOB, 'outcome!="success"')
    steps = sel("claude_agent_steps_total", JOB, model, source)
    unpriced = sel("claude_agent_unpriced_tokens_total", JOB, model)
    searches = sel("claude_agent_web_search_requests_total", JOB, model, source)

    def in_range(selector: str, by: str = "") -> str:
        return total(inc(selector), by)

    src = " Client-side (`claude_agent_*`), over the selected range."
    failed = "(" + zero_if_absent(in_range(failed_conversations)) + ")"
    stats = [
        stat(
            "Tokens",
            "All tokens of all types, each API response counted once "
            "(`claude_agent_tokens_total`)." + src,
            "short",
            Target(in_range(tokens)),
        ),
        stat(
            "Estimated cost",
            "Cost computed by otel-claude from its versioned price table "
            '(`claude_agent_cost_usd_total{cost_source="estimated"}`).' + src,
            "currencyUSD",
            Target(in_range(estimated)),
        ),
        stat(
            "Reported cost",
            "Cost reported by result messages (`total_cost_usd` / `modelUsage[*].costUSD`, "
            'computed by the SDK/CLI: `cost_source="reported"`). Not filtered by model or '
            'source (results without a per-model split carry `model="unknown"`).' + src,
            "currencyUSD",
            Target(in_range(reported_all)),
        ),
        stat(
            "Conversations",
            "Finished agent calls: one result message per `query()` / `claude -p` run "
            "(`claude_agent_conversations_total`, all outcomes)." + src,
            "short",
            Target(in_range(conversations)),
        ),
        stat(
            "Cost per conversation",
            "Reported cost divided by finished conversations (both from result messages, so "
            "they cover the same calls)." + src,
            "currencyUSD",
            Target(per(in_range(reported_all), in_range(conversations))),
        ),
        stat(
            "Failed conversations",
            "Share of finished calls whose result is not `success` (max turns, budget, "
            "errors during execution, ...)." + src,
            "percentunit",
            Target(share(failed, in_range(conversations))),
            thresholds=(("orange", 0.05), ("red", 0.2)),
        ),
        stat(
            "Steps",
            "Distinct API responses (message ids) made by agents "
            "(`claude_agent_steps_total`)." + src,
            "short",
            Target(in_range(steps)),
            w=6,
        ),
        stat(
            "Steps per conversation",
            "Steps divided by finished conversations; steps of calls still running are "
            "included." + src,
            "short",
            Target(per(in_range(sel("claude_agent_steps_total", JOB)), in_range(conversations))),
            w=6,
            decimals=1,
        ),
        stat(
            "Unpriced tokens",
            "Tokens of models missing from the price table "
            "(`claude_agent_unpriced_tokens_total`): counted, but not in the estimated cost. "
            "Above zero: add the model under `[pricing.models]`." + src,
            "short",
            Target(zero_if_absent(in_range(unpriced))),
            w=6,
            thresholds=(("orange", 1),),
        ),
        stat(
            "Web searches",
            "Server-side web searches (`claude_agent_web_search_requests_total`), billed at "
            "$10 per 1,000." + src,
            "short",
            Target(zero_if_absent(in_range(searches))),
            w=6,
        ),
    ]
    graphs = [
        timeseries(
            "Token rate by type, tokens/s",
            "Client-side tokens per second by token type (`claude_agent_tokens_total`).",
            "short",
            Target(total(rate(tokens), "token_type"), "{{token_type}}"),
            stack=True,
        ),
        timeseries(
            "Token rate by model and source, tokens/s",
            "Client-side tokens per second by model and source (`ingest`, `sdk`, `transcript`).",
            "short",
            Target(total(rate(tokens), "model, source"), "{{model}} / {{source}}"),
            stack=True,
        ),
        timeseries(
            "Cost by model and cost source",
            "USD per interval by model: `estimated` from otel-claude's price table, "
            "`reported` from result messages. Two estimates of the same usage: compare "
            "them, do not add them (`claude_agent_cost_usd_total`).",
            "currencyUSD",
            Target(
                total(
                    inc(sel(cost_family, JOB, model, project), "$__interval"), "model, cost_source"
                ),
                "{{model}} ({{cost_source}})",
            ),
            bars=True,
            interval="1m",
        ),
        timeseries(
            "Conversations by outcome",
            "Finished calls per interval by result subtype: `success`, `error_max_turns`, "
            "`error_during_execution`, `error_max_budget_usd`, "
            "`error_max_structured_output_retries`, `other` "
            "(`claude_agent_conversations_total`).",
            "short",
            Target(total(inc(conversations, "$__interval"), "outcome"), "{{outcome}}"),
            bars=True,
            stack=True,
            interval="1m",
        ),
        timeseries(
            "Steps per second by model",
            "Distinct API responses per second by model and source (`claude_agent_steps_total`).",
            "short",
            Target(total(rate(steps), "model, source"), "{{model}} / {{source}}"),
            w=8,
        ),
        timeseries(
            "Unpriced tokens by model",
            "Tokens per interval of models missing from the price table "
            "(`claude_agent_unpriced_tokens_total`). Empty is good.",
            "short",
            Target(zero_if_absent(total(inc(unpriced, "$__interval"), "model")), "{{model}}"),
            w=8,
            bars=True,
            interval="1m",
        ),
        timeseries(
            "Web searches by model",
            "Server-side web searches per interval by model "
            "(`claude_agent_web_search_requests_total`).",
            "short",
            Target(zero_if_absent(total(inc(searches, "$__interval"), "model")), "{{model}}"),
            w=8,
            bars=True,
            interval="1m",
        ),
    ]

    def by_model(selector: str) -> str:
        return in_range(selector, "model")

    def typed(matcher: str) -> str:
        return by_model(sel("claude_agent_tokens_total", JOB, model, source, project, matcher))

    reported = sel(cost_family, JOB, model, project, 'cost_source="reported"')
    per_model = table(
        "Per model",
        "One row per model over the selected range: tokens by type, steps, estimated and "
        "reported cost (client-side, `claude_agent_*`).",
        "short",
        [
            Column(typed('token_type="input"'), "Input"),
            Column(typed('token_type="output"'), "Output"),
            Column(typed(CACHE_READ), "Cache read"),
            Column(typed(CACHE_WRITES), "Cache write"),
            Column(by_model(steps), "Steps"),
            Column(by_model(estimated), "Estimated cost", "currencyUSD"),
            Column(by_model(reported), "Reported cost", "currencyUSD"),
        ],
        h=9,
        sort_by="Estimated cost",
    )
    return Dashboard(
        uid="otel-claude-agents",
        title="otel-claude / Agent apps",
        description="Client-side usage of Claude Agent SDK apps, `claude -p` runs and Claude "
        "Code transcripts: tokens, estimated and reported cost, conversations and steps.",
        variables=[
            job_variable(),
            query_variable(
                "model",
                "Model",
                'label_values(claude_agent_tokens_total{job=~"$job"}, model)',
                "Normalized model id.",
            ),
            query_variable(
                "source",
                "Source",
                'label_values(claude_agent_tokens_total{job=~"$job"}, source)',
                "Where the messages came from: ingest, sdk or transcript.",
            ),
            query_variable(
                "project",
                "Project",
                'label_values(claude_agent_tokens_total{job=~"$job"}, project)',
                "Claude Code project directory; empty unless `transcripts.project_label` is "
                "on. Filters tokens and cost only.",
            ),
        ],
        sections=[
            Section(None, stats),
            Section("Over time", graphs),
            Section("Per model", [per_model]),
        ],
    )


def health_dashboard() -> Dashboard:
    """The exporter itself: sources, freshness, Admin API requests, ingest, ledger."""
    src = 'source=~"$source"'
    up = sel("otel_claude_source_up", JOB, src)
    requests = sel("otel_claude_admin_requests_total", JOB)
    not_ok = sel("otel_claude_admin_requests_total", JOB, 'status!~"2.."')
    failed = "(" + zero_if_absent(total(inc(not_ok))) + ")"
    up_mappings = [
        {
            "options": {
                "0": {"color": "red", "index": 0, "text": "down"},
                "1": {"color": "green", "index": 1, "text": "up"},
            },
            "type": "value",
        }
    ]
    top = [
        stat(
            "Exporter version",
            "Version of the running exporter and its Python (`otel_claude_build_info`, "
            "always 1). Several entries: several exporters or versions in the selection.",
            "short",
            Target(
                "max by (version, python_version) (" + sel("otel_claude_build_info", JOB) + ")",
                "{{version}} (Python {{python_version}})",
            ),
            text_mode="name",
        ),
        stat(
            "Sources",
            "Each enabled source: `up` when its last pass worked, `down` when it failed "
            "(`otel_claude_source_up`). Sources: `ingest`, `transcripts`, `admin_usage`, "
            "`admin_cost`, `claude_code`, `admin_names`.",
            "short",
            Target("max by (source) (" + up + ")", "{{source}}"),
            w=8,
            mappings=up_mappings,
        ),
        stat(
            "Sources down",
            "Number of enabled sources whose last pass failed (`otel_claude_source_up == 0`); "
            "the reason is in 'Source errors'.",
            "short",
            Target(zero_if_absent("count(" + up + " == 0)")),
            thresholds=(("red", 1),),
        ),
        stat(
            "Worst data lag",
            "Age of the newest complete Admin API bucket across the usage, cost and Claude "
            "Code reports: `time() - anthropic_api_newest_bucket_end_timestamp_seconds`. "
            "Usage data normally lags minutes, cost and Claude Code analytics hours (the cost "
            "report has daily buckets, so up to a day plus its delay).",
            "s",
            Target(
                "max(time() - "
                + sel("anthropic_api_newest_bucket_end_timestamp_seconds", JOB, src)
                + ")"
            ),
        ),
        stat(
            "Ledger size",
            "On-disk size of the SQLite ledger including its write-ahead log "
            "(`otel_claude_ledger_size_bytes`).",
            "bytes",
            Target("max(" + sel("otel_claude_ledger_size_bytes", JOB) + ")"),
        ),
    ]
    freshness = [
        bargauge(
            "Data lag by report",
            "Per Admin API report (`admin_usage`, `admin_cost`, `claude_code`): now minus "
            "the end of the newest complete bucket read "
            "(`anthropic_api_newest_bucket_end_timestamp_seconds`).",
            "s",
            Target(
                "time() - max by (source) ("
                + sel("anthropic_api_newest_bucket_end_timestamp_seconds", JOB, src)
                + ")",
                "{{source}}",
            ),
            thresholds=(("orange", 3 * 3600), ("red", 30 * 3600)),
        ),
        bargauge(
            "Time since last success",
            "Seconds since each source's last successful pass "
            "(`time() - otel_claude_source_last_success_timestamp_seconds`). Admin API "
            "sources poll every `OTEL_CLAUDE_POLL_INTERVAL` (60 s by default).",
            "s",
            Target(
                "time() - max by (source) ("
                + sel("otel_claude_source_last_success_timestamp_seconds", JOB, src)
                + ")",
                "{{source}}",
            ),
            thresholds=(("orange", 300), ("red", 1800)),
        ),
        table(
            "Source passes",
            "Per source: when its last pass succeeded "
            "(`otel_claude_source_last_success_timestamp_seconds`), how long the last pass "
            "took (`otel_claude_source_poll_duration_seconds`) and the passes and failed "
            "passes in the selected range (`otel_claude_source_polls_total`, "
            "`otel_claude_source_errors_total`).",
            "short",
            [
                Column(
                    "1000 * max by (source) ("
                    + sel("otel_claude_source_last_success_timestamp_seconds", JOB, src)
                    + ")",
                    "Last success",
                    "dateTimeFromNow",
                ),
                Column(
                    "max by (source) ("
                    + sel("otel_claude_source_poll_duration_seconds", JOB, src)
                    + ")",
                    "Last pass duration",
                    "s",
                ),
                Column(
                    total(inc(sel("otel_claude_source_polls_total", JOB, src)), "source"), "Passes"
                ),
                Column(
                    # Every source gets a row: 0 where it never failed.
                    total(inc(sel("otel_claude_source_errors_total", JOB, src)), "source")
                    + "\nor\n"
                    + total(inc(sel("otel_claude_source_polls_total", JOB, src)), "source")
                    + " * 0",
                    "Failed passes",
                ),
            ],
            w=8,
        ),
    ]
    sources = [
        timeseries(
            "Source up",
            "1 while a source works, 0 after a failed pass (`otel_claude_source_up`).",
            "short",
            Target("max by (source) (" + up + ")", "{{source}}"),
            max_value=1,
        ),
        timeseries(
            "Pass duration",
            "Duration of each source's last pass: an Admin API poll (with its retries and "
            "pagination) or a transcript scan (`otel_claude_source_poll_duration_seconds`).",
            "s",
            Target(
                "max by (source) ("
                + sel("otel_claude_source_poll_duration_seconds", JOB, src)
                + ")",
                "{{source}}",
            ),
        ),
        timeseries(
            "Source errors",
            "Failed passes per second by source and reason (`unauthorized`, `forbidden`, "
            "`rate_limited`, `spend_limit`, `server_error`, `timeout`, `connection`, "
            "`invalid_response`, `ledger`, ...; `otel_claude_source_errors_total`). Empty "
            "is good.",
            "cps",
            Target(
                zero_if_absent(
                    total(rate(sel("otel_claude_source_errors_total", JOB, src)), "source, reason")
                ),
                "{{source}}: {{reason}}",
            ),
        ),
        timeseries(
            "Downward revisions (trailing 1 h)",
            "How much the Admin API lowered figures it had already published, in the hour "
            "before each point (`anthropic_api_tokens_revised_down_total`). Such revisions "
            "are kept aside and never subtracted from the main counters.",
            "short",
            Target(
                zero_if_absent(
                    total(
                        inc(sel("anthropic_api_tokens_revised_down_total", JOB), "1h"), "token_type"
                    )
                ),
                "{{token_type}}",
            ),
        ),
    ]
    admin = [
        timeseries(
            "Admin API requests by endpoint and status",
            "Requests per second to the Admin API by endpoint and HTTP status (`timeout`, "
            "`error`: no response), from `otel_claude_admin_requests_total`. The API asks "
            "for at most about one request a minute sustained.",
            "reqps",
            Target(total(rate(requests), "endpoint, status"), "{{endpoint}} {{status}}"),
        ),
        timeseries(
            "Admin API retries",
            "Retried requests per second by endpoint and reason (429 honouring "
            "`retry-after`, 5xx, timeouts; `otel_claude_admin_retries_total`).",
            "reqps",
            Target(
                zero_if_absent(
                    total(rate(sel("otel_claude_admin_retries_total", JOB)), "endpoint, reason")
                ),
                "{{endpoint}}: {{reason}}",
            ),
            w=8,
        ),
        stat(
            "Admin API error ratio",
            "Share of Admin API requests in the selected range that did not answer 2xx "
            "(`otel_claude_admin_requests_total`).",
            "percentunit",
            Target(share(failed, total(inc(requests)))),
            h=8,
            thresholds=(("orange", 0.05), ("red", 0.25)),
        ),
    ]
    ingest = [
        timeseries(
            "Ingested messages",
            "Client-side messages taken in per second by source and outcome: `accepted` "
            "(counted), `duplicate` (already seen), `ignored` (carries no usage), from "
            "`otel_claude_ingest_messages_total`.",
            "cps",
            Target(
                total(rate(sel("otel_claude_ingest_messages_total", JOB)), "source, outcome"),
                "{{source}} {{outcome}}",
            ),
        ),
        timeseries(
            "Rejected messages",
            "Client-side messages rejected as unusable per second, by source and reason "
            "(`otel_claude_ingest_rejected_total`, e.g. `invalid_json`).",
            "cps",
            Target(
                zero_if_absent(
                    total(rate(sel("otel_claude_ingest_rejected_total", JOB)), "source, reason")
                ),
                "{{source}}: {{reason}}",
            ),
        ),
        timeseries(
            "Ledger keys by kind",
            "Deduplication keys held by the ledger (`otel_claude_ledger_keys`): `steps`, "
            "`calls`, `results`. Bounded by the dedup horizon (60 days by default).",
            "short",
            Target("max by (kind) (" + sel("otel_claude_ledger_keys", JOB) + ")", "{{kind}}"),
            w=8,
        ),
        timeseries(
            "Ledger size over time",
            "SQLite ledger plus write-ahead log on disk (`otel_claude_ledger_size_bytes`).",
            "bytes",
            Target(
                "max by (instance) (" + sel("otel_claude_ledger_size_bytes", JOB) + ")",
                "{{instance}}",
            ),
            w=8,
        ),
        timeseries(
            "Ledger keys pruned",
            "Dedup keys dropped per second after the horizon, by kind "
            "(`otel_claude_ledger_keys_pruned_total`).",
            "cps",
            Target(
                zero_if_absent(
                    total(rate(sel("otel_claude_ledger_keys_pruned_total", JOB)), "kind")
                ),
                "{{kind}}",
            ),
            w=8,
        ),
    ]
    return Dashboard(
        uid="otel-claude-health",
        title="otel-claude / Exporter health",
        description="Health of the otel-claude exporter: sources, data freshness, Admin API "
        "requests and retries, ingest, and the ledger.",
        variables=[
            job_variable(),
            query_variable(
                "source",
                "Source",
                'label_values(otel_claude_source_up{job=~"$job"}, source)',
                "Exporter source: ingest, transcripts, admin_usage, admin_cost, claude_code, "
                "admin_names.",
            ),
        ],
        sections=[
            Section(None, top),
            Section("Freshness", freshness),
            Section("Sources", sources),
            Section("Admin API", admin),
            Section("Ingest and ledger", ingest),
        ],
        time_from="now-6h",
    )


def dashboards() -> list[Dashboard]:
    """Every dashboard, in the order of the dashboard links."""
    return [
        cost_dashboard(),
        tokens_dashboard(),
        claude_code_dashboard(),
        agents_dashboard(),
        health_dashboard(),
    ]


# --------------------------------------------------------------------------------------
# Queries for tests


class PanelQuery(NamedTuple):
    """One panel query with every Grafana variable replaced by a concrete value."""

    dashboard_uid: str
    panel_title: str
    expr: str

    @property
    def metrics(self) -> frozenset[str]:
        """Metric names the query reads."""
        return referenced_metrics(self.expr)


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")


def variables_in(text: str) -> set[str]:
    """Names of the Grafana variables ``text`` uses (``$x``, ``${x}``, ``${x:fmt}``, ``[[x]]``)."""
    return {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(text)}


def substitute(expr: str) -> str:
    """``expr`` with built-in interval variables and dashboard variables made concrete."""

    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name.startswith("__"):
            if name not in BUILTIN_SUBSTITUTES:
                raise ValueError(f"no substitute for built-in variable ${name}")
            return BUILTIN_SUBSTITUTES[name]
        return VARIABLE_SUBSTITUTE

    return _VARIABLE.sub(value, expr)


def iter_panels(dashboard: JSON) -> Iterator[JSON]:
    """Every panel of a dashboard JSON, rows' nested panels included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(dashboard_json: Sequence[JSON] | None = None) -> list[PanelQuery]:
    """``(dashboard_uid, panel_title, expr)`` of every panel target, ready for Prometheus.

    ``$__interval`` and ``$__rate_interval`` become ``1m``, ``$__range`` ``1h``, and every
    dashboard variable ``.*`` (its "All" value). A panel with several queries (tables,
    comparisons) yields one entry per query, with the same title. Without an argument the
    dashboards are built from this file; tests may pass loaded JSON instead.
    """
    boards = dashboard_json if dashboard_json is not None else [d.render() for d in dashboards()]
    out: list[PanelQuery] = []
    for board in boards:
        for panel in iter_panels(board):
            for target in panel.get("targets", []):
                out.append(PanelQuery(board["uid"], panel["title"], substitute(target["expr"])))
    return out


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
    }
)


def referenced_metrics(expr: str) -> frozenset[str]:
    """Metric names in a PromQL expression (a lexical scan, enough for these dashboards)."""
    names: set[str] = set()
    for match in re.finditer(r'__name__\s*=~?\s*"([^"]*)"', expr):
        names.update(n for n in match.group(1).split("|") if n)
    text = _STRING.sub('""', expr)
    text = _BRACES.sub("{}", text)
    text = _BRACKETS.sub("", text)
    text = _GROUPING.sub("", text)
    text = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?", "0", text, flags=re.IGNORECASE)
    for match in _IDENT.finditer(text):
        word = match.group(1)
        if word.lower() not in _KEYWORDS:
            names.add(word)
    return frozenset(names)


# --------------------------------------------------------------------------------------
# Output


def render_files() -> dict[Path, str]:
    """Map each output path to the exact text of every generated dashboard."""
    files: dict[Path, str] = {}
    for dashboard in dashboards():
        text = json.dumps(dashboard.render(), indent=2, ensure_ascii=False) + "\n"
        files[DASHBOARD_DIR / f"{dashboard.uid}.json"] = text
    return files


def check(files: dict[Path, str]) -> list[str]:
    """Problems between generated and committed files (empty when in sync)."""
    problems = []
    for path, text in sorted(files.items()):
        if not path.exists():
            problems.append(f"missing: {path.name}")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"out of date: {path.name}")
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        if path not in files:
            problems.append(f"not generated (delete it or add it to build.py): {path.name}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Write the dashboards, or with ``--check`` compare them with the committed files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed JSON is not up to date"
    )
    args = parser.parse_args(argv)
    files = render_files()
    if args.check:
        problems = check(files)
        for problem in problems:
            print(f"grafana/dashboards: {problem}", file=sys.stderr)
        if problems:
            print("run: python grafana/build.py", file=sys.stderr)
            return 1
        return 0
    DASHBOARD_DIR.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
