"""Render ledger totals for Prometheus through a custom prometheus-client collector.

Counter families come from a snapshot of the ledger, so concurrent scrapes cannot race with
ingestion and nothing is counted outside the ledger; their text is cached per ledger version
(``counters.CounterText``), the small gauges are built fresh on every scrape.
Example exposition::

    # TYPE claude_agent_tokens_total counter
    claude_agent_tokens_total{model="claude-opus-4-6",source="ingest",token_type="output"} 2577.0
"""

from __future__ import annotations

import platform
from collections.abc import Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from otel_claude import __version__
from otel_claude.exposition.counters import CounterText
from otel_claude.exposition.families import FAMILIES, Family
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
        self._counters = CounterText(ledger, families)

    def collect(self) -> Iterator[Metric]:
        """Yield one family per ledger counter, then the self-metrics."""
        yield from self._counters.metrics()

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
