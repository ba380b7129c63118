"""Parse many transcript files in worker processes: the cold scan of a large history.

Decoding is CPU-bound Python, so a second core only helps from another process. Workers
only parse: each reads its share of the files from given offsets up to their last newline
and sends back the coalesced records (steps as plain tuples, which pickle several times
faster than dataclass instances), the new offsets and the line statistics. Everything that
must be exact (deduplication against the ledger, counting, positions) stays in the calling
process, which commits results as they arrive while the workers go on parsing.

Workers are forked (``Workers``, with ``os.fork``): they start in milliseconds with every
module already imported, take files one at a time from a shared queue (``TaskQueue``) and
write to their own pipes (``Channel``), which one thread in the calling process drains.
No feeder or manager threads hand out work: with ``ProcessPoolExecutor`` those cost the
exporter 0.3 s of CPU on a 500 MB cold scan, competing with the commits for two cores.
Workers run only parsing code, touching no lock, file or connection of the parent, and
leave through ``os._exit``, so threads the parent had at fork time do not matter.
"""

from __future__ import annotations

import fcntl
import gc
import os
import pickle
import queue
import select
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn

from otel_claude.errors import WorkerError
from otel_claude.records import Normalized, StepRecord, coalesce
from otel_claude.sources.messages import Limits
from otel_claude.sources.transcripts import LineStats, parse_lines, read_file

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


class Channel:
    """One end of the two pipes between this process and a forked worker.

    Whole messages, pickled and preceded by their length. Plain pipes rather than
    ``multiprocessing``'s connections: importing that machinery took 15 ms on the way to
    every fork, in ``report`` and in ``serve``'s first start alike.
    """

    def __init__(self, incoming: int, outgoing: int) -> None:
        self._in, self._out = incoming, outgoing

    def fileno(self) -> int:
        """The descriptor to wait on for an incoming message."""
        return self._in

    def descriptors(self) -> tuple[int, int]:
        """Both descriptors (a forked worker closes the ones it inherits)."""
        return self._in, self._out

    def send(self, message: Any) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(_LENGTH.pack(len(data)) + data)
        while view:
            view = view[os.write(self._out, view) :]

    def recv(self) -> Any:
        """The next message; ``EOFError`` when the other end closed (or died) instead."""
        return pickle.loads(self._read(_LENGTH.unpack(self._read(_LENGTH.size))[0]))

    def _read(self, size: int) -> bytearray:
        buffer = bytearray(size)
        view, done = memoryview(buffer), 0
        while done < size:
            got = os.readv(self._in, [view[done:]])
            if not got:
                raise EOFError("the other end of the channel is closed")
            done += got
        return buffer

    def close(self) -> None:
        for fd in (self._in, self._out):
            if fd >= 0:
                os.close(fd)
        self._in = self._out = -1


_LENGTH = struct.Struct("<Q")


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
        self, target: Callable[[Any, Channel], None], args: Sequence[Any], nice: int = 0
    ) -> None:
        parent = os.getpid()
        self._pids: list[int] = []
        self._status: dict[int, int] = {}  # worker index -> exit status, once reaped
        self._channels: list[Channel] = []
        self._queue: queue.SimpleQueue[tuple[int, int, Any]] = queue.SimpleQueue()
        self._drainer: threading.Thread | None = None
        for stream in (sys.stdout, sys.stderr):  # or a worker could write their buffers too
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        try:
            for arg in args:
                down, to_worker = os.pipe()
                from_worker, up = os.pipe()
                try:
                    pid = os.fork()
                except OSError:  # no more processes: nothing holds these ends
                    for fd in (down, to_worker, from_worker, up):
                        os.close(fd)
                    raise
                if pid == 0:  # the worker: never returns
                    # Only its own ends stay open: this worker's parent side and the
                    # other workers' channels, inherited, are closed in it.
                    inherited = [to_worker, from_worker]
                    for channel in self._channels:
                        inherited += channel.descriptors()
                    _worker_main(target, arg, (down, up), inherited, parent, nice)
                os.close(down)
                os.close(up)
                self._pids.append(pid)
                self._channels.append(Channel(from_worker, to_worker))
        except BaseException:
            self.stop()
            raise

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
        for index in range(len(self._pids)):
            self._reap(index)

    def reply(self, index: int, message: Any) -> None:
        """Send ``message`` to worker ``index`` (which waits for it in ``channel.recv()``)."""
        self._channels[index].send(message)

    def _drain(self) -> None:
        put = self._queue.put
        poller = select.poll()
        index: dict[int, int] = {}
        for i, channel in enumerate(self._channels):
            index[channel.fileno()] = i
            poller.register(channel.fileno(), select.POLLIN)
        while index:
            try:
                ready = poller.poll()
            except (OSError, ValueError):  # closed by stop(): nobody reads any more
                return
            for fd, _event in ready:
                i = index[fd]
                try:
                    message = self._channels[i].recv()
                except (EOFError, OSError):  # ended without saying done: it died
                    poller.unregister(fd)
                    del index[fd]
                    put((_DIED, i, self._reap(i)))
                    continue
                if message is _END:
                    poller.unregister(fd)
                    del index[fd]
                    put((_DONE, i, None))
                else:
                    put((_MESSAGE, i, message))

    def _reap(self, index: int, block: bool = True) -> int | None:
        """Worker ``index``'s exit status (negative: the signal that ended it), once it ended."""
        if index not in self._status:
            try:
                pid, status = os.waitpid(self._pids[index], 0 if block else os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere
                self._status[index] = 0
            else:
                if pid == 0:
                    return None
                self._status[index] = os.waitstatus_to_exitcode(status)
        return self._status[index]

    def stop(self) -> None:
        """End the workers (whatever they were doing) and release their channels.

        Killed workers close their channels, which ends the draining thread; only then are
        the channels closed here, so the thread never waits on a closed descriptor. A
        worker that outlives SIGTERM by 5 s (forked an instant ago, before it could restore
        the default handler) is killed.
        """
        for index, pid in enumerate(self._pids):
            if self._reap(index, block=False) is None:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for index, pid in enumerate(self._pids):
            while self._reap(index, block=False) is None:
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    self._reap(index)
                    break
                time.sleep(0.005)
        if self._drainer is not None:
            self._drainer.join(timeout=5)
        for channel in self._channels:
            channel.close()


_MESSAGE, _DONE, _DIED = 0, 1, 2
#: What a worker sends last: a message of its own can never be ``None``.
_END = None


def _worker_main(
    target: Callable[[Any, Channel], None],
    arg: Any,
    ends: tuple[int, int],
    inherited: Sequence[int],
    parent: int,
    nice: int,
) -> NoReturn:
    """A forked worker's whole life, from its channel's ``ends`` (in, out) on, with the
    descriptors in ``inherited`` closed first. It leaves through ``os._exit`` whatever
    happens, never returning into the code that forked it (nor running its ``atexit``
    handlers or ``finally`` blocks)."""
    code = 1
    try:
        for fd in inherited:
            os.close(fd)
        channel = Channel(*ends)
        worker_setup(parent, nice)
        target(arg, channel)
        channel.send(_END)
        code = 0
    except BaseException:
        import traceback

        traceback.print_exc()
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
    finally:
        os._exit(code)


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


def _parse_share(arg: tuple[Sequence[FileTask], TaskQueue, Limits, str], channel: Channel) -> None:
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
