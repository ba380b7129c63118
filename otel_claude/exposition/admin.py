"""Gauges of the Admin API sources: billed cost windows, budgets, freshness and names.

These are read straight from the latest API answers (not accumulated), so they are right as
soon as the first poll after a start has finished. Example exposition::

    anthropic_api_cost_month_to_date_usd{workspace_id="default"} 1234.5678
    anthropic_api_budget_usd{scope="organization",workspace_id=""} 5000.0
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from otel_claude.admin.claude_code import ClaudeCodeReport
from otel_claude.admin.cost import CostReport
from otel_claude.admin.names import NamesReport
from otel_claude.admin.usage import UsageReport


@dataclass(frozen=True)
class Budgets:
    """Configured monthly budgets in USD."""

    organization: float | None = None
    workspaces: Mapping[str, float] = field(default_factory=dict)


class AdminCollector(Collector):
    """Render the Admin API gauges."""

    def __init__(
        self,
        *,
        usage: UsageReport | None = None,
        cost: CostReport | None = None,
        claude_code: ClaudeCodeReport | None = None,
        names: NamesReport | None = None,
        budgets: Budgets | None = None,
    ) -> None:
        self._usage = usage
        self._cost = cost
        self._claude_code = claude_code
        self._names = names
        self._budgets = budgets or Budgets()

    def collect(self) -> Iterator[Metric]:
        """Yield cost windows, budgets, freshness and name info series."""
        if self._cost is not None:
            today = GaugeMetricFamily(
                "anthropic_api_cost_today_usd",
                "Billed cost of the current UTC day so far per workspace, from the cost report.",
                labels=("workspace_id",),
            )
            month = GaugeMetricFamily(
                "anthropic_api_cost_month_to_date_usd",
                "Billed cost of the current UTC month so far per workspace, from the cost report.",
                labels=("workspace_id",),
            )
            for ws, usd in sorted(self._cost.today_usd.items()):
                today.add_metric((ws,), float(usd))
            for ws, usd in sorted(self._cost.month_usd.items()):
                month.add_metric((ws,), float(usd))
            yield today
            yield month
        budget = GaugeMetricFamily(
            "anthropic_api_budget_usd",
            "Configured monthly budget in USD.",
            labels=("scope", "workspace_id"),
        )
        if self._budgets.organization is not None:
            budget.add_metric(("organization", ""), self._budgets.organization)
        for ws, amount in sorted(self._budgets.workspaces.items()):
            budget.add_metric(("workspace", ws), amount)
        yield budget
        fresh = GaugeMetricFamily(
            "anthropic_api_newest_bucket_end_timestamp_seconds",
            "End of the newest complete bucket read from each Admin API report (data freshness).",
            labels=("source",),
        )
        for report in (self._usage, self._cost, self._claude_code):
            if report is not None and report.newest_complete is not None:
                fresh.add_metric((report.name,), report.newest_complete)
        yield fresh
        if self._names is not None:
            ws_info = GaugeMetricFamily(
                "anthropic_api_workspace_info",
                "Workspace names (always 1); join on workspace_id.",
                labels=("workspace_id", "workspace_name"),
            )
            for ws, name in sorted(self._names.workspaces.items()):
                ws_info.add_metric((ws, name), 1)
            yield ws_info
            key_info = GaugeMetricFamily(
                "anthropic_api_key_info",
                "API key names (always 1); join on api_key_id.",
                labels=("api_key_id", "api_key_name", "workspace_id", "status"),
            )
            for key in sorted(self._names.api_keys, key=lambda k: k.id):
                key_info.add_metric((key.id, key.name, key.workspace_id, key.status), 1)
            yield key_info
