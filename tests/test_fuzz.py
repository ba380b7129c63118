"""Hostile input: property-based tests and a mutation fuzz loop over ingest and transcripts.

Whatever arrives (arbitrary bytes, deep nesting, huge or fractional numbers, wrong types,
unknown message types, enormous lines), parsing never raises or hangs, every rejection has
one of the bounded ``REJECT_REASONS``, the HTTP endpoint answers 202/400/413 and never 5xx,
and the valid messages sent beside the garbage are still counted exactly.

Needs ``hypothesis`` (test extra). Examples are few and bounded in time (``deadline``) so
the whole module stays well under a minute; the fuzz loop stops after ``FUZZ_BUDGET_S``.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from otel_claude.exposition.health import HealthCollector
from otel_claude.exposition.prometheus import LedgerCollector
from otel_claude.health import SourceHealth
from otel_claude.ledger import Ledger
from otel_claude.pricing import load_price_table
from otel_claude.records import Ignored, Rejected, ResultRecord, StepRecord
from otel_claude.server import ExporterServer, IngestEndpoint
from otel_claude.sources.ingest import BatchTooLarge, Limits, iter_lines, parse_body
from otel_claude.sources.messages import (
    MAX_COUNT,
    REJECT_REASONS,
    deeper_than,
    normalize,
    normalize_line,
)
from otel_claude.sources.transcripts import LineStats, parse_lines
from tests.streams import generate
from tests.test_ledger import assert_matches_truth
from tests.test_messages import RESULT, STREAM_ASSISTANT, TRANSCRIPT_1H

#: Small limits so that hostile examples cross them cheaply.
LIMITS = Limits(max_line_bytes=64 << 10, max_json_depth=32, max_batch_messages=5_000)
REASONS = frozenset(REJECT_REASONS)
FUZZ_BUDGET_S = 15.0
FUZZ_ROUNDS = 4_000

FAST = settings(
    max_examples=300,
    deadline=timedelta(seconds=2),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SERVED = settings(
    max_examples=120,
    deadline=timedelta(seconds=5),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- an in-process exporter whose ledger is replaced per example -----------------------


class Target:
    """A real ``ExporterServer`` on loopback; ``fresh()`` swaps in an empty ledger."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._prices = load_price_table()
        self._count = itertools.count()
        self.health = SourceHealth()
        self.health.enable("ingest", ready=True)
        self.ledger = self._open()
        self.server = ExporterServer(
            ("127.0.0.1", 0),
            registry=self._registry(self.ledger),
            ingest=self._endpoint(self.ledger),
            sources=self.health,
        )
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.client = httpx.Client(base_url=self.url, timeout=30.0)

    def _open(self) -> Ledger:
        return Ledger(self._root / f"ledger-{next(self._count)}.sqlite3", prices=self._prices)

    def _registry(self, ledger: Ledger) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(LedgerCollector(ledger))
        registry.register(HealthCollector(self.health))
        return registry

    def _endpoint(self, ledger: Ledger) -> IngestEndpoint:
        return IngestEndpoint(ledger, token=None, max_bytes=4 << 20, limits=LIMITS)

    def fresh(self) -> Ledger:
        old, self.ledger = self.ledger, self._open()
        self.server.ingest = self._endpoint(self.ledger)
        self.server.registry = self._registry(self.ledger)
        old.close()
        return self.ledger

    def post(self, body: bytes) -> httpx.Response:
        return self.client.post("/v1/events", content=body)

    def close(self) -> None:
        self.client.close()
        self.server.shutdown()
        self.server.server_close()
        self.ledger.close()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    served = Target(tmp_path_factory.mktemp("fuzz"))
    yield served
    served.close()


def _check_answer(response: httpx.Response) -> dict[str, Any]:
    """The answer of a POST that must never be a server error; returns its JSON."""
    assert response.status_code in (202, 400, 413), (response.status_code, response.text[:300])
    doc: dict[str, Any] = response.json()
    for entry in doc.get("rejected", []):
        assert entry["reason"] in REASONS, entry
    return doc


