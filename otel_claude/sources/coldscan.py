"""Parse many transcript files in worker processes: the cold scan of a large history.

Decoding is CPU-bound Python, so a second core only helps from another process. Workers
only parse: each reads one file from a given offset up to its last newline and sends back
the coalesced records (steps as plain tuples, which pickle several times faster than
dataclass instances), the new offset and the line statistics. Everything that must be
exact (deduplication against the ledger, counting, positions) stays in the calling
process, which commits results as they arrive while the workers go on parsing.

Workers are forked: they start in milliseconds with every module already imported. They
run only parsing code, touching no lock, file or connection of the parent, and leave through
``os._exit`` (as every multiprocessing child does), so threads the parent had at fork time
do not matter to them.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from otel_claude.records import Normalized, StepRecord, coalesce
from otel_claude.sources.messages import Limits
from otel_claude.sources.transcripts import LineStats, parse_lines

if TYPE_CHECKING:  # imported when workers start: small scans never need it
    from concurrent.futures import Future, ProcessPoolExecutor

#: Below this many unread bytes the calling process parses alone: forking costs more.
PARALLEL_BYTES = 64 << 20
#: Priority of cold-scan workers below the exporter's (``worker_setup``).
WORKER_NICE = 10


def scan_workers() -> int:
    """Processes for a cold scan: one per core this process may use, at most two.

    Measured on a 2-core VM over a 500 MB history: two processes take 0.62 times the
    time of one; a third on two cores only adds forking and merging. Only on Linux:
    workers are forked, and macOS system libraries do not survive a fork of a process
    with threads (``serve`` has some), which is why Python defaults to spawning there.
    """
    if not sys.platform.startswith("linux"):
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(2, cores))


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off for a scan (and so in the workers forked in it).

    A scan allocates some 100k objects and creates no cycles; collections would walk all
    of them again and again, about 5% of a 500 MB scan.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class FileTask:
    """Read ``path`` from ``offset`` if it still has inode ``inode`` (else from the start)."""

    key: str
    path: str
    inode: int
    offset: int


@dataclass
class FileResult:
    """What parsing one file gave: its records and where the next read starts."""

    key: str
    inode: int
    offset: int  # after the last complete line
    records: list[Normalized]
    stats: LineStats


class ParseJob:
    """Files being parsed by worker processes; ``results()`` yields them as they finish.

    ``start()`` forks the workers and hands them every file at once, so a job can be
    started early (``serve`` starts its cold scan before importing the rest of itself, and
    forks while it has no other thread yet) and read later. A worker that dies (the OOM
    killer, say) raises ``BrokenProcessPool`` from ``results()`` instead of leaving the
    scan waiting for ever, as ``multiprocessing.Pool`` would.
    """

    def __init__(
        self, tasks: Sequence[FileTask], limits: Limits, source: str, workers: int
    ) -> None:
        self.tasks = list(tasks)
        self._limits = limits
        self._source = source
        self._workers = workers
        self._executor: ProcessPoolExecutor | None = None
        self._pending: set[Future[list[_Packed]]] = set()

    def start(self) -> ParseJob:
        """Fork the workers and queue every file (in chunks of up to 16)."""
        from concurrent.futures import ProcessPoolExecutor

        tasks, workers = self.tasks, self._workers
        size = max(1, min(16, len(tasks) // (workers * 8)))
        self._executor = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=worker_setup,
            initargs=(os.getpid(), WORKER_NICE),
        )
        self._pending = {
            self._executor.submit(_parse_chunk, tasks[i : i + size], self._limits, self._source)
            for i in range(0, len(tasks), size)
        }
        return self

    def results(self) -> Iterator[FileResult]:
        """Every file's result, in the order the workers finish them; stops the workers."""
        if self._executor is None:
            self.start()
        from concurrent.futures import FIRST_COMPLETED, wait

        finished = False
        try:
            while self._pending:
                # Finished futures are dropped as soon as they are used, so the parsed
                # records are held once, not until the end (20 MiB on a 500 MB history).
                done, self._pending = wait(self._pending, return_when=FIRST_COMPLETED)
                for future in done:
                    for packed in future.result():
                        yield _unpack(packed)
                del done
            finished = True
        finally:
            self.stop(wait=finished)

    def stop(self, wait: bool = False) -> None:
        """Release the workers; unfinished chunks are dropped (nothing they make is used)."""
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=True)
            self._pending = set()


def parse_files(
    tasks: Sequence[FileTask], limits: Limits, source: str, workers: int
) -> Iterator[FileResult]:
    """Results of ``tasks`` parsed by ``workers`` processes, as they finish."""
    return ParseJob(tasks, limits, source, workers).results()


def worker_setup(parent: int, nice: int = 0) -> None:
    """Signals, priority and end of a worker.

    ``nice`` lowers the worker's priority: ``serve``'s own work (start-up, committing what
    the workers send, scrapes) then goes first and the workers take the rest of the cores,
    so less of that work is left when they finish (0.72 s against 0.75 s to ready on two
    cores, medians of eight).

    A forked worker inherits the parent's Python handlers: ``serve``'s SIGTERM handler
    only asks to stop, so a worker would outlive a SIGTERM meant to end it; Ctrl-C is for
    the parent to handle. And a worker must not outlive its parent (``kill -9`` during a
    cold scan): it would wait for work for ever, since its siblings hold the queue open.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.disable()  # a worker lives for one scan and makes no cycles (see paused_gc)
    if nice:
        os.nice(nice)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: workers are only used there anyway
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


_PR_SET_PDEATHSIG = 1


def _parse_chunk(tasks: Sequence[FileTask], limits: Limits, source: str) -> list[_Packed]:
    out = []
    for task in tasks:
        packed = _parse_packed((task, limits, source))
        if packed is not None:
            out.append(packed)
    return out


def parse_file(task: FileTask, limits: Limits, source: str) -> FileResult | None:
    """Parse one file in this process; None when it cannot be opened."""
    try:
        handle = open(task.path, "rb")
    except OSError:
        return None
    with handle:
        try:
            st = os.fstat(handle.fileno())
            offset = task.offset if st.st_ino == task.inode and task.offset <= st.st_size else 0
            handle.seek(offset)
            data = handle.read()
        except OSError:
            return None
    cut = data.rfind(b"\n") + 1
    stats = LineStats(limits=limits)
    records = coalesce(parse_lines(data[:cut], stats, source=source)) if cut else []
    return FileResult(task.key, st.st_ino, offset + cut, records, stats)


_Packed = tuple[str, int, int, list[Any], LineStats]


def _parse_packed(args: tuple[FileTask, Limits, str]) -> _Packed | None:
    result = parse_file(*args)
    if result is None:
        return None
    records: list[Any] = [r.row() if type(r) is StepRecord else r for r in result.records]
    return result.key, result.inode, result.offset, records, result.stats


def _unpack(packed: _Packed) -> FileResult:
    key, inode, offset, records, stats = packed
    return FileResult(
        key,
        inode,
        offset,
        [StepRecord(*r) if type(r) is tuple else r for r in records],
        stats,
    )
