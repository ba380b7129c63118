"""Parse many transcript files in worker processes: the cold scan of a large history.

Decoding is CPU-bound Python, so a second core only helps from another process. Workers
only parse: each reads its share of the files from given offsets up to their last newline
and sends back the coalesced records (steps as plain tuples, which pickle several times
faster than dataclass instances), the new offsets and the line statistics. Everything that
must be exact (deduplication against the ledger, counting, positions) stays in the calling
process, which commits results as they arrive while the workers go on parsing.

Workers are forked (``Workers``): they start in milliseconds with every module already
imported, take files one at a time from a shared queue (``TaskQueue``) and write to
their own channels, which one thread in the calling process drains. No feeder or manager
threads hand out work: with ``ProcessPoolExecutor`` those cost the exporter 0.3 s of CPU
on a 500 MB cold scan, competing with the commits for two cores. Workers run only parsing code,
touching no lock, file or connection of the parent, and leave through ``os._exit`` (as
every multiprocessing child does), so threads the parent had at fork time do not matter.
"""

from __future__ import annotations

import fcntl
import gc
import multiprocessing
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from otel_claude.errors import WorkerError
from otel_claude.records import Normalized, StepRecord, coalesce
from otel_claude.sources.messages import Limits
from otel_claude.sources.transcripts import LineStats, parse_lines, read_file

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

#: Below this many unread bytes the calling process parses alone: forking costs more.
PARALLEL_BYTES = 64 << 20
#: Priority of cold-scan workers below the exporter's (``worker_setup``).
WORKER_NICE = 10
#: A worker sends its results in messages of about this many records: small enough that
#: commits start early and memory stays flat, large enough to pickle efficiently.
SEND_RECORDS = 2000


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


class FileTask(NamedTuple):
    """Read ``path`` from ``offset`` if it still has inode ``inode`` (else from the start).

    ``size`` is the number of unread bytes expected (0: not measured), used only to share
    files out evenly. A named tuple: a frozen dataclass took 4 ms to build 3,000 before
    the workers start.
    """

    key: str
    path: str
    inode: int | None  # None: read the file whatever it is now (a first start)
    offset: int
    size: int = 0


@dataclass
class FileResult:
    """What parsing one file gave: its records and where the next read starts."""

    key: str
    inode: int
    offset: int  # after the last complete line
    records: list[Normalized]
    stats: LineStats