# --- strategies ------------------------------------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
#: Any JSON value the standard library can write (moderately nested).
json_values = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def _nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


#: JSON texts (and near-JSON) chosen to hurt: deep, huge, non-finite, odd unicode, long.
hostile_texts = st.one_of(
    json_values.flatmap(
        lambda v: st.sampled_from(
            [json.dumps(v).encode(), json.dumps(v, ensure_ascii=False).encode()]
        )
    ),
    st.integers(min_value=-(2**200), max_value=2**200).map(lambda i: str(i).encode()),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30, -1, -(2**63), -(2**64)]).map(
        lambda i: str(i).encode()
    ),
    st.floats().map(lambda f: repr(f).encode()),  # includes nan/inf written as bare words
    st.sampled_from(
        [
            b"NaN",
            b"-Infinity",
            b"Infinity",
            b"1e400",
            b"-1e400",
            b"1e-400",
            b"-0",
            b"-0.0",
            b"0.5",
            b"2.5e3",
            b"1E2",
            b"01",
            b"+1",
            b"0x10",
            b".5",
            b'"\\ud800"',
            b'"\\udc00x"',
            b'"\xff\xfe"',
            b'"\xed\xa0\x80"',
            b'"\\u0000"',
            b'"\x00"',
            b'"1e999999999"',
            b"{}",
            b"[]",
            b'""',
        ]
    ),
    st.tuples(st.integers(1, 1500), st.sampled_from(["list", "dict"])).map(lambda p: _nested(*p)),
    st.integers(1, 150_000).map(lambda n: b'"' + b"a" * n + b'"'),
    st.binary(max_size=40),
)

#: Where a hostile value goes: ``@@`` is replaced, ``@ID`` made unique per example.
TEMPLATES = [
    b'{"type":"assistant","session_id":"s","message":{"id":"@ID","model":"claude-haiku-4-5",'
    b'"usage":{"input_tokens":@@,"output_tokens":1}}}',
    b'{"type":"assistant","session_id":"s","message":{"id":"@ID","model":"claude-haiku-4-5",'
    b'"usage":{"input_tokens":1,"output_tokens":2,"cache_creation":{"ephemeral_1h_input_tokens"'
    b":@@}}}}",
    b'{"type":"assistant","session_id":"s","message":{"id":"@ID","model":"claude-haiku-4-5",'
    b'"usage":{"input_tokens":1,"output_tokens":2,"server_tool_use":{"web_search_requests":@@}'
    b"}}}",
    b'{"type":"assistant","session_id":"s","message":{"id":@@,"model":"claude-haiku-4-5",'
    b'"usage":{"input_tokens":1,"output_tokens":1}}}',
    b'{"type":"assistant","session_id":"s","message":{"id":"@ID","model":@@,'
    b'"usage":{"input_tokens":1,"output_tokens":1}}}',
    b'{"type":"assistant","session_id":@@,"message":{"id":"@ID","model":"claude-haiku-4-5",'
    b'"usage":{"input_tokens":1,"output_tokens":1}}}',
    b'{"type":"assistant","timestamp":@@,"message":{"id":"@ID","model":"claude-haiku-4-5",'
    b'"usage":{"input_tokens":1,"output_tokens":1}}}',
    b'{"type":"assistant","session_id":"s","message":{"id":"@ID","model":"claude-haiku-4-5",'
    b'"content":@@,"usage":{"input_tokens":1,"output_tokens":1}}}',
    b'{"type":"assistant","session_id":"s","message":{"id":"@ID","model":"claude-haiku-4-5",'
    b'"usage":@@}}',
    b'{"type":"assistant","session_id":"s","message":@@}',
    b'{"type":@@,"session_id":"s"}',
    b'{"type":"result","session_id":"s","uuid":"@ID","total_cost_usd":@@}',
    b'{"type":"result","session_id":"s","total_cost_usd":1,"extra":@@}',
    b'{"type":"result","session_id":"s","uuid":"@ID","modelUsage":@@}',
    b'{"type":"result","session_id":"s","uuid":"@ID","modelUsage":{"claude-haiku-4-5":'
    b'{"inputTokens":@@,"costUSD":0.5}}}',
    b'{"type":"result","session_id":"s","uuid":"@ID","modelUsage":{"claude-haiku-4-5":'
    b'{"inputTokens":1,"costUSD":@@}}}',
    b'{"type":"result","session_id":"s","uuid":@@,"subtype":"success"}',
    b'{"type":"system","subtype":"init","session_id":"s","uuid":@@}',
    b"@@",
    b"[@@]",
    b'[{"type":"user"},@@]',
]


