"""In-process Python API: count an Agent SDK app's usage into its own OpenTelemetry meters.

No daemon is needed::

    from claude_agent_sdk import query
    import otel_claude

    async for message in otel_claude.track(query(prompt="…")):
        ...

``track`` observes every message with the same counting rules as the exporter (one step per
message id, result totals never added on top of steps) and records to the app's
``MeterProvider`` (the global one unless given).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import TypeVar

from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider

from otel_claude import __version__
from otel_claude.exposition.otlp import METER_NAME, register_instruments
from otel_claude.ledger import ApplySummary, CounterKey, Ledger
from otel_claude.pricing import PriceTable, load_price_table
from otel_claude.sources.messages import normalize

T = TypeVar("T")


class UsageTracker:
    """Counts observed SDK messages and exposes the totals as OTel observable counters."""

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        *,
        state_path: str | Path = ":memory:",
        prices: PriceTable | None = None,
        source: str = "sdk",
    ) -> None:
        self.ledger = Ledger(state_path, prices=prices or load_price_table())
        self._source = source
        provider = meter_provider or metrics.get_meter_provider()
        register_instruments(provider.get_meter(METER_NAME, __version__), self.ledger)

    def observe(self, message: object) -> ApplySummary:
        """Count one ``claude_agent_sdk`` message object or its JSON dict."""
        record = normalize(message, self._source)
        return self.ledger.apply([record], source=self._source)

    def totals(self) -> dict[CounterKey, int]:
        """Current counter totals (cost in picodollars), for tests and custom reporting."""
        return self.ledger.snapshot()


_default: UsageTracker | None = None
_default_lock = threading.Lock()


def default_tracker() -> UsageTracker:
    """The process-wide tracker on the global MeterProvider, created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = UsageTracker()
        return _default


async def track(
    messages: AsyncIterable[T], tracker: UsageTracker | None = None
) -> AsyncIterator[T]:
    """Yield every message of an SDK stream unchanged, counting its usage on the way."""
    active = tracker or default_tracker()
    async for message in messages:
        active.observe(message)
        yield message
