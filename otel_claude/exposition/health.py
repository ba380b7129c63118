"""Self-metrics of the sources: up, last success, poll duration, polls and errors.

Example exposition::

    otel_claude_source_up{source="admin_usage"} 1.0
    otel_claude_source_errors_total{reason="rate_limited",source="admin_usage"} 2.0
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from otel_claude.admin.client import RequestStats
from otel_claude.health import SourceHealth


class HealthCollector(Collector):
    """Render ``SourceHealth`` and the Admin API request statistics."""

    def __init__(self, health: SourceHealth, stats: RequestStats | None = None) -> None:
        self._health = health
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        """Yield the per-source and per-request self-metrics."""
        states = sorted(self._health.states().items())
        up = GaugeMetricFamily(
            "otel_claude_source_up",
            "Whether each enabled source works (1) or its last pass failed (0).",
            labels=("source",),
        )
        last = GaugeMetricFamily(
            "otel_claude_source_last_success_timestamp_seconds",
            "Unix time of the last successful pass of each source.",
            labels=("source",),
        )
        duration = GaugeMetricFamily(
            "otel_claude_source_poll_duration_seconds",
            "Duration of the last pass (poll or scan) of each source.",
            labels=("source",),
        )
        polls = CounterMetricFamily(
            "otel_claude_source_polls",
            "Passes (polls or scans) made by each source.",
            labels=("source",),
        )
        errors = CounterMetricFamily(
            "otel_claude_source_errors",
            "Failed passes of each source, by reason.",
            labels=("source", "reason"),
        )
        for name, state in states:
            up.add_metric((name,), 1 if state.up else 0)
            if state.last_success is not None:
                last.add_metric((name,), state.last_success)
            if state.last_duration is not None:
                duration.add_metric((name,), state.last_duration)
            polls.add_metric((name,), state.polls)
            for reason, count in sorted(state.errors.items()):
                errors.add_metric((name, reason), count)
        yield from (up, last, duration, polls, errors)
        if self._stats is None:
            return
        requests, retries = self._stats.copy()
        req = CounterMetricFamily(
            "otel_claude_admin_requests",
            "Admin API requests made, by endpoint and HTTP status "
            "(timeout/error when no response).",
            labels=("endpoint", "status"),
        )
        for (endpoint, status), count in sorted(requests.items()):
            req.add_metric((endpoint, status), count)
        yield req
        ret = CounterMetricFamily(
            "otel_claude_admin_retries",
            "Admin API requests retried, by endpoint and reason.",
            labels=("endpoint", "reason"),
        )
        for (endpoint, reason), count in sorted(retries.items()):
            ret.add_metric((endpoint, reason), count)
        yield ret
