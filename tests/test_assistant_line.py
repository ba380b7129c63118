"""The typed decoding of assistant lines gives exactly what ``normalize_line`` gives."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from otel_claude.records import Rejected, StepRecord
from otel_claude.sources.assistant_line import normalize_assistant_line
from otel_claude.sources.messages import MAX_COUNT, Limits, normalize_line
from tests.history import generate_history, usage_lines
from tests.streams import GARBAGE, generate


def _same(line: bytes, limits: Limits | None = None) -> object:
    args = (line, "transcript") if limits is None else (line, "transcript", limits)
    fast = normalize_assistant_line(*args)
    careful = normalize_line(*args)
    assert fast == careful, line[:300]
    return fast


def _line(usage: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    return {
        "parentUuid": "p",
        "sessionId": "s-1",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [{"type": "text", "text": "hi {[ there"}],
            "usage": usage
            if usage is not None
            else {
                "input_tokens": 3,
                "cache_creation_input_tokens": 100,
                "cache_read_input_tokens": 2000,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": 60,
                    "ephemeral_1h_input_tokens": 40,
                },
                "output_tokens": 7,
                "service_tier": "standard",
            },
        },
        "type": "assistant",
        "uuid": "u",
        "timestamp": "2026-10-11T21:57:48.165Z",
        **top,
    }


def _mutants(line: bytes, rng: random.Random, count: int) -> list[bytes]:
    """Byte-level damage: flips, cuts, insertions of JSON punctuation and bad UTF-8."""
    out = []
    pieces = [b"{", b"}", b"[", b"]", b'"', b",", b":", b"\\", b"\xff", b"\xed\xa0\x80", b"1e400"]
    pieces += [b"null", b"true", b"-1", b"1.5", b"\x00", b"\n", b" "]
    for _ in range(count):
        data = bytearray(line)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            kind = rng.random()
            if kind < 0.3:
                data[at] = rng.randrange(256)
            elif kind < 0.5:
                del data[at : at + rng.randint(1, 20)]
            else:
                data[at:at] = rng.choice(pieces)
        out.append(bytes(data))
    return out


def test_every_generated_line_and_its_mutants(tmp_path: Path) -> None:
    generate_history(tmp_path, seed=11, target_bytes=6_000_000)
    lines = usage_lines(tmp_path)
    lines += [line for line in generate(seed=3, sessions=10)[0] if b'"usage"' in line]
    steps = sum(isinstance(_same(line), StepRecord) for line in lines)
    assert steps > 800
    rng = random.Random(7)
    outcomes: dict[str, int] = {}
    for line in rng.sample(lines, 300):
        for mutant in _mutants(line, rng, 25):
            if b"1e400" in mutant:
                continue  # the one documented difference, tested below
            kind = type(_same(mutant)).__name__
            outcomes[kind] = outcomes.get(kind, 0) + 1
    # The mutants reach both paths: some still count, many are rejected.
    assert outcomes.get("StepRecord", 0) > 1000 and outcomes.get("Rejected", 0) > 1000


@pytest.mark.parametrize(("line", "reason"), GARBAGE)
def test_garbage(line: bytes, reason: str) -> None:
    record = _same(line)
    assert isinstance(record, Rejected) and record.reason == reason


@pytest.mark.parametrize(
    "change",
    [
        {"input_tokens": True},
        {"input_tokens": 1.0},
        {"input_tokens": -1},
        {"input_tokens": MAX_COUNT + 1},
        {"input_tokens": None},
        {"output_tokens": "7"},
        {"cache_read_input_tokens": None},
        {"cache_read_input_tokens": False},
        {"cache_creation_input_tokens": MAX_COUNT},
        {"cache_creation": None},
        {"cache_creation": [1]},
        {"cache_creation": {"ephemeral_5m_input_tokens": None}},
        {"cache_creation": {"ephemeral_1h_input_tokens": -5}},
        {"cache_creation": {"ephemeral_1h_input_tokens": 500}},
        {"server_tool_use": {"web_search_requests": 2}},
        {"server_tool_use": {"web_search_requests": 2.5}},
        {"server_tool_use": [1]},
        {"service_tier": "batch", "inference_geo": "US", "speed": "fast"},
        {"inference_geo": 5},
    ],
)
def test_odd_usage_fields(change: dict[str, Any]) -> None:
    line = _line()
    line["message"]["usage"].update(change)
    _same(json.dumps(line).encode())


@pytest.mark.parametrize(
    "top",
    [
        {"error": "rate_limit"},
        {"error": ""},
        {"isApiErrorMessage": True},
        {"isApiErrorMessage": "true"},
        {"type": "user"},
        {"type": 5},
        {"session_id": "snake", "sessionId": "camel"},
        {"sessionId": None},
        {"sessionId": 5},
        {"sessionId": "s" * 300},
        {"timestamp": 1760219868.5},
        {"timestamp": "yesterday"},
        {"timestamp": True},
    ],
)
def test_odd_top_level_fields(top: dict[str, Any]) -> None:
    _same(json.dumps(_line(**top)).encode())


@pytest.mark.parametrize(
    "message",
    [
        {"id": ""},
        {"id": "m" * 300},
        {"id": 5},
        {"model": "<synthetic>"},
        {"model": ""},
        {"model": "m" * 200},
        {"model": "claude\x00opus"},
        {"model": "us.anthropic.claude-opus-4-5-20251101-v1:0"},
        {"usage": None},
        {"usage": []},
    ],
)
def test_odd_message_fields(message: dict[str, Any]) -> None:
    line = _line()
    line["message"].update(message)
    _same(json.dumps(line).encode())


def test_duplicate_keys_take_the_last_value() -> None:
    line = json.dumps(_line()).encode()
    doubled = (
        line[:-1]
        + b',"message":{"id":"msg_2","model":"claude-opus-4-6",'
        + (b'"usage":{"input_tokens":1,"output_tokens":2}}}')
    )
    record = _same(doubled)
    assert isinstance(record, StepRecord) and record.message_id == "msg_2"


def test_depth_limit() -> None:
    deep = _line()
    node: dict[str, Any] = deep["message"]["content"][0]
    for _ in range(70):
        node["x"] = {}
        node = node["x"]
    line = json.dumps(deep).encode()
    assert isinstance(_same(line), Rejected)
    assert isinstance(_same(line, Limits(max_json_depth=100)), StepRecord)
    # Many brackets inside strings alone are no reason to reject.
    wide = _line()
    wide["message"]["content"][0]["text"] = "{[" * 200
    assert isinstance(_same(json.dumps(wide).encode()), StepRecord)


def test_invalid_utf8_in_an_unread_part() -> None:
    line = json.dumps(_line()).encode().replace(b"hi {[ there", b"hi \xff there")
    record = _same(line)
    assert isinstance(record, Rejected) and record.reason == "invalid_utf8"


def test_number_beyond_float_range_in_an_unread_part_still_counts() -> None:
    line = json.dumps(_line()).encode().replace(b'"role": "assistant"', b'"role": 1e400')
    assert isinstance(normalize_line(line, "transcript"), Rejected)
    record = normalize_assistant_line(line, "transcript")
    assert isinstance(record, StepRecord) and record.output == 7


def test_line_too_long() -> None:
    line = json.dumps(_line()).encode()
    record = _same(line, Limits(max_line_bytes=100))
    assert isinstance(record, Rejected) and record.reason == "line_too_long"
