"""Parsing of the times users and APIs write (RFC 3339, plain dates), always to UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime


def parse_time(value: object) -> datetime:
    """Parse an RFC 3339 timestamp with an offset; ``ValueError`` when it is not one."""
    if not isinstance(value, str):
        raise ValueError("not a timestamp")
    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError("timestamp without offset")
    return t.astimezone(UTC)


def parse_day_or_time(value: str) -> datetime:
    """Accept RFC 3339 or a plain date (meaning midnight UTC)."""
    if len(value) == 10:
        d = date.fromisoformat(value)
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    return parse_time(value)
