"""Claude Code transcripts (``~/.claude/projects/**/*.jsonl``): discovery and line parsing.

Claude Code appends one JSON object per line; one API response is written as several lines
(one per content block) that share ``message.id``. Only lines that carry a ``usage`` object
are parsed in full; every other line gets a cheap structural check (an object on one line)
so garbage is still counted as rejected without paying for JSON decoding of large tool
results (``classify_lines``, done in C by ``_linescan`` when it was built). A final line
without its newline is never consumed: it is still being written.

A line longer than ``Limits.max_line_bytes`` that may carry usage is rejected
(``line_too_long``) without being copied or decoded; an over-long line that cannot carry
usage (a user line, recognised from its first bytes, or an object without ``"usage"``) is
skipped like any other such line. A line of up to 2 kB that mentions ``"usage"`` is always
decoded, whatever its type: so a malformed short user line that mentions usage is
rejected, where a long one is skipped unread.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from otel_claude.records import Ignored, Normalized, Rejected, StepRecord
from otel_claude.sources.assistant_line import assistant_step
from otel_claude.sources.messages import (
    DEFAULT_LIMITS,
    PARSER_MAX_DEPTH,
    Limits,
    normalize_line,
    too_long,
)

SOURCE = "transcript"


def transcript_limits(ingest: Limits = DEFAULT_LIMITS) -> Limits:
    """The bounds a transcript line is held to: the ingest limits, except nesting.

    ``max_json_depth`` bounds what untrusted network input may make the parser build.
    Transcripts are files Claude Code wrote on this machine, and their assistant lines
    are decoded without building their nested parts; they are held only to the parser's
    own limit. That also lets a line shorter than twice that limit skip counting its
    brackets (0.9 µs of a 5.4 µs line; see ``assistant_step``).
    """
    return replace(ingest, max_json_depth=PARSER_MAX_DEPTH)


TRANSCRIPT_LIMITS = transcript_limits()
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
    for path, _entry in transcript_entries(roots):
        yield Path(path)


def transcript_entries(roots: Sequence[Path]) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """``(path, directory entry)`` of every transcript below the roots, in a stable order.

    ``os.scandir`` directly rather than ``os.walk`` and ``Path`` objects: a third of the
    time (15 ms for 3,000 files), and the entry can ``stat()`` without resolving the path
    again. Like ``os.walk``, links to directories are not followed.
    """
    for root in roots:
        if not root.is_dir():
            continue
        stack = [str(root)]
        while stack:
            directory = stack.pop()
            try:
                with os.scandir(directory) as it:
                    entries = sorted(it, key=_name)
            except OSError:
                continue
            subdirs = []
            for entry in entries:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir:
                    subdirs.append(entry.path)
                elif entry.name.endswith(".jsonl") and not _is_dir_link(entry):
                    yield entry.path, entry
            stack.extend(reversed(subdirs))


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _is_dir_link(entry: os.DirEntry[str]) -> bool:
    """A link to a directory named ``*.jsonl`` (``os.walk`` lists it as a directory)."""
    try:
        return entry.is_symlink() and entry.is_dir()
    except OSError:
        return False


@dataclass
class LineStats:
    """What a parse pass saw besides usage records."""

    lines: int = 0
    skipped: int = 0  # valid-looking lines without usage, not decoded
    blank: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    #: The bounds applied by ``parse_lines`` to lines counted here (configuration, not a count).
    limits: Limits = TRANSCRIPT_LIMITS

    def add(self, other: LineStats) -> None:
        """Count what ``other`` saw too (another file, or another process's share)."""
        self.lines += other.lines
        self.skipped += other.skipped
        self.blank += other.blank
        for reason, n in other.rejected.items():
            self.rejected[reason] = self.rejected.get(reason, 0) + n


def parse_lines(
    data: bytes, stats: LineStats, *, source: str = SOURCE, limits: Limits | None = None
) -> list[Normalized]:
    """Records of every complete line in ``data`` (the caller cut it at a newline).

    ``classify_lines`` says which lines need a look; only those that may carry a usage
    object are sliced out and decoded, so the large tool-result lines that dominate a
    history are never copied. ``limits`` defaults to ``stats.limits``.
    """
    limits = stats.limits if limits is None else limits
    max_line = limits.max_line_bytes
    max_depth = limits.max_json_depth
    out: list[Normalized] = []
    append = out.append
    rejected = stats.rejected
    lines, blank, skipped, spans = _classify(data, max_line)
    # Written out rather than split into helpers: it runs once per line that may carry
    # usage (50k in 500 MB), where each call shows.
    for kind, first, last in spans:
        if kind == CANDIDATE:
            line = data[first:last]
            step = assistant_step(line, source, max_depth)
            if step is not None:
                append(step)
                continue
            record = normalize_line(line, source, limits)
            if type(record) is StepRecord:
                append(record)
                continue
            if isinstance(record, Ignored):
                skipped += 1
                continue
        elif kind == NO_USAGE:  # rare: decode it to say exactly what is wrong
            record = (
                too_long(last - first, limits)
                if last - first > max_line
                else normalize_line(data[first:last], source, limits)
            )
            if not isinstance(record, Rejected):
                skipped += 1
                continue
        elif (  # TOO_LONG; with a limit below 2 kB a short user line is skipped like a long one
            _is_user_line(data.find, first, last)
            and data[first] == _BRACE
            and data[last - 1] == _CLOSE
        ):
            skipped += 1
            continue
        else:
            record = too_long(last - first, limits)
        if isinstance(record, Rejected):
            rejected[record.reason] = rejected.get(record.reason, 0) + 1
        append(record)
    stats.lines += lines
    stats.skipped += skipped
    stats.blank += blank
    return out


#: Kinds of line ``classify_lines`` hands back: may carry usage and is within the length
#: limit; carries no usage but is not a plain object (blank-padded garbage, a JSON array,
#: a torn object); may carry usage but is longer than the limit.
CANDIDATE, NO_USAGE, TOO_LONG = 0, 1, 2


def classify_lines(data: bytes, max_line: int) -> tuple[int, int, int, list[tuple[int, int, int]]]:
    """``(lines, blank, skipped, spans)``: which lines of ``data`` need a closer look.

    Every line (``\n``-separated; a last line without one counts too) is trimmed of
    spaces, tabs and carriage returns. An empty one is blank. A line is *skipped* unread
    when it is a ``{...}`` object that cannot carry usage: no ``"usage"`` in it, or, for
    one longer than 2 kB, a user line by its head (``_is_user_line``), which spares
    searching the large tool results. Every other line is returned as ``(kind, first,
    last)``, its trimmed bounds, in order.

    ``usage`` closes an assistant message, so it is searched for from the end of the
    line: found after a few hundred bytes instead of the whole line.

    This is the reference; ``_linescan.classify_lines`` (C, built when a compiler is at
    hand) gives the same result about 1 µs a line faster, and is used when present.
    """
    find, rfind = data.find, data.rfind
    size = len(data)
    start = lines = blank = skipped = 0
    spans: list[tuple[int, int, int]] = []
    while start < size:
        end = find(b"\n", start)
        if end < 0:
            end = size
        lines += 1
        first, last = start, end
        start = end + 1
        if first < last and (data[first] in _SPACE or data[last - 1] in _SPACE):
            first, last = _trim(data, first, last)
        if first == last:
            blank += 1
        elif (last - first > _HEAD and _is_user_line(find, first, last)) or rfind(
            _USAGE, first, last
        ) < 0:
            if data[first] == _BRACE and data[last - 1] == _CLOSE:
                skipped += 1
            else:
                spans.append((NO_USAGE, first, last))
        else:
            spans.append((TOO_LONG if last - first > max_line else CANDIDATE, first, last))
    return lines, blank, skipped, spans


#: The implementation ``parse_lines`` uses: the C one when it was built.
_classify: Callable[[bytes, int], tuple[int, int, int, list[tuple[int, int, int]]]]
try:
    from otel_claude.sources._linescan import classify_lines as _classify
except ImportError:  # not compiled here: the Python twin gives the same result
    _classify = classify_lines


def _is_user_line(find: Callable[[bytes, int, int], int], first: int, last: int) -> bool:
    """Whether the line at ``first:last`` (``find`` of its buffer) is a user line by its head:
    ``"type":"user"`` before the first ``"message":`` key within the first 2 kB, where Claude
    Code writes the top-level metadata."""
    message = find(_MESSAGE, first, first + _HEAD if first + _HEAD < last else last)
    return message > 0 and find(_USER, first, message) >= 0


def _trim(data: bytes, first: int, last: int) -> tuple[int, int]:
    """``first``/``last`` moved past surrounding blanks, a block at a time (a blank run may
    be megabytes long)."""
    lead = _NOT_SPACE.search(data, first, last)  # one character class: linear, in C
    if lead is None:
        return last, last
    first = lead.start()
    while last > first:
        low = max(first, last - _TRIM_BLOCK)
        kept = len(data[low:last].rstrip(_BLANKS))
        if kept:
            return first, low + kept
        last = low
    return first, last  # not reached: data[first] is not blank


_HEAD = 2048
_MESSAGE = b'"message":'
_USER = b'"type":"user"'
_BLANKS = b" \t\r"
_SPACE = frozenset(_BLANKS)
_NOT_SPACE = re.compile(rb"[^ \t\r]")
_TRIM_BLOCK = 4096
_BRACE, _CLOSE = ord("{"), ord("}")


def read_file(
    path: str | os.PathLike[str], offset: int = 0, inode: int | None = None
) -> tuple[int, int, bytes]:
    """``(inode, offset, bytes from offset to the end)`` of a file, in one ``read`` call.

    ``os.pread`` of the known size rather than ``Path.read_bytes``: no file objects or
    buffer resizing, 6 ms less per 1,000 files. ``offset`` applies only to the same file
    (``inode``, when given) at least that long; a replaced or truncated file is read from
    the start, and the offset returned says which. Raises ``OSError`` when the file cannot
    be opened or read.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if offset > st.st_size or (inode is not None and st.st_ino != inode):
            offset = 0
        want = st.st_size - offset
        first = os.pread(fd, want + 1, offset)  # one byte more: a file that grew shows it
        if len(first) <= want and len(first) < _MAX_READ:
            return st.st_ino, offset, first
        parts = [first]  # grown since fstat, or beyond what one read returns
        at = offset + len(first)
        while chunk := os.pread(fd, 1 << 24, at):
            parts.append(chunk)
            at += len(chunk)
        return st.st_ino, offset, b"".join(parts)
    finally:
        os.close(fd)


#: Linux returns at most this many bytes from one read.
_MAX_READ = 0x7FFFF000


def complete_part(data: bytes) -> bytes:
    """``data`` up to and including its last newline (a torn tail is left for later)."""
    cut = data.rfind(b"\n")
    return data[: cut + 1] if cut >= 0 else b""