def _garbage_is_unusable(line: bytes) -> bool:
    """Whether ``line`` cannot be a valid message, by the standard library's reading.

    Anything ``json`` cannot read, orjson (stricter) cannot either; an object with a string
    ``type`` could be a valid (ignored) message and is left out.
    """
    if not line.strip():
        return False
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return True
    return not (isinstance(value, dict) and isinstance(value.get("type"), str))


garbage_lines = (
    st.one_of(
        st.binary(min_size=1, max_size=200),
        hostile_texts,
        st.sampled_from([STREAM_ASSISTANT.encode()[:90], TRANSCRIPT_1H.encode()[:-1]]),
    )
    .map(lambda b: b.replace(b"\n", b" "))
    .filter(_garbage_is_unusable)
)


def _expected_lines(body: bytes, limits: Limits) -> list[int]:
    """The documented record count of ``parse_body``: one per non-blank NDJSON line, unless
    the body is one JSON object (one record) or one JSON array (one per element)."""
    stripped = body.strip()
    if not stripped:
        return []
    first_line = stripped.split(b"\n", 1)[0]
    if stripped[:1] == b"[" or (stripped[:1] == b"{" and len(first_line) <= limits.max_line_bytes):
        try:
            document = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            document = None
        if isinstance(document, dict):
            return [1]
        if isinstance(document, list):
            return list(range(1, len(document) + 1))
    return [i for i, raw in enumerate(body.split(b"\n"), start=1) if raw.strip()]


