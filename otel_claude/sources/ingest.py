"""Turn a request body or stream-json file into normalized records.

A body is one JSON message, a JSON array of messages, or NDJSON (one message per line,
CRLF tolerated, blank lines skipped). Each message is normalized on its own, so one bad
line is rejected with its line number while the good lines beside it are kept.

``Limits`` bound what one body may cost: a line longer than ``max_line_bytes`` is rejected
(``line_too_long``) without being decoded, a message nested deeper than ``max_json_depth``
is rejected (``too_deep``), and a body of more than ``max_batch_messages`` messages raises
``BatchTooLarge`` before any message is normalized. The line limit applies to NDJSON lines
(a one-line JSON object included); a JSON array or a multi-line JSON document is one batch,
bounded by the body size and the message count.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from otel_claude.records import Normalized, Rejected
from otel_claude.sources.messages import (
    DEFAULT_LIMITS,
    Limits,
    deeper_than,
    normalize,
    normalize_line,
    too_deep,
    too_long,
)

__all__ = ["BatchTooLarge", "Limits", "iter_lines", "parse_body"]


class BatchTooLarge(ValueError):
    """A body holds more messages than ``Limits.max_batch_messages``: none is applied."""

    def __init__(self, count: int, limit: int) -> None:
        self.count = count
        self.limit = limit
        super().__init__(f"{count} messages exceed the limit of {limit} per batch")


def parse_body(
    body: bytes, source: str, limits: Limits = DEFAULT_LIMITS
) -> list[tuple[int, Normalized]]:
    """Return ``(line, record)`` pairs; ``line`` is the 1-based line or array position.

    Raises ``BatchTooLarge`` when the body holds more messages than the limit allows.
    """
    stripped = body.strip()
    if not stripped:
        return []
    head = stripped[:1]
    # A one-line object longer than the line limit is left to the line path, which rejects
    # it without decoding; an array is a batch and is decoded whole.
    if head == b"[" or (head == b"{" and _first_line_fits(stripped, limits.max_line_bytes)):
        try:
            document = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            document = None  # not one document: NDJSON (or garbage), handled per line below
        if isinstance(document, dict):
            return [(1, _checked(document, stripped, source, limits.max_json_depth))]
        if isinstance(document, list):
            return _array(document, stripped, source, limits)
    if stripped.count(b"\n") >= limits.max_batch_messages:  # cheap bound first
        count = sum(1 for raw in stripped.split(b"\n") if raw.strip())
        if count > limits.max_batch_messages:
            raise BatchTooLarge(count, limits.max_batch_messages)
    return list(iter_lines(body, source, limits))


def iter_lines(
    body: bytes, source: str, limits: Limits = DEFAULT_LIMITS
) -> Iterator[tuple[int, Normalized]]:
    """Normalize NDJSON lines, numbering them from 1 and skipping blank ones."""
    limit = limits.max_line_bytes
    for number, raw in enumerate(body.split(b"\n"), start=1):
        line = raw.strip()
        if len(line) > limit:
            yield number, too_long(len(line), limits)
        elif line:
            yield number, normalize_line(line, source, limits)


def _first_line_fits(text: bytes, limit: int) -> bool:
    end = text.find(b"\n", 0, limit + 1)
    return end >= 0 or len(text) <= limit


def _checked(document: dict[str, object], raw: bytes, source: str, depth: int) -> Normalized:
    """Normalize a decoded object unless it nests deeper than ``depth`` levels."""
    if raw.count(b"{") + raw.count(b"[") > depth and deeper_than(document, depth):
        return too_deep(depth)
    return normalize(document, source)


def _array(
    document: list[object], raw: bytes, source: str, limits: Limits
) -> list[tuple[int, Normalized]]:
    if len(document) > limits.max_batch_messages:
        raise BatchTooLarge(len(document), limits.max_batch_messages)
    depth = limits.max_json_depth
    # The array is one level itself: when the whole body has few brackets, no element can
    # be too deep and none needs walking.
    walk = raw.count(b"{") + raw.count(b"[") > depth + 1
    out: list[tuple[int, Normalized]] = []
    for i, item in enumerate(document, start=1):
        if not isinstance(item, dict):
            out.append((i, Rejected("not_an_object", "array element is not a JSON object")))
        elif walk and deeper_than(item, depth):
            out.append((i, too_deep(depth)))
        else:
            out.append((i, normalize(item, source)))
    return out
