"""Render ledger totals as OpenTelemetry observable counters, exported over OTLP.

The instruments observe the same ledger totals as ``/metrics`` (cumulative, never a second
count). Export is configured only by the standard ``OTEL_*`` variables; it is on when an
OTLP endpoint is set or ``OTEL_METRICS_EXPORTER=otlp``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from otel_claude import __version__
from otel_claude.exposition.families import FAMILIES, Family, family_series
from otel_claude.exposition.otlp_env import PROTOCOLS, otlp_enabled, otlp_protocol
from otel_claude.ledger import CounterKey, Ledger

METER_NAME = "otel_claude"
__all__ = ["PROTOCOLS", "build_meter_provider", "otlp_enabled", "otlp_protocol"]


def _exporter(protocol: str) -> MetricExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcExporter,
        )

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpExporter,
    )

    return HttpExporter()


def build_meter_provider(
    ledger: Ledger, env: Mapping[str, str], families: Sequence[Family] = FAMILIES
) -> MeterProvider | None:
    """Create a MeterProvider exporting the ledger over OTLP, or None when OTLP is off."""
    if not otlp_enabled(env):
        return None
    reader = PeriodicExportingMetricReader(_exporter(otlp_protocol(env)))
    resource = Resource.create({"service.name": "otel-claude", "service.version": __version__})
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    register_instruments(provider.get_meter(METER_NAME, __version__), ledger, families)
    return provider


class _SharedSnapshot:
    """One ledger snapshot per collection, so every instrument of an export sees one moment.

    The SDK calls the callbacks in instrument creation order; the first one takes a fresh
    snapshot and the others reuse it.
    """

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._current: dict[CounterKey, int] | None = None

    def get(self, refresh: bool) -> dict[CounterKey, int]:
        if refresh or self._current is None:
            self._current = self._ledger.snapshot()
        return self._current


def register_instruments(
    meter: Meter, ledger: Ledger, families: Sequence[Family] = FAMILIES
) -> None:
    """Create one observable counter per ledger family on ``meter``."""
    shared = _SharedSnapshot(ledger)
    for index, family in enumerate(families):
        meter.create_observable_counter(
            family.otel_name,
            callbacks=[_observer(family, shared, refresh=index == 0)],
            unit=family.unit,
            description=family.help,
        )


def _observer(
    family: Family, shared: _SharedSnapshot, *, refresh: bool
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(family.value(value), dict(zip(family.labels, labels, strict=True)))
            for labels, value in family_series(family, shared.get(refresh)).items()
        ]

    return observe