def _valid_count(value: Any) -> int | None:
    """The count a JSON value stands for, or None when it must be rejected (the rule)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_COUNT:
        return value
    return None


# --- (1) parsing never raises; one record per non-blank line --------------------------

bodies = st.one_of(
    st.binary(max_size=3000),
    st.lists(
        st.one_of(st.binary(max_size=120), hostile_texts, st.just(STREAM_ASSISTANT.encode())),
        max_size=20,
    ).flatmap(lambda lines: st.sampled_from([b"\n", b"\r\n"]).map(lambda sep: sep.join(lines))),
)
tiny_or_default = st.sampled_from(
    [LIMITS, Limits(max_line_bytes=16, max_json_depth=2, max_batch_messages=3)]
)


@FAST
@given(body=bodies, limits=tiny_or_default)
@example(body=b"[" * 5000, limits=LIMITS)
@example(body=b"{" + b" " * 100_000 + b"}", limits=LIMITS)
@example(body=b'[{"type":"user"},' * 10 + b"1]", limits=LIMITS)
def test_parse_body_never_raises(body: bytes, limits: Limits) -> None:
    expected = _expected_lines(body, limits)
    try:
        parsed = parse_body(body, "ingest", limits)
    except BatchTooLarge as exc:
        assert exc.count == len(expected) > limits.max_batch_messages
        return
    assert [line for line, _ in parsed] == expected
    for _line, record in parsed:
        if isinstance(record, Rejected):
            assert record.reason in REASONS, record


@FAST
@given(data=bodies, limits=tiny_or_default)
@example(data=b"\n" + b" " * 200_000 + b"\n{" + b"\t" * 100_000 + b"x \n", limits=LIMITS)
def test_parse_lines_never_raises(data: bytes, limits: Limits) -> None:
    stats = LineStats(limits=limits)
    out = parse_lines(data, stats)
    lines = data.count(b"\n") + (0 if not data or data.endswith(b"\n") else 1)
    assert stats.lines == lines
    assert stats.blank + stats.skipped + len(out) == lines
    rejected = [r for r in out if isinstance(r, Rejected)]
    assert sum(stats.rejected.values()) == len(rejected)
    assert set(stats.rejected) <= REASONS
    # The same records as the NDJSON reader would produce for the lines it decodes.
    assert not any(isinstance(r, Ignored) for r in out)


@FAST
@given(value=json_values, limit=st.integers(0, 6))
def test_depth_walk_is_exact(value: Any, limit: int) -> None:
    def depth(v: Any) -> int:
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        return 0

    assert deeper_than(value, limit) == (depth(value) > limit)


# --- counts: wrong types, negative, fractional, huge ---------------------------------

_ids = itertools.count()


@FAST
@given(
    value=st.one_of(
        st.integers(min_value=-(2**66), max_value=2**66),
        st.integers(min_value=2**63 - 3, max_value=2**63 + 3),
        st.floats(allow_nan=False, allow_infinity=False),
        st.floats(min_value=0, max_value=1e6).map(float.__floor__).map(float),
        json_values,
    ),
    field=st.sampled_from(["input_tokens", "output_tokens", "cache_read_input_tokens"]),
)
def test_counts_are_whole_non_negative_and_fit_sqlite(value: Any, field: str) -> None:
    usage: dict[str, Any] = {"input_tokens": 1, "output_tokens": 1, field: value}
    line = json.dumps(
        {
            "type": "assistant",
            "session_id": "s",
            "message": {"id": f"m{next(_ids)}", "model": "claude-haiku-4-5", "usage": usage},
        }
    )
    decoded = orjson.loads(line)["message"]["usage"][field]  # what the exporter sees
    record = normalize_line(line.encode(), "ingest", LIMITS)
    if decoded is None:  # absent: required for input and output, zero for the others
        want = None if field in ("input_tokens", "output_tokens") else 0
    else:
        want = _valid_count(decoded)
    if want is None:
        assert isinstance(record, Rejected) and record.reason == "invalid_usage", record
    else:
        assert isinstance(record, StepRecord), record
        got = {"input_tokens": record.input, "output_tokens": record.output}
        got["cache_read_input_tokens"] = record.cache_read
        assert got[field] == want


def test_count_boundaries_over_http(target: Target) -> None:
    ledger = target.fresh()

    def step(i: int, count: Any) -> bytes:
        return json.dumps(
            {
                "type": "assistant",
                "session_id": "s",
                "message": {
                    "id": f"b{i}",
                    "model": "claude-haiku-4-5",
                    "usage": {"input_tokens": count, "output_tokens": 0},
                },
            }
        ).encode()

    counts = [2**63 - 1, 2**63, 2**64 - 1, 10**30, -1, 1.5, 3.0, "7", True, None, 1e300]
    body = b"\n".join(step(i, c) for i, c in enumerate(counts))
    doc = _check_answer(target.post(body))
    assert doc["accepted"] == 2  # 2**63 - 1 and 3.0
    assert [r["line"] for r in doc["rejected"]] == [2, 3, 4, 5, 6, 8, 9, 10, 11]
    assert {r["reason"] for r in doc["rejected"]} == {"invalid_usage"}
    tokens = sum(v for (family, _l), v in ledger.snapshot().items() if family == "tokens")
    assert tokens == 2**63 - 1 + 3


# --- (2) valid lines among garbage are counted exactly -------------------------------


@SERVED
@given(
    seed=st.integers(0, 10**6),
    garbage=st.lists(garbage_lines, min_size=1, max_size=12),
    rng=st.randoms(use_true_random=False),
    crlf=st.booleans(),
)
def test_valid_lines_among_garbage_count_exactly(
    target: Target, seed: int, garbage: list[bytes], rng: random.Random, crlf: bool
) -> None:
    lines, truth = generate(seed=seed, sessions=3, garbage=False)
    mixed: list[bytes | None] = list(lines)
    for junk in garbage:
        mixed.insert(rng.randint(0, len(mixed)), junk)
        mixed.insert(rng.randint(0, len(mixed)), None)  # a blank line now and then
    body = (b"\r\n" if crlf else b"\n").join(b"" if m is None else m for m in mixed)
    bad = [i for i, m in enumerate(mixed, start=1) if m is not None and m in garbage]
    ledger = target.fresh()
    doc = _check_answer(target.post(body))
    assert doc["accepted"] == truth.usage_lines
    assert doc["duplicates"] == 0
    assert doc["ignored"] == truth.ignored_lines
    assert [r["line"] for r in doc["rejected"]] == bad
    assert_matches_truth(ledger.snapshot(), truth)


# --- (3) hostile JSON shapes: 4xx or a reason, never 5xx, never slow ------------------


@SERVED
@given(template=st.sampled_from(TEMPLATES), value=hostile_texts)
@example(template=b"@@", value=b"[" * 1500 + b"]" * 1500)
@example(template=TEMPLATES[0], value=b"1" * 400)
@example(template=TEMPLATES[11], value=b'"1e999999999"')
@example(template=TEMPLATES[12], value=_nested(900, "dict"))
def test_hostile_values_are_answered_4xx_or_with_a_reason(
    target: Target, template: bytes, value: bytes
) -> None:
    body = template.replace(b"@ID", f"h{next(_ids)}".encode()).replace(b"@@", value)
    started = time.monotonic()
    _check_answer(target.post(body))
    assert time.monotonic() - started < 3.0
    for _line, record in parse_body(body, "ingest", LIMITS):
        if isinstance(record, Rejected):
            assert record.reason in REASONS


# --- limits --------------------------------------------------------------------------


def test_over_long_lines_are_rejected_without_decoding(target: Target) -> None:
    target.fresh()
    limit = LIMITS.max_line_bytes
    good = b'{"type":"user"}'
    long_object = b'{"type":"user","pad":"' + b"x" * limit + b'"}'
    long_garbage = b"\x00" * (limit + 1)
    body = b"\n".join([good, long_object, good, long_garbage, b" " * (3 * limit), good])
    doc = _check_answer(target.post(body))
    assert doc["ignored"] == 3
    assert doc["rejected"] == [
        {"line": 2, "reason": "line_too_long"},
        {"line": 4, "reason": "line_too_long"},
    ]
    # A single over-long object is one over-long line too, not a document to decode.
    alone = _check_answer(target.post(long_object))
    assert alone["rejected"] == [{"line": 1, "reason": "line_too_long"}]
    # An array is a batch: bounded by the body size and the message count instead.
    assert _check_answer(target.post(b"[" + long_object + b"]"))["ignored"] == 1


def test_too_deep_messages(target: Target) -> None:
    target.fresh()
    depth = LIMITS.max_json_depth
    ok = b'{"type":"user","x":' + _nested(depth - 1, "list") + b"}"
    deep = b'{"type":"user","x":' + _nested(depth, "list") + b"}"
    beyond_parser = b'{"type":"user","x":' + _nested(2000, "dict") + b"}"
    doc = _check_answer(target.post(b"\n".join([ok, deep, beyond_parser])))
    assert doc["ignored"] == 1
    assert doc["rejected"] == [
        {"line": 2, "reason": "too_deep"},
        {"line": 3, "reason": "too_deep"},
    ]
    array = _check_answer(target.post(b"[" + ok + b"," + deep + b"]"))
    assert array["ignored"] == 1 and array["rejected"] == [{"line": 2, "reason": "too_deep"}]
    single = _check_answer(target.post(deep))
    assert single["rejected"] == [{"line": 1, "reason": "too_deep"}]


def test_too_many_messages_is_413_and_applies_nothing(target: Target) -> None:
    ledger = target.fresh()
    lines, _truth = generate(seed=5, sessions=2, garbage=False)
    limit = LIMITS.max_batch_messages
    filler = [b'{"type":"user"}'] * (limit + 1 - len(lines))
    for body in (
        b"\n".join(lines + filler),
        b"[" + b",".join(lines + filler) + b"]",
    ):
        response = target.post(body)
        assert response.status_code == 413
        answer = response.json()
        assert answer["messages"] == limit + 1
        assert answer["max_batch_messages"] == limit
        assert "split them into batches" in answer["error"]
    assert not any(ledger.snapshot().values())
    # Blank lines are not messages: exactly the limit (with blanks between) is accepted.
    within = b"\n\n".join(lines + filler[1:])
    assert _check_answer(target.post(within))["accepted"] > 0


def test_transcript_over_long_lines(tmp_path: Path) -> None:
    limits = Limits(max_line_bytes=1000)
    stats = LineStats(limits=limits)
    usage_line = TRANSCRIPT_1H.encode()
    pad = b"y" * 2000
    long_usage = usage_line[:-1] + b',"pad":"' + pad + b'"}'
    long_user = b'{"type":"user","uuid":"u","message":{"content":"' + pad + b'"}}'
    long_other = b'{"type":"summary","summary":"' + pad + b'"}'
    long_garbage = b"[" + pad
    data = b"\n".join([usage_line, long_usage, long_user, long_other, long_garbage, b""])
    out = parse_lines(data, stats)
    assert stats.rejected == {"line_too_long": 2}
    assert [type(r).__name__ for r in out] == ["StepRecord", "Rejected", "Rejected"]
    assert stats.skipped == 2  # the user and summary lines carry no usage: skipped as before
    # A huge blank run (or one around a line) is trimmed in C, not byte by byte.
    started = time.monotonic()
    blanks = b" " * 20_000_000 + b"\n" + b"{" + b"\t" * 20_000_000 + b"} \r\n"
    parse_lines(blanks, LineStats())
    assert time.monotonic() - started < 2.0


def test_sdk_objects_out_of_range_never_raise() -> None:
    deep: Any = {}
    for _ in range(5000):
        deep = {"a": deep}
    result = normalize({"type": "result", "session_id": "s", "extra": deep}, "sdk")
    assert isinstance(result, Rejected) and result.reason == "too_deep"
    step = {
        "type": "assistant",
        "session_id": "s",
        "timestamp": 10**400,
        "message": {"id": "m", "model": "claude-haiku-4-5", "usage": {"input_tokens": 1}},
    }
    step["message"]["usage"]["output_tokens"] = 2
    record = normalize(step, "sdk")
    assert isinstance(record, StepRecord) and record.timestamp is None
    for stamp in (float("nan"), float("inf"), "0001-01-01T00:00:00+14:00", "9" * 5000):
        record = normalize({**step, "timestamp": stamp}, "sdk")
        assert isinstance(record, StepRecord)
    costly: dict[str, Any] = {"type": "result", "session_id": "s", "uuid": "u"}
    for cost in ("9" * 100, "1e999999999", 1e300, 10**30, 9_300_000):
        record = normalize({**costly, "total_cost_usd": cost}, "sdk")
        assert isinstance(record, Rejected) and record.reason == "invalid_cost", cost
    fine = normalize({**costly, "total_cost_usd": 9_000_000}, "sdk")
    assert isinstance(fine, ResultRecord) and fine.total_cost_pico == 9 * 10**18


# --- (4) mutation fuzz over the endpoint ----------------------------------------------

_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?")
_HOSTILE_NUMBERS = [
    b"-1",
    b"1.5",
    b"18446744073709551616",
    b"9223372036854775808",
    b"1e400",
    b"NaN",
    b"99999999999999999999999999",
    b'"7"',
    b"null",
    b"true",
    b"[]",
    b"{}",
    b"-0.0",
]


def _mutate(line: bytes, rng: random.Random) -> bytes:
    data = bytearray(line)
    for _ in range(rng.randint(1, 3)):
        if not data:
            data = bytearray(rng.randbytes(rng.randint(1, 20)))
        choice = rng.randrange(9)
        at = rng.randrange(len(data))
        if choice == 0:  # bit flip
            data[at] ^= 1 << rng.randrange(8)
        elif choice == 1:  # truncation
            del data[at:]
        elif choice == 2:  # duplicate a slice in place
            end = min(len(data), at + rng.randint(1, 64))
            data[at:at] = data[at:end]
        elif choice == 3:  # delete a slice
            del data[at : at + rng.randint(1, 32)]
        elif choice == 4:  # random bytes
            data[at:at] = rng.randbytes(rng.randint(1, 16))
        elif choice == 5:  # a number turned hostile
            numbers = list(_NUMBER.finditer(data))
            if numbers:
                hit = rng.choice(numbers)
                data[hit.start() : hit.end()] = rng.choice(_HOSTILE_NUMBERS)
        elif choice == 6:  # nest the line deep
            depth = rng.choice([10, 40, 1100])
            data = bytearray(b'{"a":' * depth + bytes(data) + b"}" * depth)
        elif choice == 7:  # a quote or bracket swapped
            data[at] = rng.choice(b'"{}[],:\\')
        else:  # the whole line twice on one line
            data.extend(bytes(data))
    return bytes(data).replace(b"\n", b" ")


def test_mutation_fuzz_never_5xx(target: Target) -> None:
    ledger = target.fresh()
    rng = random.Random(20260421)
    lines, _truth = generate(seed=77, sessions=40)
    lines += [STREAM_ASSISTANT.encode(), RESULT.encode(), TRANSCRIPT_1H.encode()]
    statuses: dict[int, int] = {}
    started = time.monotonic()
    rounds = 0
    while rounds < FUZZ_ROUNDS and time.monotonic() - started < FUZZ_BUDGET_S:
        rounds += 1
        picked = [rng.choice(lines) for _ in range(rng.randint(1, 30))]
        body_lines = [_mutate(line, rng) if rng.random() < 0.7 else line for line in picked]
        if rng.random() < 0.15:
            body = b"[" + b",".join(body_lines) + b"]"
        else:
            body = rng.choice([b"\n", b"\r\n"]).join(body_lines)
        if rng.random() < 0.05:
            body = _mutate(body, rng)
        response = target.post(body)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        _check_answer(response)
    assert rounds >= 500, f"only {rounds} rounds in {FUZZ_BUDGET_S} s"
    assert set(statuses) <= {202, 400, 413}, statuses
    # Still healthy and still counting.
    assert target.client.get("/healthz").status_code == 200
    metrics = target.client.get("/metrics")
    assert metrics.status_code == 200 and "otel_claude_ingest_rejected_total" in metrics.text
    before = sum(v for (family, _l), v in ledger.snapshot().items() if family == "tokens")
    fresh = (
        STREAM_ASSISTANT.replace("msg_01Rws28Xg2tBY3A5fNdrk6Mf", "msg_after_fuzz")
        .replace("6170607e-7232-407c-82c3-7fc983d60064", "session-after-fuzz")
        .encode()
    )
    assert _check_answer(target.post(fresh))["accepted"] == 1
    after = sum(v for (family, _l), v in ledger.snapshot().items() if family == "tokens")
    assert after - before == 3 + 1 + 14723 + 3117


def test_cli_ingest_applies_the_line_limit(tmp_path: Path) -> None:
    """``iter_lines`` (what ``otel-claude ingest`` reads files with) honours the limits."""
    limits = Limits(max_line_bytes=50)
    body = b'{"type":"user"}\n' + b'{"type":"user","x":"' + b"z" * 60 + b'"}\n'
    records = list(iter_lines(body, "ingest", limits))
    assert [(n, type(r).__name__) for n, r in records] == [(1, "Ignored"), (2, "Rejected")]
    assert isinstance(records[1][1], Rejected) and records[1][1].reason == "line_too_long"
