"""The C line classifier gives exactly what its Python twin ``classify_lines`` gives.

The Python function is the reference; the properties below check it against a rule
written out independently, then the C module against it on generated histories, on
hypothesis buffers made of the tokens the rule looks for, and on every length near its
thresholds. A whole ``parse_lines`` pass must not depend on which one runs.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_claude.sources import transcripts
from otel_claude.sources.transcripts import (
    CANDIDATE,
    NO_USAGE,
    TOO_LONG,
    LineStats,
    classify_lines,
    parse_lines,
)
from tests.history import generate_history, iter_files

native = pytest.importorskip(
    "otel_claude.sources._linescan", reason="C extension not built (no compiler here)"
)

_TOKENS = [
    b'"usage"',
    b'"usage":{"input_tokens":1}',
    b'"message":',
    b'"type":"user"',
    b'"type":"assistant"',
    b"{",
    b"}",
    b"[",
    b'"',
    b" ",
    b"\t",
    b"\r",
    b"\n",
    b"\r\n",
    b"x" * 700,  # three of these pass the 2 kB head
    b"\xff\xfe",
    b"\x00",
]


def _expected(data: bytes, max_line: int) -> tuple[int, int, int, list[tuple[int, int, int]]]:
    """The rule, written out with split/strip instead of offsets."""
    lines = blank = skipped = 0
    spans = []
    offset = 0
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()  # the newline ending the buffer does not start another line
    for part in parts:
        lines += 1
        stripped = part.strip(b" \t\r")
        lead = len(part) - len(part.lstrip(b" \t\r"))
        first = offset + lead
        last = first + len(stripped)
        offset += len(part) + 1
        if not stripped:
            blank += 1
            continue
        head = stripped[:2048]
        message = head.find(b'"message":')
        user = len(stripped) > 2048 and (first + message) > 0 and message >= 0
        user = user and b'"type":"user"' in stripped[:message]
        if user or b'"usage"' not in stripped:
            if stripped.startswith(b"{") and stripped.endswith(b"}"):
                skipped += 1
            else:
                spans.append((NO_USAGE, first, last))
        else:
            spans.append((TOO_LONG if len(stripped) > max_line else CANDIDATE, first, last))
    return lines, blank, skipped, spans


_buffers = st.lists(st.sampled_from(_TOKENS) | st.binary(max_size=8), max_size=40).map(b"".join)


@settings(max_examples=600, deadline=None)
@given(data=_buffers, max_line=st.sampled_from([1, 50, 2000, 2048, 4096, 1 << 20]))
def test_both_follow_the_rule(data: bytes, max_line: int) -> None:
    expected = _expected(data, max_line)
    assert classify_lines(data, max_line) == expected
    assert native.classify_lines(data, max_line) == expected


@pytest.mark.parametrize("pad", [2040, 2041, 2047, 2048, 2049, 2060])
def test_user_head_threshold(pad: int) -> None:
    """The head test applies only past 2 kB, and finds ``"message":`` only within it."""
    for line in (
        b'{"type":"user","x":"' + b"a" * pad + b'","message":{"usage":1}}',
        b'{"type":"user","message":{"c":"' + b"a" * pad + b'"},"usage":2}',
        b'{"message":{"c":"' + b"a" * pad + b'"},"type":"user","usage":3}',
        b'  {"type":"user","message":"' + b"b" * pad + b'"usage"}\t\r',
    ):
        data = line + b"\n" + line
        for max_line in (100, 2048, 1 << 20):
            expected = _expected(data, max_line)
            assert classify_lines(data, max_line) == expected, (pad, line[:40])
            assert native.classify_lines(data, max_line) == expected, (pad, line[:40])


@pytest.mark.parametrize("length", range(2040, 2062))
def test_every_length_around_the_head(length: int) -> None:
    """Lines of each exact length near 2 kB, with ``"message":`` at each position near
    the end of the head: the thresholds are where an off-by-one would hide."""
    opening, closing = b'{"type":"user","x":"', b'","usage":1}'
    for at in range(length - 40, length - 23):  # where ``"message":`` starts
        line = opening + b"a" * (at - len(opening) - 2) + b'",' + b'"message":"'
        line += b"c" * (length - len(line) - len(closing)) + closing
        assert len(line) == length and line.index(b'"message":') == at
        for max_line in (length - 1, length):
            expected = _expected(line, max_line)
            assert classify_lines(line, max_line) == expected, (length, at)
            assert native.classify_lines(line, max_line) == expected, (length, at)


def test_same_spans_on_a_history(tmp_path: Path) -> None:
    truth = generate_history(tmp_path, seed=5, target_bytes=1_500_000)
    rng = random.Random(5)
    checked = 0
    for path in iter_files(truth):
        data = path.read_bytes()
        for max_line in (2048, 1 << 20):
            assert native.classify_lines(data, max_line) == classify_lines(data, max_line)
        cut = rng.randrange(len(data) + 1)  # a torn tail, as a live file has
        assert native.classify_lines(data[:cut], 4096) == classify_lines(data[:cut], 4096)
        checked += 1
    assert checked >= 5


def test_parse_lines_does_not_depend_on_the_implementation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    truth = generate_history(tmp_path, seed=9, target_bytes=1_000_000)
    data = b"".join(path.read_bytes() for path in iter_files(truth))
    results = []
    for impl in (native.classify_lines, classify_lines):
        monkeypatch.setattr(transcripts, "_classify", impl)
        stats = LineStats()
        records = parse_lines(data, stats)
        results.append((records, stats.lines, stats.skipped, stats.blank, stats.rejected))
    assert results[0] == results[1]
    assert results[0][1] == data.count(b"\n") + (not data.endswith(b"\n"))
    assert sum(type(r).__name__ == "StepRecord" for r in results[0][0]) > 50


def test_native_is_used_when_built() -> None:
    from otel_claude.sources import assistant_line

    assert transcripts._classify is native.classify_lines
    assert assistant_line._valid_utf8 is native.is_utf8


def test_bad_arguments_raise() -> None:
    with pytest.raises(TypeError):
        native.classify_lines("text", 10)
    with pytest.raises(TypeError):
        native.classify_lines(b"x", "10")


_UTF8_PIECES = [bytes([b]) for b in range(256)] + [
    "é".encode(),
    "€".encode(),
    "😀".encode(),
    b"\xed\x9f\xbf",  # U+D7FF, the last before the surrogates
    b"\xed\xa0\x80",  # a surrogate: refused
    b"\xef\xbf\xbf",
    b"\xf4\x8f\xbf\xbf",  # U+10FFFF
    b"\xf4\x90\x80\x80",  # past it: refused
    b"\xe0\x80\x80",  # overlong: refused
    b"abcdefgh" * 3,  # the eight-byte ASCII path
]


def _decodes(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(_UTF8_PIECES), max_size=24).map(b"".join))
def test_utf8_check_is_pythons(data: bytes) -> None:
    from otel_claude.sources.assistant_line import utf8_twin

    expected = _decodes(data)
    assert utf8_twin(data) is expected
    assert native.is_utf8(data) is expected


def test_assistant_lines_with_bad_utf8_count_the_same_with_either_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otel_claude.sources import assistant_line

    truth = generate_history(tmp_path, seed=12, target_bytes=800_000)
    data = b"".join(path.read_bytes() for path in iter_files(truth))
    rng = random.Random(12)
    lines = data.split(b"\n")
    for _ in range(60):  # bad bytes inside text of usage lines: the line must be refused
        i = rng.randrange(len(lines))
        if b'"usage"' in lines[i] and len(lines[i]) > 100:
            at = rng.randrange(20, len(lines[i]) - 20)
            lines[i] = (
                lines[i][:at] + rng.choice([b"\xff", b"\xed\xa0\x80", b"\xc3"]) + lines[i][at:]
            )
    data = b"\n".join(lines)
    results = []
    for check in (native.is_utf8, assistant_line.utf8_twin):
        monkeypatch.setattr(assistant_line, "_valid_utf8", check)
        stats = LineStats()
        results.append((parse_lines(data, stats), stats.rejected, stats.skipped))
    assert results[0] == results[1]
    assert results[0][1].get("invalid_utf8", 0) > 0
