"""Wire the parts of a running exporter together from ``Settings``.

Kept apart from the CLI so tests (and ``otel-claude demo``) build exactly what ``serve``
builds, with their own clock and HTTP transport passed in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from otel_claude.config import Settings
from otel_claude.health import SourceHealth
from otel_claude.ledger import Ledger
from otel_claude.pricing import load_price_table
from otel_claude.sources.coldscan import ParseJob, scan_workers
from otel_claude.sources.tailer import TranscriptTailer
from otel_claude.sources.transcripts import transcript_limits

# The exposition, Admin API and HTTP client modules are imported by ``build_app`` once a
# cold transcript scan is under way: its workers parse during those 0.1 s of imports.
if TYPE_CHECKING:
    import httpx
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import CollectorRegistry

    from otel_claude.admin.client import AdminClient
    from otel_claude.admin.poller import Poller, Report
    from otel_claude.exposition.families import Family

log = logging.getLogger(__name__)


@dataclass
class App:
    """Everything a running exporter holds; ``close()`` releases it."""

    settings: Settings
    ledger: Ledger
    health: SourceHealth
    registry: CollectorRegistry
    families: tuple[Family, ...]
    poller: Poller | None = None
    tailer: TranscriptTailer | None = None
    admin_client: AdminClient | None = None
    meter_provider: MeterProvider | None = None
    reports: list[Report] = field(default_factory=list)

    def close(self) -> None:
        """Close the upstream client and the ledger (the caller flushes OTLP first)."""
        if self.tailer is not None:
            self.tailer.close()
        if self.admin_client is not None:
            self.admin_client.close()
        self.ledger.close()


def open_ledger(
    settings: Settings, *, clock: Callable[[], float] = time.time, read_only: bool = False
) -> Ledger:
    """The ledger in the state directory, with the configured prices and limits."""
    prices = load_price_table(settings.prices_file, settings.price_overrides or None)
    return Ledger(
        settings.ledger_path,
        prices=prices,
        clock=clock,
        dedup_horizon_s=settings.dedup_horizon_days * 86400,
        synchronous=settings.ledger_synchronous,
        max_models=settings.max_models,
        max_series_per_family=settings.max_series_per_family,
        read_only=read_only,
    )


def start_of_utc_day(now: float) -> datetime:
    """Default ``OTEL_CLAUDE_ADMIN_SINCE``: midnight UTC of today."""
    return datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def build_app(
    settings: Settings,
    env: Mapping[str, str],
    *,
    clock: Callable[[], float] = time.time,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    cold_scan: ParseJob | None = None,
) -> App:
    """Open the ledger, create the sources and both renderers.

    A large cold transcript scan is started first, while this process has no other
    thread to fork with (``TranscriptTailer.start_cold_scan``), unless the caller started
    it already (``cold_scan``: ``serve`` does on a first start).
    """
    ledger = open_ledger(settings, clock=clock)
    health = SourceHealth()
    health.enable("ingest", ready=True)
    tailer: TranscriptTailer | None = None
    if settings.transcripts_enabled:
        tailer = TranscriptTailer(
            ledger,
            settings.transcript_roots,
            health=health,
            poll_s=settings.transcripts_poll_s,
            use_inotify=settings.transcripts_inotify,
            clock=clock,
            project_label=settings.project_label,
            project_allow=settings.project_allow,
            workers=scan_workers(),
        )
        tailer.stats.limits = transcript_limits(settings.ingest_limits)
        tailer.start_cold_scan(cold_scan)
    elif cold_scan is not None:
        cold_scan.stop()

    from prometheus_client import CollectorRegistry, ProcessCollector

    from otel_claude.admin.claude_code import ClaudeCodeReport
    from otel_claude.admin.client import AdminClient, RequestStats
    from otel_claude.admin.cost import CostReport
    from otel_claude.admin.names import NamesReport
    from otel_claude.admin.poller import Poller
    from otel_claude.admin.usage import UsageReport
    from otel_claude.exposition.admin import AdminCollector, Budgets
    from otel_claude.exposition.families import admin_families, core_families
    from otel_claude.exposition.health import HealthCollector
    from otel_claude.exposition.otlp_env import otlp_enabled
    from otel_claude.exposition.prometheus import LedgerCollector

    families = core_families(settings.project_label) + admin_families(
        settings.admin_group_by, settings.actor_labels
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector(ledger, families=families))
    app = App(settings, ledger, health, registry, families, tailer=tailer)
    stats: RequestStats | None = None
    admin_gauges: AdminCollector | None = None
    if settings.admin_api_key:
        stats = RequestStats()
        client = AdminClient(
            settings.admin_api_url,
            settings.admin_api_key,
            timeout=settings.admin_timeout_s,
            transport=transport,
            sleep=sleep,
            stats=stats,
        )
        since = settings.admin_since or start_of_utc_day(clock())
        usage = cost = claude_code = names = None
        wanted = set(settings.admin_sources)
        if "usage" in wanted:
            usage = UsageReport(
                client,
                ledger,
                since=since,
                group_by=settings.admin_group_by,
                interval_s=settings.poll_interval,
                lookback_s=settings.admin_lookback_s,
                clock=clock,
            )
        if "cost" in wanted:
            cost = CostReport(client, ledger, since=since, clock=clock)
        if "claude_code" in wanted:
            claude_code = ClaudeCodeReport(
                client,
                ledger,
                since=since,
                clock=clock,
                actor_mode=settings.actor_labels,
                actor_salt=settings.actor_salt,
            )
        if "names" in wanted:
            names = NamesReport(client, clock=clock, refresh_s=settings.names_refresh_s)
        reports: list[Report] = [r for r in (usage, cost, claude_code, names) if r is not None]
        if settings.poll_interval < 60:
            log.warning(
                "poll interval below the API's sustained rate of one request a minute",
                extra={"fields": {"poll_interval_s": settings.poll_interval}},
            )
        app.admin_client = client
        app.reports = reports
        app.poller = Poller(reports, health, interval_s=settings.poll_interval, clock=clock)
        admin_gauges = AdminCollector(
            usage=usage,
            cost=cost,
            claude_code=claude_code,
            names=names,
            budgets=Budgets(settings.budget_organization, settings.budget_workspaces),
        )
    if admin_gauges is None:
        admin_gauges = AdminCollector(
            budgets=Budgets(settings.budget_organization, settings.budget_workspaces)
        )
    registry.register(admin_gauges)
    registry.register(HealthCollector(health, stats))
    ProcessCollector(registry=registry)
    if otlp_enabled(env):  # the OpenTelemetry SDK is imported only when it is used
        from otel_claude.exposition.otlp import build_meter_provider

        app.meter_provider = build_meter_provider(ledger, env, families)
    return app
