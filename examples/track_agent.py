"""Count an Agent SDK app's usage into OpenTelemetry, with no exporter daemon.

Run with an Anthropic API key (or a logged-in Claude Code) available to the SDK::

    pip install otel-claude claude-agent-sdk
    OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 python examples/track_agent.py "Say hi"

Without OTEL_EXPORTER_OTLP_ENDPOINT the totals are printed to the console instead.
"""

from __future__ import annotations

import asyncio
import os
import sys

from claude_agent_sdk import ClaudeAgentOptions, query
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    PeriodicExportingMetricReader,
)

import otel_claude


async def main(prompt: str) -> None:
    exporter: MetricExporter = (
        OTLPMetricExporter()
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        else ConsoleMetricExporter()
    )
    provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(exporter)])
    tracker = otel_claude.UsageTracker(provider)
    options = ClaudeAgentOptions(max_turns=3)
    async for message in otel_claude.track(query(prompt=prompt, options=options), tracker):
        print(type(message).__name__, file=sys.stderr)
    provider.shutdown()  # flushes the final cumulative totals


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "Say hello in five words."))
