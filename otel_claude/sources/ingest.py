"""Turn a request body or stream-json file into normalized records.

A body is one JSON message, a JSON array of messages, or NDJSON (one message per line,
CRLF tolerated, blank lines skipped). Each message is normalized on its own, so one bad
line is rejected with its line number while the good lines beside it are kept.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from otel_claude.records import Normalized, Rejected
from otel_claude.sources.messages import normalize, normalize_line


def parse_body(body: bytes, source: str) -> list[tuple[int, Normalized]]:
    """Return ``(line, record)`` pairs; ``line`` is the 1-based line or array position."""
    stripped = body.strip()
    if not stripped:
        return []
    if stripped[:1] in (b"{", b"["):
        try:
            document = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            document = None  # not one document: NDJSON (or garbage), handled per line below
        else:
            if isinstance(document, dict):
                return [(1, normalize(document, source))]
            if isinstance(document, list):
                return [
                    (
                        i,
                        normalize(item, source)
                        if isinstance(item, dict)
                        else Rejected("not_an_object", "array element is not a JSON object"),
                    )
                    for i, item in enumerate(document, start=1)
                ]
    return list(iter_lines(body, source))


def iter_lines(body: bytes, source: str) -> Iterator[tuple[int, Normalized]]:
    """Normalize NDJSON lines, numbering them from 1 and skipping blank ones."""
    for number, raw in enumerate(body.split(b"\n"), start=1):
        line = raw.strip()
        if line:
            yield number, normalize_line(line, source)
