"""Normalization of SDK objects, stream-json and TypeScript SDK JSON into records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk._internal.message_parser import parse_message

from otel_claude.records import CallStart, Ignored, Rejected, ResultRecord, StepRecord
from otel_claude.sources.ingest import parse_body
from otel_claude.sources.messages import normalize, normalize_line
from tests.streams import GARBAGE, generate

# Verbatim lines from reference/anthropic_apis.md §3.4/§3.5.
STREAM_ASSISTANT = (
    '{"type":"assistant","message":{"model":"claude-sonnet-4-5-20250929","id":'
    '"msg_01Rws28Xg2tBY3A5fNdrk6Mf","type":"message","role":"assistant","content":[{"type":'
    '"tool_use","id":"toolu_01VdNvyRGtzZvniXJGQQjvEP","name":"Glob","input":{"pattern":'
    '"**/*.go"}}],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":3,'
    '"cache_creation_input_tokens":3117,"cache_read_input_tokens":14723,"cache_creation":'
    '{"ephemeral_5m_input_tokens":3117,"ephemeral_1h_input_tokens":0},"output_tokens":1,'
    '"service_tier":"standard"}},"parent_tool_use_id":null,"session_id":'
    '"6170607e-7232-407c-82c3-7fc983d60064","uuid":"e59b712a-7489-4166-80b9-13978fd2a6ea"}'
)
RESULT = (
    '{"type":"result","subtype":"success","is_error":false,"duration_ms":74096,'
    '"duration_api_ms":71152,"num_turns":15,"result":"Done.","stop_reason":"end_turn",'
    '"session_id":"22795ca6-8222-4620-91dd-3001deaf3378","total_cost_usd":0.2416735,"usage":'
    '{"input_tokens":18,"cache_creation_input_tokens":14760,"cache_read_input_tokens":169817,'
    '"output_tokens":2577,"server_tool_use":{"web_search_requests":0,"web_fetch_requests":0},'
    '"service_tier":"standard","cache_creation":{"ephemeral_1h_input_tokens":0,'
    '"ephemeral_5m_input_tokens":14760},"inference_geo":"","iterations":[],"speed":"standard"},'
    '"modelUsage":{"us.anthropic.claude-opus-4-6-v1":{"inputTokens":18,"outputTokens":2577,'
    '"cacheReadInputTokens":169817,"cacheCreationInputTokens":14760,"webSearchRequests":0,'
    '"costUSD":0.2416735,"contextWindow":200000,"maxOutputTokens":64000}},'
    '"permission_denials":[],"fast_mode_state":"off","uuid":"733cdb5d-5183-4249-9882-744a929d52ad"}'
)
TRANSCRIPT_1H = (
    '{"parentUuid":"9a27c40f","isSidechain":false,"message":{"model":"claude-opus-4-7","id":'
    '"msg_01UwNt","type":"message","role":"assistant","content":[],"stop_reason":"tool_use",'
    '"usage":{"input_tokens":6,"cache_creation_input_tokens":8837,"cache_read_input_tokens":'
    '16410,"output_tokens":136,"cache_creation":{"ephemeral_5m_input_tokens":0,'
    '"ephemeral_1h_input_tokens":8837},"service_tier":"standard"}},"requestId":"req_011CaFyK",'
    '"type":"assistant","uuid":"db6baab1","timestamp":"2026-04-21T00:29:54.704Z","sessionId":'
    '"455218e7","cwd":"/Users/r/Dev/QTrial","version":"2.1.114","userType":"external"}'
)


def test_stream_json_assistant() -> None:
    record = normalize_line(STREAM_ASSISTANT, "ingest")
    assert record == StepRecord(
        message_id="msg_01Rws28Xg2tBY3A5fNdrk6Mf",
        session_id="6170607e-7232-407c-82c3-7fc983d60064",
        model="claude-sonnet-4-5",
        source="ingest",
        input=3,
        output=1,
        cache_read=14723,
        cache_5m=3117,
        cache_1h=0,
    )


def test_transcript_line_camel_case_and_1h_cache() -> None:
    record = normalize_line(TRANSCRIPT_1H, "transcript")
    assert isinstance(record, StepRecord)
    assert (record.session_id, record.model) == ("455218e7", "claude-opus-4-7")
    assert (record.cache_5m, record.cache_1h, record.output) == (0, 8837, 136)
    assert record.timestamp == pytest.approx(1776731394.704)


def test_result_with_bedrock_model_key() -> None:
    record = normalize_line(RESULT, "ingest")
    assert isinstance(record, ResultRecord)
    assert record.outcome == "success"
    assert record.total_cost_pico == 241_673_500_000
    ((model, totals),) = record.models.items()
    assert model == "claude-opus-4-6"
    assert totals.fields() == (18, 2577, 169817, 14760, 0)
    assert totals.cost_pico == 241_673_500_000


def _assistant(usage: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "type": "assistant",
        "session_id": "s",
        **extra,
        "message": {"id": "m", "model": "claude-haiku-4-5", "usage": usage},
    }


def test_unsplit_cache_creation_counts_as_5m() -> None:
    record = normalize(
        _assistant({"input_tokens": 1, "output_tokens": 2, "cache_creation_input_tokens": 700}),
        "sdk",
    )
    assert isinstance(record, StepRecord)
    assert (record.cache_5m, record.cache_1h) == (700, 0)


def test_split_short_of_total_keeps_remainder_as_5m() -> None:
    usage = {
        "input_tokens": 1,
        "output_tokens": 2,
        "cache_creation_input_tokens": 1000,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 600},
    }
    record = normalize(_assistant(usage), "sdk")
    assert isinstance(record, StepRecord)
    assert (record.cache_5m, record.cache_1h) == (400, 600)


def test_modifiers_from_usage() -> None:
    usage = {
        "input_tokens": 1,
        "output_tokens": 2,
        "service_tier": "batch",
        "inference_geo": "us",
        "speed": "fast",
        "server_tool_use": {"web_search_requests": 4},
    }
    record = normalize(_assistant(usage), "sdk")
    assert isinstance(record, StepRecord)
    assert (record.batch, record.geo_us, record.fast, record.web_search) == (True, True, True, 4)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            _assistant({"input_tokens": 1, "output_tokens": 1}, error="rate_limit"),
            Ignored("api_error"),
        ),
        (
            {**_assistant({"input_tokens": 1, "output_tokens": 1}), "isApiErrorMessage": True},
            Ignored("api_error"),
        ),
        (
            {
                "type": "assistant",
                "message": {
                    "id": "m",
                    "model": "<synthetic>",
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                },
            },
            Ignored("synthetic"),
        ),
        ({"type": "user", "message": {"role": "user", "content": "hi"}}, Ignored("user")),
        ({"type": "stream_event", "event": {}}, Ignored("stream_event")),
        ({"type": "some_future_type"}, Ignored("other")),
        ({"type": "system", "subtype": "init", "session_id": "s"}, Ignored("system")),
        (
            {"type": "system", "subtype": "init", "session_id": "s", "uuid": "u"},
            CallStart(key="init\x1fs\x1fu", session_id="s"),
        ),
    ],
)
def test_messages_without_usage(message: dict[str, Any], expected: object) -> None:
    assert normalize(message, "sdk") == expected


@pytest.mark.parametrize(("line", "reason"), GARBAGE)
def test_garbage_is_rejected_with_reason(line: bytes, reason: str) -> None:
    record = normalize_line(line, "ingest")
    assert isinstance(record, Rejected)
    assert record.reason == reason


@pytest.mark.parametrize(
    ("usage", "reason"),
    [
        ({"input_tokens": 1}, "invalid_usage"),
        ({"input_tokens": "3", "output_tokens": 1}, "invalid_usage"),
        ({"input_tokens": True, "output_tokens": 1}, "invalid_usage"),
        ({"input_tokens": 1.5, "output_tokens": 1}, "invalid_usage"),
        ({"input_tokens": 1, "output_tokens": 1, "cache_creation": [1]}, "invalid_usage"),
    ],
)
def test_bad_usage_fields(usage: dict[str, Any], reason: str) -> None:
    record = normalize(_assistant(usage), "sdk")
    assert record == Rejected(reason, record.detail if isinstance(record, Rejected) else "")


def test_result_without_uuid_is_identified_by_content() -> None:
    base = {
        "type": "result",
        "subtype": "success",
        "session_id": "s",
        "num_turns": 2,
        "duration_ms": 10,
        "total_cost_usd": 0.5,
        "modelUsage": {},
    }
    a, b = normalize(dict(base), "sdk"), normalize(dict(base), "sdk")
    c = normalize({**base, "duration_ms": 11}, "sdk")
    assert isinstance(a, ResultRecord) and isinstance(b, ResultRecord)
    assert isinstance(c, ResultRecord)
    assert a.key == b.key != c.key


def test_unknown_result_subtype_and_negative_cost() -> None:
    odd = normalize(
        {"type": "result", "subtype": "brand_new", "session_id": "s", "uuid": "u"}, "sdk"
    )
    assert isinstance(odd, ResultRecord) and odd.outcome == "other"
    bad = normalize({"type": "result", "session_id": "s", "uuid": "u", "total_cost_usd": -1}, "sdk")
    assert isinstance(bad, Rejected) and bad.reason == "invalid_cost"


def test_sdk_objects_normalize_like_their_json() -> None:
    """Real claude_agent_sdk objects (from the SDK's own parser) give the same records."""
    lines, _truth = generate(seed=3, sessions=15, garbage=False)
    compared = 0
    for line in lines:
        data = json.loads(line)
        if data["type"] == "result":
            data.setdefault("duration_api_ms", 900)
        obj = parse_message(data)
        from_json, from_obj = normalize(data, "sdk"), normalize(obj, "sdk")
        if isinstance(from_json, ResultRecord):
            assert isinstance(from_obj, ResultRecord)
            assert from_obj.models == from_json.models
            assert from_obj.key == from_json.key
            assert from_obj.total_cost_pico == from_json.total_cost_pico
        elif isinstance(from_json, Ignored):
            assert isinstance(from_obj, Ignored)
        else:
            assert from_obj == from_json
        compared += 1
    assert compared == len(lines)


def test_old_sdk_assistant_without_usage_is_rejected() -> None:
    class AssistantMessage:  # the shape of claude_agent_sdk < 0.1.49
        model = "claude-sonnet-4-5"
        parent_tool_use_id = None

    record = normalize(AssistantMessage(), "sdk")
    assert isinstance(record, Rejected) and record.reason == "missing_message_id"


def test_body_forms() -> None:
    one = json.dumps({"type": "user"}).encode()
    array = json.dumps([{"type": "user"}, 5, {"type": "system"}]).encode()
    ndjson = b'{"type":"user"}\r\n\r\n{"type":"user"}\nnot json\n'
    assert [line for line, _ in parse_body(one, "ingest")] == [1]
    assert [(i, type(r).__name__) for i, r in parse_body(array, "ingest")] == [
        (1, "Ignored"),
        (2, "Rejected"),
        (3, "Ignored"),
    ]
    assert [(i, type(r).__name__) for i, r in parse_body(ndjson, "ingest")] == [
        (1, "Ignored"),
        (3, "Ignored"),
        (4, "Rejected"),
    ]
    pretty = json.dumps({"type": "user", "message": {"content": "x"}}, indent=2).encode()
    assert [type(r).__name__ for _, r in parse_body(pretty, "ingest")] == ["Ignored"]


def test_plain_path_equals_careful_path(tmp_path: Path) -> None:
    """The fast path for well-formed lines gives exactly what the careful path gives."""
    from otel_claude.sources import messages
    from tests.history import generate_history, usage_lines

    generate_history(tmp_path, seed=5, target_bytes=3_000_000)
    lines = usage_lines(tmp_path)
    lines += generate(seed=8, sessions=20)[0]
    compared = 0
    for line in lines:
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if not isinstance(data, dict) or data.get("type") != "assistant":
            continue
        message = data.get("message")
        if not isinstance(message, dict):
            continue
        fast = messages._plain_step(data, message, "t")
        if fast is None:
            continue
        careful = messages._step(
            message_id=message.get("id"),
            model=message.get("model"),
            usage=message.get("usage"),
            session_id=data.get("session_id", data.get("sessionId")),
            timestamp=data.get("timestamp"),
            source="t",
        )
        assert fast == careful
        compared += 1
    assert compared > 500


@pytest.mark.parametrize("field", ["cache_read_input_tokens", "cache_creation_input_tokens"])
def test_plain_path_never_accepts_what_the_careful_path_rejects(field: str) -> None:
    for odd in (False, True, -1, "5", 1.5):
        usage = {"input_tokens": 1, "output_tokens": 1, field: odd}
        record = normalize(_assistant(usage), "sdk")
        assert isinstance(record, Rejected), (field, odd)
