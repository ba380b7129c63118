"""Render ledger totals for Prometheus through a custom prometheus-client collector.

The collector builds fresh metric families from a snapshot of the ledger on every scrape,
so concurrent scrapes cannot race with ingestion and nothing is counted outside the ledger.
Example exposition::

    # TYPE claude_agent_tokens_total counter
    claude_agent_tokens_total{model="claude-opus-4-6",source="ingest",token_type="output"} 2577.0
"""

from __future__ import annotations

import platform
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from otel_claude import __version__
from otel_claude.exposition.families import FAMILIES, Family, family_series
from otel_claude.ledger import Ledger


class LedgerCollector(Collector):
    """Expose every ledger counter plus the exporter's own build and state gauges."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        families: Sequence[Family] = FAMILIES,
    ) -> None:
        self._ledger = ledger
        self._families = tuple(families)

    def collect(self) -> Iterator[Metric]:
        """Yield one family per ledger counter, then the self-metrics."""
        snapshot = self._ledger.snapshot()
        for family in self._families:
            metric = CounterMetricFamily(family.name, family.help, labels=family.labels)
            for labels, value in sorted(family_series(family, snapshot).items()):
                metric.add_metric(labels, family.value(value))
            yield metric

        info = GaugeMetricFamily(
            "otel_claude_build_info",
            "Build of the running otel-claude exporter (always 1).",
            labels=("version", "python_version"),
        )
        info.add_metric((__version__, platform.python_version()), 1)
        yield info

        size = GaugeMetricFamily(
            "otel_claude_ledger_size_bytes",
            "On-disk size of the SQLite ledger including its write-ahead log.",
        )
        size.add_metric((), self._ledger.size_bytes())
        yield size

        keys = GaugeMetricFamily(
            "otel_claude_ledger_keys",
            "Deduplication keys held by the ledger, by kind (bounded by the dedup horizon).",
            labels=("kind",),
        )
        for kind, count in sorted(self._ledger.key_counts().items()):
            keys.add_metric((kind,), count)
        yield keys
