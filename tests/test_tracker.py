"""The in-process Python API records to the app's own MeterProvider, same rules."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator

from claude_agent_sdk._internal.message_parser import parse_message
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import otel_claude
from tests.streams import generate


def _points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, str], float]]:
    data = reader.get_metrics_data()
    assert data is not None
    out = []
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    out += [(dict(p.attributes or {}), p.value) for p in metric.data.data_points]
    return out


async def _sdk_stream(lines: list[bytes]) -> AsyncIterator[object]:
    for line in lines:
        data = json.loads(line)
        if data["type"] == "result":
            data.setdefault("duration_api_ms", 1)
        message = parse_message(data)
        if message is not None:
            yield message


def test_track_counts_sdk_objects_into_app_meter_provider() -> None:
    lines, truth = generate(seed=31, sessions=20, garbage=False)
    reader = InMemoryMetricReader()
    tracker = otel_claude.UsageTracker(MeterProvider(metric_readers=[reader]))

    async def consume() -> int:
        seen = 0
        async for _message in otel_claude.track(_sdk_stream(lines + lines), tracker):
            seen += 1
        return seen

    assert asyncio.run(consume()) == 2 * len(lines)  # messages pass through unchanged
    tokens: Counter[tuple[str, str]] = Counter()
    for attrs, value in _points(reader, "claude.agent.tokens"):
        assert attrs["source"] == "sdk"
        tokens[(attrs["model"], attrs["token_type"])] += int(value)
    assert +tokens == +truth.tokens
    reported = {
        a["model"]: v
        for a, v in _points(reader, "claude.agent.cost.usd")
        if a["cost_source"] == "reported"
    }
    assert set(reported) == set(truth.reported_pico)
    for model, pico in truth.reported_pico.items():
        assert abs(reported[model] - pico / 1e12) < 1e-9
    conversations = {a["outcome"]: v for a, v in _points(reader, "claude.agent.conversations")}
    assert conversations == dict(truth.conversations)


def test_observe_accepts_json_dicts() -> None:
    reader = InMemoryMetricReader()
    tracker = otel_claude.UsageTracker(MeterProvider(metric_readers=[reader]))
    message = {
        "type": "assistant",
        "session_id": "s",
        "message": {
            "id": "msg_1",
            "model": "claude-haiku-4-5-20251001",
            "usage": {"input_tokens": 7, "output_tokens": 11},
        },
    }
    assert tracker.observe(message).accepted == 1
    assert tracker.observe(message).duplicates == 1
    points = {a["token_type"]: v for a, v in _points(reader, "claude.agent.tokens")}
    assert points == {"input": 7, "output": 11}
