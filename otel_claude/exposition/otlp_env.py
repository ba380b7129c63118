"""Whether and how the standard ``OTEL_*`` variables ask for OTLP export.

Apart from ``otlp`` so that deciding costs no import of the OpenTelemetry SDK (about 40 ms
of every start-up when OTLP is off).
"""

from __future__ import annotations

from collections.abc import Mapping


def otlp_enabled(env: Mapping[str, str]) -> bool:
    """Whether the standard OTel variables ask for OTLP metric export."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip().lower() for e in env.get("OTEL_METRICS_EXPORTER", "").split(",")}
    if "none" in exporters:
        return False
    if "otlp" in exporters:
        return True
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    )


PROTOCOLS = ("http/protobuf", "grpc")


def otlp_protocol(env: Mapping[str, str]) -> str:
    """The OTLP protocol chosen by the environment (default ``http/protobuf``)."""
    return (
        env.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
