"""Live tailing of Claude Code transcripts into the ledger.

Positions (inode, offset) are ledger cursors committed in the same transaction as the
counts their lines produced, so a crash at any instant neither loses nor repeats a token: a
restart resumes every file exactly after its last committed line. A torn last line stays in
the file until its newline arrives. Truncated or replaced files (size below the offset, new
inode) are read again from the start; the global message-id dedup makes that harmless.

Changes are noticed through inotify (``watchfiles``); a periodic stat pass is the fallback
and the safety net, and costs one ``stat`` per file (no reads) when nothing changed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from otel_claude.errors import LedgerError
from otel_claude.health import SourceHealth
from otel_claude.ledger import Ledger
from otel_claude.records import Normalized, StepRecord, coalesce
from otel_claude.sources.coldscan import (
    PARALLEL_BYTES,
    FileResult,
    ParseJob,
    paused_gc,
    plan_parse,
)
from otel_claude.sources.transcripts import (
    SOURCE,
    LineStats,
    complete_part,
    parse_lines,
    transcript_entries,
)

log = logging.getLogger(__name__)

NAME = "transcripts"
CURSOR_PREFIX = "transcript:"
READ_CHUNK = 8 << 20
#: Records per commit while workers parse (``_scan_parallel``). Every commit rewrites the
#: B-tree pages its new steps land on (message ids are random: nearly all of them), so the
#: first commit waits for more records; later ones are small, so that little is left to
#: commit when the workers finish. On a 500 MB history (30k steps): committed 0.66 to
#: 0.74 s after start against 0.75 to 0.78 s with 15,000 or 20,000 per commit, which also
#: hold 10 MiB more in memory.
PARALLEL_FIRST_BATCH = 10_000
PARALLEL_BATCH = 3_000
SAFETY_SCAN_S = 30.0  # with inotify working, a full stat pass this often


@dataclass(frozen=True)
class Position:
    """Where reading a file resumes: its inode and the offset after the last consumed line."""

    inode: int
    offset: int

    def encode(self) -> str:
        return f"{self.inode}:{self.offset}"

    @classmethod
    def decode(cls, value: str) -> Position | None:
        inode, sep, offset = value.partition(":")
        if not sep or not inode.isdigit() or not offset.isdigit():
            return None
        return cls(int(inode), int(offset))


class TranscriptTailer:
    """Reads new transcript lines into the ledger, once (``scan``) or continuously (``run``)."""

    name = NAME

    def __init__(
        self,
        ledger: Ledger,
        roots: Sequence[Path | str],
        *,
        health: SourceHealth | None = None,
        batch_records: int = 20_000,
        poll_s: float = 2.0,
        use_inotify: bool = True,
        clock: Callable[[], float] = time.time,
        project_label: bool = False,
        project_allow: Sequence[str] = (),
        max_projects: int = 100,
        workers: int = 1,
        parallel_bytes: int = PARALLEL_BYTES,
    ) -> None:
        self._ledger = ledger
        self.roots = [Path(r) for r in roots]
        self._health = health
        self._batch = batch_records
        self._poll = poll_s
        self._inotify = use_inotify
        self._clock = clock
        self._positions: dict[str, Position] = {}
        for name, value in ledger.cursors(CURSOR_PREFIX).items():
            pos = Position.decode(value)
            if pos is not None:
                self._positions[name[len(CURSOR_PREFIX) :]] = pos
        self._project_label = project_label
        self._project_allow = frozenset(project_allow)
        self._max_projects = max_projects
        self._workers = workers
        self._parallel_bytes = parallel_bytes
        self._early: ParseJob | None = None
        self._projects: set[str] = set()
        self._pending: list[Normalized] = []
        self._pending_cursors: dict[str, str] = {}
        self.stats = LineStats()
        if health is not None:
            health.enable(NAME)

    # --- one pass -------------------------------------------------------------------

    def scan(self, paths: Iterable[Path] | None = None) -> None:
        """Read what is new in ``paths`` (default: every transcript) and commit it."""
        full = paths is None
        seen: set[str] = set()
        # Plain path strings: this pass ends every cold scan, where building 3,000 Path
        # objects cost 20 ms of the time to ready. A cold scan started early was planned
        # from a listing made moments ago: its files are the ones to look at again (20 ms
        # less to ready than listing the directories once more; a file created since is
        # found by the next full scan, at the latest the safety scan).
        early = self._early.listed if full and self._early is not None else None
        listed = (
            early
            if early
            else [key for key, _ in transcript_entries(self.roots)]
            if paths is None
            else [str(path) for path in paths]
        )
        if full and self._workers > 1:
            self._scan_parallel(listed)
        for key in listed:
            seen.add(key)
            self._read(key)
        self._flush()
        if full:
            gone = [k for k in self._positions if k not in seen]
            if gone:
                self._ledger.drop_cursors(CURSOR_PREFIX + k for k in gone)
                for k in gone:
                    del self._positions[k]

    def start_cold_scan(self, started: ParseJob | None = None) -> bool:
        """Start parsing every transcript with much unread data in worker processes now.

        ``serve`` calls this before it imports and builds everything else (and before it
        has any other thread): the workers parse while it starts, and the first ``scan``
        commits what they found. ``started``: a job that ``serve`` started before this
        ledger existed (``plan_parse`` without offsets: a new ledger has no positions).
        Returns whether workers were started.
        """
        if started is not None and self._early is None and not self._positions:
            self._early = started
        elif started is not None:
            started.stop()
        if self._workers > 1 and self._early is None:
            # Straight from the directory entries: no Path objects and one stat per file
            # (40 ms less before the workers start, for 3,000 files).
            self._early = self._plan_parallel(transcript_entries(self.roots))
            if self._early is not None:
                self._early.start()
        return self._early is not None

    def _scan_parallel(self, paths: list[str]) -> None:
        """Parse files with much unread data in worker processes, committing as they finish.

        Only worth it for a cold scan (a first start, or a long time offline): below
        ``parallel_bytes`` unread bytes nothing happens here and ``_read`` does it all.
        Positions and counts are committed together exactly as ``_read`` does, so a crash
        in the middle leaves every file either counted up to its committed position or not
        at all.
        """
        job, self._early = self._early, None
        if job is None:
            job = self._plan_parallel((path, None) for path in paths)
        if job is not None:
            ledger = self._ledger
            with paused_gc(), ledger.deferred_checkpoints(), ledger.deferred_index():
                self._commit_parsed(job.results())

    def _plan_parallel(
        self, files: Iterable[tuple[str, os.DirEntry[str] | None]]
    ) -> ParseJob | None:
        """A parse job for the unread parts of ``(path, directory entry or None)``, or None
        below ``parallel_bytes``."""
        positions = self._positions

        def offset(key: str, inode: int, size: int) -> int:
            pos = positions.get(key)
            if pos is not None and pos.inode == inode and pos.offset <= size:
                return pos.offset
            return 0

        return plan_parse(
            files, offset, self.stats.limits, SOURCE, self._workers, self._parallel_bytes
        )

    def close(self) -> None:
        """Stop workers of a cold scan that was started but never read."""
        job, self._early = self._early, None
        if job is not None:
            job.stop()

    def _commit_parsed(self, results: Iterable[FileResult]) -> None:
        batch = min(self._batch, PARALLEL_FIRST_BATCH)
        for result in results:
            self.stats.add(result.stats)
            records = result.records
            if self._project_label:
                label = self._project(Path(result.key))
                records = [
                    replace(r, project=label) if isinstance(r, StepRecord) else r for r in records
                ]
            self._pending.extend(records)
            position = Position(result.inode, result.offset)
            self._positions[result.key] = position
            self._pending_cursors[CURSOR_PREFIX + result.key] = position.encode()
            if len(self._pending) >= batch:
                self._flush()
                batch = min(self._batch, PARALLEL_BATCH)
        self._flush()

    def _read(self, key: str) -> None:
        """Parse what ``key`` (a transcript's path) has beyond its committed position."""
        pos = self._positions.get(key)
        if pos is not None:
            try:
                st = os.stat(key)
            except OSError:
                return
            if pos.inode == st.st_ino and pos.offset == st.st_size:
                return  # unchanged: one stat, no open
        try:
            handle = open(key, "rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning(
                "cannot read transcript", extra={"fields": {"path": key, "error": exc.strerror}}
            )
            return
        with handle:
            st = os.fstat(handle.fileno())
            pos = self._positions.get(key)
            if pos is not None and pos.inode == st.st_ino and pos.offset == st.st_size:
                return  # unchanged
            offset = 0
            if pos is not None and pos.inode == st.st_ino and pos.offset <= st.st_size:
                offset = pos.offset
            elif pos is not None:
                log.info(
                    "transcript replaced or truncated, reading it again",
                    extra={"fields": {"path": key}},
                )
            handle.seek(offset)
            carry = b""
            while True:
                block = handle.read(READ_CHUNK)
                if not block:
                    break
                data = carry + block if carry else block
                done = complete_part(data)
                carry = data[len(done) :]
                if not done:
                    continue
                records = parse_lines(done, self.stats)
                if self._project_label:
                    label = self._project(Path(key))
                    records = [
                        replace(r, project=label) if isinstance(r, StepRecord) else r
                        for r in records
                    ]
                self._pending.extend(records)
                offset += len(done)
                self._pending_cursors[CURSOR_PREFIX + key] = Position(st.st_ino, offset).encode()
                self._positions[key] = Position(st.st_ino, offset)
                if len(self._pending) >= self._batch:
                    self._flush()
            if pos is not None and offset == 0 and key not in self._pending_cursors:
                # A replaced file with no complete line yet: remember its new identity.
                self._positions[key] = Position(st.st_ino, 0)
                self._pending_cursors[CURSOR_PREFIX + key] = Position(st.st_ino, 0).encode()

    def _project(self, path: Path) -> str:
        """The ``project`` label of a transcript: its directory below ``projects/``.

        Only allow-listed names (when a list is configured) and at most ``max_projects``
        distinct names are shown; everything else is ``other``.
        """
        name = "other"
        for root in self.roots:
            try:
                name = path.relative_to(root).parts[0]
                break
            except (ValueError, IndexError):
                continue
        if self._project_allow and name not in self._project_allow:
            return "other"
        if name not in self._projects:
            if len(self._projects) >= self._max_projects:
                return "other"
            self._projects.add(name)
        return name

    def _flush(self) -> None:
        if not self._pending and not self._pending_cursors:
            return
        try:
            self._ledger.apply(
                coalesce(self._pending), source=SOURCE, cursors=self._pending_cursors
            )
        except BaseException:
            # Nothing was committed: forget the in-memory positions so the lines are re-read.
            self._positions = {}
            for name, value in self._ledger.cursors(CURSOR_PREFIX).items():
                pos = Position.decode(value)
                if pos is not None:
                    self._positions[name[len(CURSOR_PREFIX) :]] = pos
            raise
        finally:
            self._pending = []
            self._pending_cursors = {}

    # --- continuous -----------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Initial scan, then follow changes until ``stop`` is set."""
        started = time.monotonic()
        log.info(
            "initial transcript scan", extra={"fields": {"roots": [str(r) for r in self.roots]}}
        )
        self._timed(self.scan)
        log.info(
            "initial transcript scan done",
            extra={
                "fields": {
                    "files": len(self._positions),
                    "lines": self.stats.lines,
                    "rejected": sum(self.stats.rejected.values()),
                    "seconds": round(time.monotonic() - started, 3),
                }
            },
        )
        if self._inotify:
            try:
                self._watch(stop)
                return
            except Exception as exc:  # inotify unavailable or exhausted: keep polling
                log.warning(
                    "file watching unavailable, polling instead",
                    extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}},
                )
        while not stop.wait(self._poll):
            self._timed(self.scan)

    def _watch(self, stop: threading.Event) -> None:
        import watchfiles

        while not stop.is_set():
            roots = [r for r in self.roots if r.is_dir()]
            if not roots:  # nothing to watch yet: look again after a poll interval
                if stop.wait(self._poll):
                    return
                self._timed(self.scan)
                continue
            quiet = 0
            for changes in watchfiles.watch(
                *roots,
                stop_event=stop,
                debounce=100,
                step=50,
                rust_timeout=int(self._poll * 1000),
                yield_on_timeout=True,
                raise_interrupt=False,
            ):
                paths = {Path(p) for _change, p in changes if p.endswith(".jsonl")}
                if changes and not paths:
                    continue
                if paths:
                    self._timed(partial(self.scan, sorted(paths)))
                    continue
                # No event for a while: now and then, a stat pass catches anything inotify
                # missed (e.g. a directory created between two events).
                quiet += 1
                if quiet * self._poll >= SAFETY_SCAN_S:
                    quiet = 0
                    self._timed(self.scan)
            return

    def _timed(self, action: Callable[[], None]) -> None:
        started = time.monotonic()
        try:
            action()
        except Exception as exc:
            log.exception("transcript scan failed")
            reason = (
                "ledger"
                if isinstance(exc, LedgerError)
                else "io"
                if isinstance(exc, OSError)
                else "internal"
            )
            if self._health is not None:
                self._health.failed(NAME, reason=reason, duration=time.monotonic() - started)
            return
        if self._health is not None:
            self._health.succeeded(NAME, at=self._clock(), duration=time.monotonic() - started)