class TaskQueue:
    """Task indexes ``0 .. n-1``, each handed to whichever process asks first.

    A process that meets cheap files simply takes more of them, so all finish together.
    Shares fixed in advance by size did not (0.64 s against 0.89 s on a 500 MB history):
    most bytes of a history are tool results skipped unread, so size says little about
    parsing time. The indexes wait in a pipe, written whole before the workers are
    forked: each ``read`` of one 4-byte index is atomic among readers, and the end of
    the pipe is the end of the queue. No lock or shared memory (``multiprocessing.Value``
    alone took 9 ms of imports of a 0.4 s report). The pipe must hold every token with
    nobody reading yet (64 KiB, 16,384 tokens, usually; one page when the user has many
    pipes open): with more indexes than that, a token stands for a run of them.
    """

    def __init__(self, count: int) -> None:
        self._count = count
        self._fd, write = os.pipe()
        try:
            # One page is the least a pipe holds; Linux says how much more this one does.
            capacity = 4096
            if hasattr(fcntl, "F_GETPIPE_SZ"):
                capacity = fcntl.fcntl(write, fcntl.F_GETPIPE_SZ)
            self._run = max(1, -(-count // (capacity // 4)))  # indexes per token
            tokens = -(-count // self._run)
            os.write(write, b"".join(i.to_bytes(4, "little") for i in range(tokens)))
        finally:
            os.close(write)

    def __iter__(self) -> Iterator[int]:
        fd, run, count = self._fd, self._run, self._count
        while True:
            token = os.read(fd, 4)
            if len(token) < 4:  # the end: every index is taken
                return
            first = int.from_bytes(token, "little") * run
            yield from range(first, min(first + run, count))

    def close(self) -> None:
        """Release the pipe in this process (forked workers hold their own copy)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Workers:
    """Forked processes, each running ``target(arg, channel)`` on its own argument.

    Whatever a worker sends on its channel comes out of ``messages()`` in the calling
    process, as ``(worker index, message)`` in arrival order; ``reply(index, message)``
    sends one back, for a worker that asks (``channel.recv()``). A thread here drains the
    channels into a queue as soon as anything arrives, so a worker never waits for this
    process to be ready to read (the exporter may be committing). A worker that ends
    before it is done (killed, say) makes ``messages()`` raise ``WorkerError`` instead of
    waiting for ever.
    """

    def __init__(
        self, target: Callable[[Any, Connection], None], args: Sequence[Any], nice: int = 0
    ) -> None:
        context = multiprocessing.get_context("fork")
        parent = os.getpid()
        self._processes: list[BaseProcess] = []
        self._channels: list[Connection] = []
        for arg in args:
            mine, theirs = context.Pipe()
            process = context.Process(
                target=_worker_main, args=(target, arg, theirs, parent, nice), daemon=True
            )
            process.start()
            theirs.close()  # the worker holds the only other end: its death closes the channel
            self._processes.append(process)
            self._channels.append(mine)
        self._queue: queue.SimpleQueue[tuple[int, int, Any]] = queue.SimpleQueue()
        self._drainer: threading.Thread | None = None

    def messages(self) -> Iterator[tuple[int, Any]]:
        """``(worker index, message)`` of everything the workers send, until all are done."""
        if self._drainer is None:
            self._drainer = threading.Thread(
                target=self._drain, name="otel-claude-scan-results", daemon=True
            )
            self._drainer.start()
        running = len(self._channels)
        while running:
            kind, index, message = self._queue.get()
            if kind == _MESSAGE:
                yield index, message
            elif kind == _DONE:
                running -= 1
            else:
                raise WorkerError(
                    "a scan worker process died (out of memory?) before it finished; "
                    f"exit status {message}"
                )
        for process in self._processes:
            process.join()

    def reply(self, index: int, message: Any) -> None:
        """Send ``message`` to worker ``index`` (which waits for it in ``channel.recv()``)."""
        self._channels[index].send(message)

    def _drain(self) -> None:
        from multiprocessing.connection import wait

        put = self._queue.put
        index = {id(c): i for i, c in enumerate(self._channels)}
        waiting = list(self._channels)
        while waiting:
            try:
                ready = wait(waiting)
            except (OSError, ValueError):  # closed by stop(): nobody reads any more
                return
            for handle in ready:
                i = index[id(handle)]
                channel = self._channels[i]
                try:
                    message = channel.recv()
                except (EOFError, OSError):  # ended without saying done: it died
                    waiting.remove(channel)
                    process = self._processes[i]
                    process.join(timeout=5)
                    put((_DIED, i, process.exitcode))
                    continue
                if message is _END:
                    waiting.remove(channel)
                    put((_DONE, i, None))
                else:
                    put((_MESSAGE, i, message))

    def stop(self) -> None:
        """End the workers (whatever they were doing) and release their channels.

        Killed workers close their channels, which ends the draining thread; only then are
        the channels closed here, so the thread never waits on a closed handle.
        """
        for process in self._processes:
            if process.is_alive():
                process.terminate()
        for process in self._processes:
            process.join(timeout=5)
        if self._drainer is not None:
            self._drainer.join(timeout=5)
        for channel in self._channels:
            channel.close()


_MESSAGE, _DONE, _DIED = 0, 1, 2
#: What a worker sends last: a message of its own can never be ``None``.
_END = None


def _worker_main(
    target: Callable[[Any, Connection], None],
    arg: Any,
    channel: Connection,
    parent: int,
    nice: int,
) -> None:
    worker_setup(parent, nice)
    target(arg, channel)
    channel.send(_END)
    channel.close()


class ParseJob:
    """Files being parsed by worker processes; ``results()`` yields them as they finish.

    ``start()`` forks the workers, which take the files from a shared queue, so a job can be
    started early (``serve`` starts its cold scan before importing the rest of itself, and
    forks while it has no other thread yet) and read later. A worker that dies (the OOM
    killer, say) raises ``WorkerError`` from ``results()`` instead of leaving the scan
    waiting for ever.
    """

    def __init__(
        self,
        tasks: Sequence[FileTask],
        limits: Limits,
        source: str,
        workers: int,
        listed: Sequence[str] = (),
    ) -> None:
        self.tasks = list(tasks)
        #: Every file the job was planned from, read or not, in listing order.
        self.listed = list(listed)
        self._limits = limits
        self._source = source
        self._count = workers
        self._workers: Workers | None = None

    def start(self) -> ParseJob:
        """Fork the workers; they take the files one at a time, largest first."""
        # A large file taken last would finish last. The sort is stable: files of unknown
        # size (0) keep their order at the end.
        self.tasks.sort(key=lambda t: -t.size)
        taken = TaskQueue(len(self.tasks))
        share = (self.tasks, taken, self._limits, self._source)
        try:
            self._workers = Workers(_parse_share, [share] * self._count, nice=WORKER_NICE)
        finally:
            taken.close()  # only the workers take from it
        return self

    def results(self) -> Iterator[FileResult]:
        """Every file's result, in the order the workers finish them; stops the workers."""
        if self._workers is None:
            self.start()
        assert self._workers is not None
        try:
            for _worker, batch in self._workers.messages():
                for packed in batch:
                    yield _unpack(packed)
        finally:
            self.stop()

    def stop(self) -> None:
        """Release the workers; what they have not sent yet is dropped (nothing uses it)."""
        if self._workers is not None:
            self._workers.stop()
            self._workers = None


def plan_parse(
    files: Iterable[tuple[str, os.DirEntry[str] | None]],
    offset: Callable[[str, int, int], int] | None,
    limits: Limits,
    source: str,
    workers: int,
    parallel_bytes: int = PARALLEL_BYTES,
) -> ParseJob | None:
    """A parse job for ``(path, directory entry or None)`` from ``offset(path, inode,
    size)`` on, or None when fewer than ``parallel_bytes`` are unread (forking would cost
    more than it saves).

    ``offset`` None: every file is read from its start (a first start). Files are then
    only measured until ``parallel_bytes`` are known to be there; the rest are taken as
    listed, after the measured ones, and read whole (15 ms of ``stat`` calls less before
    the workers start, for 3,000 files).
    """
    tasks: list[FileTask] = []
    listed: list[str] = []
    unread = 0
    for key, entry in files:
        listed.append(key)
        if offset is None and unread >= parallel_bytes:
            tasks.append(FileTask(key, key, None, 0))  # size 0: sorted after the measured
            continue
        try:
            st = os.stat(key) if entry is None else entry.stat()
        except OSError:
            continue
        start = 0 if offset is None else offset(key, st.st_ino, st.st_size)
        if st.st_size > start:
            tasks.append(FileTask(key, key, st.st_ino, start, st.st_size - start))
            unread += st.st_size - start
    if workers < 2 or not tasks or unread < parallel_bytes:
        return None
    return ParseJob(tasks, limits, source, workers, listed)


def parse_files(
    tasks: Sequence[FileTask], limits: Limits, source: str, workers: int
) -> Iterator[FileResult]:
    """Results of ``tasks`` parsed by ``workers`` processes, as they finish."""
    return ParseJob(tasks, limits, source, workers).results()


def worker_setup(parent: int, nice: int = 0) -> None:
    """Signals, priority and end of a worker.

    ``nice`` lowers the worker's priority: ``serve``'s own work (start-up, committing what
    the workers send, scrapes) then goes first and the workers take the rest of the cores,
    so less of that work is left when they finish.

    A forked worker inherits the parent's Python handlers: ``serve``'s SIGTERM handler
    only asks to stop, so a worker would outlive a SIGTERM meant to end it; Ctrl-C is for
    the parent to handle. And a worker must not outlive its parent (``kill -9`` during a
    cold scan): nobody would read what it sends.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.disable()  # a worker lives for one scan and makes no cycles (see paused_gc)
    if nice:
        os.nice(nice)
    try:
        import ctypes  # here, in the worker: the exporter and a report never need it

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: workers are only used there anyway
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


_PR_SET_PDEATHSIG = 1


def _parse_share(
    arg: tuple[Sequence[FileTask], TaskQueue, Limits, str], channel: Connection
) -> None:
    """A worker's part: parse the files it takes, send results in messages of ~SEND_RECORDS."""
    tasks, taken, limits, source = arg
    send = channel.send
    out: list[_Packed] = []
    records = 0
    for index in taken:
        packed = _parse_packed((tasks[index], limits, source))
        if packed is None:
            continue
        out.append(packed)
        records += len(packed[3])
        if records >= SEND_RECORDS:
            send(out)
            out, records = [], 0
    if out:
        send(out)


def parse_file(task: FileTask, limits: Limits, source: str) -> FileResult | None:
    """Parse one file in this process; None when it cannot be read."""
    try:
        inode, offset, data = read_file(task.path, task.offset, task.inode)
    except OSError:
        return None
    cut = data.rfind(b"\n") + 1
    stats = LineStats(limits=limits)
    records = coalesce(parse_lines(data[:cut], stats, source=source)) if cut else []
    return FileResult(task.key, inode, offset + cut, records, stats)


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
