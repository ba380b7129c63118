"""Claude Code transcripts (``~/.claude/projects/**/*.jsonl``): discovery and line parsing.

Claude Code appends one JSON object per line; one API response is written as several lines
(one per content block) that share ``message.id``. Only lines that carry a ``usage`` object
are parsed in full; every other line gets a cheap structural check (an object on one line)
so garbage is still counted as rejected without paying for JSON decoding of large tool
results. A final line without its newline is never consumed: it is still being written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from otel_claude.records import Ignored, Normalized, Rejected
from otel_claude.sources.messages import normalize_line

SOURCE = "transcript"
_USAGE = b'"usage"'


def projects_dirs(env: Mapping[str, str], home: Path | None = None) -> list[Path]:
    """The ``projects/`` directories to read, as Claude Code and ccusage find them.

    ``CLAUDE_CONFIG_DIR`` is a comma-separated list; each entry is a config directory that
    contains ``projects/`` or a ``projects/`` directory itself. Without it: ``~/.claude`` and
    ``~/.config/claude``.
    """
    home = home or Path.home()
    configured = env.get("CLAUDE_CONFIG_DIR", "").strip()
    entries = (
        [Path(p.strip()).expanduser() for p in configured.split(",") if p.strip()]
        if configured
        else [home / ".claude", home / ".config" / "claude"]
    )
    out: list[Path] = []
    for entry in entries:
        candidate = entry if entry.name == "projects" else entry / "projects"
        if candidate not in out:
            out.append(candidate)
    return out


def transcript_files(roots: Sequence[Path]) -> Iterator[Path]:
    """Every ``*.jsonl`` below the roots (subagent transcripts included), sorted per dir."""
    for root in roots:
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(".jsonl"):
                    yield Path(dirpath) / name


@dataclass
class LineStats:
    """What a parse pass saw besides usage records."""

    lines: int = 0
    skipped: int = 0  # valid-looking lines without usage, not decoded
    blank: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


def parse_lines(data: bytes, stats: LineStats, *, source: str = SOURCE) -> list[Normalized]:
    """Records of every complete line in ``data`` (the caller cut it at a newline).

    Lines are located with ``find`` instead of ``split`` so that the large tool-result lines
    that dominate a history are never copied: only lines that carry a usage object are
    sliced out and decoded.
    """
    out: list[Normalized] = []
    rejected = stats.rejected
    find = data.find
    size = len(data)
    start = 0
    while start < size:
        end = find(b"\n", start)
        if end < 0:
            end = size
        stats.lines += 1
        first, last = start, end
        while first < last and data[first] in _SPACE:
            first += 1
        while last > first and data[last - 1] in _SPACE:
            last -= 1
        if first == last:
            stats.blank += 1
        elif _is_user_line(find, first, last) or find(_USAGE, first, last) < 0:
            if data[first] == _BRACE and data[last - 1] == _CLOSE:
                stats.skipped += 1
            else:  # rare: decode it to say exactly what is wrong
                record = normalize_line(data[first:last], source)
                if isinstance(record, Rejected):
                    rejected[record.reason] = rejected.get(record.reason, 0) + 1
                    out.append(record)
                else:
                    stats.skipped += 1
        else:
            record = normalize_line(data[first:last], source)
            if isinstance(record, Ignored):
                stats.skipped += 1
            else:
                if isinstance(record, Rejected):
                    rejected[record.reason] = rejected.get(record.reason, 0) + 1
                out.append(record)
        start = end + 1
    return out


def _is_user_line(find: Callable[..., int], first: int, last: int) -> bool:
    """Whether the line's top-level ``type`` is ``user`` (written before its ``message``).

    User lines never carry usage but hold the large tool results, so recognising them from
    their first few hundred bytes spares scanning most of a history's bytes. Only the part
    before the first ``"message":`` key is looked at, where Claude Code writes the top-level
    metadata; anything else falls through to the full check.
    """
    head_end = min(last, first + _HEAD)
    message = find(b'"message":', first, head_end)
    return message > 0 and find(b'"type":"user"', first, message) >= 0


_HEAD = 2048
_SPACE = frozenset(b" \t\r")
_BRACE, _CLOSE = ord("{"), ord("}")


def complete_part(data: bytes) -> bytes:
    """``data`` up to and including its last newline (a torn tail is left for later)."""
    cut = data.rfind(b"\n")
    return data[: cut + 1] if cut >= 0 else b""
