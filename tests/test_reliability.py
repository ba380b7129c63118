"""Reliability under crashes, a full or read-only disk and a misbehaving Admin API.

1. ``test_crash_consistency_under_load``: ``otel-claude serve`` is SIGKILLed at random
   moments while it tails a transcript history that is still being written, answers an
   ingest client and polls the Admin API simulator; counters never go down (within a process
   lifetime or across restarts) and end exactly at the independent ground truths.
2. ``test_full_disk_*`` / ``test_read_only_state_dir_*``: the state directory on a tiny
   tmpfs that fills up or is mounted read-only (root only: root ignores file permissions,
   so chmod cannot simulate this).
3. ``test_upstream_fault_matrix`` and friends: every way the Admin API can fail, in
   process with a fake clock; the poller keeps the exporter serving, reports the reason,
   stays within its request budget and ends exact once the faults stop.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from otel_claude.app import App, build_app
from otel_claude.config import load_settings
from otel_claude.ledger import Ledger
from otel_claude.pricing import load_price_table
from otel_claude.server import IngestEndpoint
from otel_claude.simulator import RequestRecord, Simulator
from otel_claude.sources.tailer import TranscriptTailer
from tests.adminkit import GROUP_BY, Clock, usage_expected
from tests.history import HistoryTruth, generate_history
from tests.procs import exporter_env, free_port, http_ok, running_exporter, spawn, tail, wait_until
from tests.streams import GARBAGE, Truth, generate

KEY = "sk-ant-admin01-reliability-test-key"
USAGE = "usage_report/messages"


#: Counters that describe one process (they restart at zero, like ``process_*``); every
#: other counter comes from the ledger and must continue across restarts.
PROCESS_LOCAL = ("otel_claude_source_", "otel_claude_admin_", "process_")

Series = tuple[str, tuple[tuple[str, str], ...]]


# --------------------------------------------------------------------------- helpers


def parse_counters(text: str) -> dict[Series, float]:
    """Every counter sample (``*_total``) of an exposition, by name and sorted labels."""
    out: dict[Series, float] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "counter":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def pick(
    counters: dict[Series, float], name: str, labels: Sequence[str], **where: str
) -> Counter[tuple[str, ...]]:
    """Sum integer counter ``name`` by ``labels`` over the series matching ``where``."""
    out: Counter[tuple[str, ...]] = Counter()
    for (series, pairs), value in counters.items():
        found = dict(pairs)
        if series == name and all(found.get(k) == v for k, v in where.items()):
            out[tuple(found[label] for label in labels)] += int(value)
    return +out


def admin_latest(counters: dict[Series, float]) -> Counter[tuple[str, ...]]:
    """``anthropic_api_tokens_total - anthropic_api_tokens_revised_down_total`` by labels."""
    labels = ("token_type", *GROUP_BY)
    total = pick(counters, "anthropic_api_tokens_total", labels)
    down = pick(counters, "anthropic_api_tokens_revised_down_total", labels)
    total.subtract(down)
    return Counter({k: v for k, v in total.items() if v})  # a negative figure would show


def usage_requests(sim: Simulator, start: int = 0) -> list[RequestRecord]:
    """Usage report requests the simulator answered, from index ``start`` of its log."""
    return [r for r in list(sim.requests)[start:] if r.path.endswith(USAGE)]


@contextmanager
def tmpfs(path: Path, options: str) -> Iterator[None]:
    """Mount a tmpfs on ``path`` (skip without root or when mounting is not allowed)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: mounts a tiny tmpfs to fill up or make read-only")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True)


def fill(path: Path) -> int:
    """Write ``path`` until the file system is full; return the bytes written."""
    block = b"\0" * 65536
    written = 0
    with open(path, "wb", buffering=0) as out:
        while True:
            try:
                written += out.write(block) or 0
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(block) == 1:
                    return written
                block = block[: len(block) // 16] or b"\0"  # the last pages too


def batches_of(lines: Sequence[bytes], rng: random.Random, low: int, high: int) -> list[bytes]:
    """NDJSON bodies of random sizes, in stream order."""
    out: list[bytes] = []
    at = 0
    while at < len(lines):
        size = rng.randint(low, high)
        out.append(b"\n".join(lines[at : at + size]) + b"\n")
        at += size
    return out


GARBAGE_LINES = frozenset(raw for raw, _ in GARBAGE)


def only_garbage(body: bytes) -> bool:
    """Whether a body has nothing usable (the server answers 400 for it, every time)."""
    return all(line in GARBAGE_LINES for line in body.splitlines() if line.strip())


# --------------------------------------------------------------------------- 1. crashes


@dataclass
class Client:
    """Posts NDJSON batches in order, re-sending each one until it is answered 202."""

    url: str
    bodies: list[bytes]
    pace_s: float
    stop: threading.Event
    acknowledged: int = 0
    attempts: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    failure: str | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="ingest-client", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with httpx.Client(timeout=10.0) as http:
                for body in self.bodies:
                    while not self.stop.is_set():
                        self.attempts += 1
                        try:
                            response = http.post(
                                f"{self.url}/v1/events",
                                content=body,
                                headers={"Content-Type": "application/x-ndjson"},
                            )
                        except httpx.HTTPError as exc:
                            self.statuses[type(exc).__name__] += 1
                            time.sleep(0.02)
                            continue
                        self.statuses[str(response.status_code)] += 1
                        if response.status_code == 202:
                            break
                        if response.status_code == 400 and only_garbage(body):
                            break  # nothing usable in it: re-sending cannot change that
                        if response.status_code not in (503,):
                            self.failure = f"unexpected {response.status_code}: {response.text}"
                            return
                        time.sleep(0.02)
                    if self.stop.is_set():
                        return
                    self.acknowledged += 1
                    time.sleep(self.pace_s)
        except Exception as exc:  # reported by the test, never as a thread warning
            self.failure = f"{type(exc).__name__}: {exc}"


@dataclass
class Writer:
    """Appends a generated history to the watched directory in random chunks, as Claude
    Code does (lines split across writes, several sessions at once)."""

    source: Path
    target: Path
    rng: random.Random
    duration_s: float
    stop: threading.Event
    failure: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, name="transcript-writer", daemon=True).start()

    def _run(self) -> None:
        try:
            pending = {
                p.relative_to(self.source): p.read_bytes()
                for p in sorted(self.source.rglob("*.jsonl"))
            }
            total = sum(len(b) for b in pending.values())
            chunk_mean = 48 * 1024
            pause = self.duration_s / max(1, total // chunk_mean)
            offsets = dict.fromkeys(pending, 0)
            while offsets and not self.stop.is_set():
                rel = self.rng.choice(sorted(offsets))
                data, at = pending[rel], offsets[rel]
                size = self.rng.randint(1, 2 * chunk_mean)
                out = self.target / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                with open(out, "ab") as handle:
                    handle.write(data[at : at + size])
                if at + size >= len(data):
                    del offsets[rel]
                else:
                    offsets[rel] = at + size
                time.sleep(pause)
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            self.done.set()


@dataclass
class Monotonic:
    """Checks every scrape: no counter goes down within a lifetime, and ledger counters
    never go below anything seen before, in any earlier lifetime."""

    lifetime: int = 0
    scrapes: int = 0
    last: dict[Series, float] = field(default_factory=dict)
    high: dict[Series, float] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def restart(self) -> None:
        self.lifetime += 1
        self.last = {}

    def observe(self, counters: dict[Series, float]) -> None:
        self.scrapes += 1
        for key, before in self.last.items():
            now = counters.get(key)
            if now is None or now < before:
                self.violations.append(f"lifetime {self.lifetime}: {key} {before} -> {now}")
        for key, before in self.high.items():
            now = counters.get(key)
            if now is None or now < before:
                self.violations.append(
                    f"lifetime {self.lifetime}: {key} below committed {before}: {now}"
                )
        self.last = counters
        for key, value in counters.items():
            if not key[0].startswith(PROCESS_LOCAL):
                self.high[key] = max(value, self.high.get(key, value))


def reference_rejections(projects: Path) -> Counter[tuple[str, ...]]:
    """Transcript lines a clean single scan rejects, by reason (crashes must not change it)."""
    ledger = Ledger(":memory:", prices=load_price_table())
    try:
        TranscriptTailer(ledger, [projects], use_inotify=False).scan()
        out: Counter[tuple[str, ...]] = Counter()
        for (family, labels), value in ledger.snapshot().items():
            if family == "ingest_rejected" and labels[0] == "transcript":
                out[(labels[1],)] += value
        return +out
    finally:
        ledger.close()


@pytest.mark.e2e
def test_crash_consistency_under_load(tmp_path: Path) -> None:
    """SIGKILL ``serve`` at least 20 times under load; counters stay monotonic and end exact.

    Load: a ~3 MB transcript history appended in random chunks (lines torn across writes),
    an ingest client re-sending each NDJSON batch until it gets its 202, and the Admin API
    simulator polled every second (1-minute buckets, late data and revisions on, a day of
    history on the first poll). Each lifetime is killed 0.05-0.6 s after ``/healthz``
    answers and restarted on the same state directory; ``/metrics`` is scraped as often as
    possible in between.

    Exactness against a real clock: the simulator serves every bucket as a pure function of
    the instant it answers, and ``usage_truth(at=...)`` recomputes that for any instant. At
    the end the test lets the exporter finish one more poll, then makes every further usage
    request fail (a 400 is not retried and commits nothing), and waits for that failure: the
    poll answered last with a 200 is then the last one committed, and its instant ``T``
    (``RequestRecord.at``) fixes the truth: ``usage_truth(since, end of T's minute, at=T)``.
    Buckets that left the 6-hour re-read window earlier were settled when last read (late
    data, corrections and withdrawn phantoms all land within 4 hours), so they agree with
    ``at=T`` too. No fake clock, no tolerance.
    """
    rng = random.Random(20261122)
    history_src = tmp_path / "history"
    history: HistoryTruth = generate_history(history_src, seed=5, target_bytes=3_000_000)
    # Three clients with their own sessions, each posting in order (as one SDK app would).
    streams = [generate(seed=41 + i, sessions=300) for i in range(3)]
    stream_truth = Truth()
    for _, truth in streams:
        stream_truth.tokens.update(truth.tokens)
        stream_truth.steps.update(truth.steps)
        stream_truth.conversations.update(truth.conversations)
    claude_dir = tmp_path / "claude-config"
    (claude_dir / "projects").mkdir(parents=True)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    state = tmp_path / "state"
    logs = tmp_path / "logs"
    logs.mkdir()
    now = time.time()
    since = datetime.fromtimestamp(now, UTC).replace(minute=0, second=0, microsecond=0)
    since -= timedelta(days=1)
    stop = threading.Event()
    sim = Simulator(seed=11, api_key=KEY)
    sim.start()
    env = exporter_env(
        tmp_path,
        {
            "OTEL_CLAUDE_TRANSCRIPTS": "on",
            "ANTHROPIC_ADMIN_API_KEY": KEY,
            "OTEL_CLAUDE_ADMIN_API_URL": sim.url,
            "OTEL_CLAUDE_POLL_INTERVAL": "1",
            "OTEL_CLAUDE_ADMIN_SINCE": since.isoformat(),
            "OTEL_CLAUDE_ADMIN_SOURCES": "usage",
        },
    )
    argv = [
        sys.executable,
        *("-m", "otel_claude", "serve"),
        *("--listen", f"127.0.0.1:{port}", "--state-dir", str(state)),
    ]
    procs: list[subprocess.Popen[bytes]] = []

    def start(n: int) -> tuple[subprocess.Popen[bytes], Path]:
        log = logs / f"exporter-{n:02d}.log"
        proc = spawn(argv, log, env)
        procs.append(proc)
        wait_until(
            "/healthz", lambda: http_ok(f"{url}/healthz"), interval=0.01, alive=proc, log=log
        )
        return proc, log

    def scrape() -> dict[Series, float] | None:
        try:
            response = httpx.get(f"{url}/metrics", timeout=2.0)
        except httpx.HTTPError:
            return None  # killed mid-scrape
        return parse_counters(response.text) if response.status_code == 200 else None

    watch = Monotonic()
    clients = []
    for lines, _ in streams:
        bodies = batches_of(lines, rng, 1, 60)
        clients.append(Client(url, bodies, pace_s=20.0 / len(bodies), stop=stop))
    writer = Writer(history_src, claude_dir, random.Random(7), duration_s=12.0, stop=stop)
    kills = 0
    began = time.monotonic()
    try:
        writer.start()
        for client in clients:
            client.start()
        while kills < 24 or not writer.done.is_set():
            assert time.monotonic() - began < 120, f"only {kills} kills in 120 s"
            proc, log = start(kills)
            watch.restart()
            deadline = time.monotonic() + rng.uniform(0.05, 0.6)
            while time.monotonic() < deadline:
                counters = scrape()
                if counters is not None:
                    watch.observe(counters)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL, tail(log)
            kills += 1
        assert writer.failure is None, writer.failure

        # Last lifetime: let everything finish.
        proc, log = start(kills)
        watch.restart()
        wait_until("/readyz", lambda: http_ok(f"{url}/readyz"), alive=proc, log=log)
        deadline = time.monotonic() + 30
        while any(c.thread and c.thread.is_alive() for c in clients):
            assert time.monotonic() < deadline, "the ingest clients did not finish"
            counters = scrape()
            if counters is not None:
                watch.observe(counters)
            time.sleep(0.05)
        for client in clients:
            assert client.failure is None, client.failure
            assert client.acknowledged == len(client.bodies)
        # One more poll, committed by this process (from then on its cursor makes every
        # poll a single page), then no more.
        mark = len(sim.requests)

        def polled() -> bool:
            try:
                text = httpx.get(f"{url}/metrics", timeout=2.0).text
            except httpx.HTTPError:
                return False
            succeeded = 'last_success_timestamp_seconds{source="admin_usage"}' in text
            return succeeded and any(r.status == 200 for r in usage_requests(sim, mark))

        wait_until("one more committed usage poll", polled, alive=proc, log=log)
        sim.inject(400, count=10**9, endpoint=USAGE)  # freeze: no poll commits from now on
        frozen = len(sim.requests)
        wait_until(
            "a failed usage poll",
            lambda: any(r.status == 400 for r in usage_requests(sim, frozen)),
            alive=proc,
            log=log,
        )
        final_text = httpx.get(f"{url}/metrics", timeout=5.0).text
        final = parse_counters(final_text)
        watch.observe(final)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, tail(log)
    finally:
        stop.set()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        sim.stop()

    assert kills >= 20
    assert not watch.violations, "\n".join(watch.violations[:20])
    assert watch.scrapes > kills, "too few scrapes to say anything"
    interrupted = sum(
        n for c in clients for k, n in c.statuses.items() if not k.isdigit() and k != "ConnectError"
    )
    assert interrupted > 0, "no kill ever hit a request in flight"

    # Transcripts: exactly the history's truth, each line consumed once.
    tokens = ("model", "token_type")
    assert pick(final, "claude_agent_tokens_total", tokens, source="transcript") == +history.tokens
    steps = pick(final, "claude_agent_steps_total", ("model",), source="transcript")
    assert steps == Counter({(m,): n for m, n in history.steps.items() if n})
    assert pick(
        final, "otel_claude_ingest_rejected_total", ("reason",), source="transcript"
    ) == reference_rejections(history_src / "projects")

    # Ingest: exactly the stream's truth, whatever was re-sent.
    assert pick(final, "claude_agent_tokens_total", tokens, source="ingest") == +stream_truth.tokens
    steps = pick(final, "claude_agent_steps_total", ("model",), source="ingest")
    assert steps == Counter({(m,): n for m, n in stream_truth.steps.items()})
    outcomes = pick(final, "claude_agent_conversations_total", ("outcome",))
    assert outcomes == Counter({(o,): n for o, n in stream_truth.conversations.items()})

    # Admin API: the latest figures served by the last committed poll.
    ok = [r for r in usage_requests(sim) if r.status in (200, 400)]
    first_failure = next(i for i, r in enumerate(ok) if r.status == 400)
    last = ok[first_failure - 1]
    assert last.status == 200 and "page" not in last.query  # a one-page poll
    minute = int(last.at // 60 * 60)
    end = datetime.fromtimestamp(minute + 60, UTC)
    assert datetime.fromisoformat(last.query["starting_at"][0]) >= end - timedelta(hours=7)
    want = usage_expected(sim, since, end, at=last.at)
    assert sum(want.values()) > 0
    assert admin_latest(final) == want


# --------------------------------------------------------------------------- 2. the disk


def post(url: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/events",
        content=body,
        headers={"Content-Type": "application/x-ndjson"},
        timeout=30.0,
    )


def agent_tokens(url: str) -> Counter[tuple[str, ...]]:
    counters = parse_counters(httpx.get(f"{url}/metrics", timeout=10.0).text)
    return pick(counters, "claude_agent_tokens_total", ("model", "token_type"), source="ingest")


@dataclass
class FullDisk:
    """What an exporter did while its state directory had no space left."""

    sent: int  # bodies acknowledged (202) before the disk was full
    refused: list[httpx.Response]  # answers to the first body that did not fit
    readyz: httpx.Response
    healthz: int
    metrics: int
    tokens: Counter[tuple[str, ...]]  # /metrics while full


def run_until_full(url: str, state: Path, bodies: Sequence[bytes], warmup: int) -> FullDisk:
    """Post ``warmup`` bodies, fill the disk, then post in order until one is refused."""
    for body in bodies[:warmup]:
        assert post(url, body).status_code == 202
    fill(state / "filler")
    sent = warmup
    # A commit can still fit in space SQLite already holds (a reused WAL): that is fine,
    # its 202 must then be durable like any other. The first body that does not fit stops
    # the client, which re-sends it (in order) until it is accepted.
    while sent < len(bodies):
        answer = post(url, bodies[sent])
        if answer.status_code != 202:
            break
        sent += 1
    else:
        raise AssertionError("every body was accepted on a full disk")
    refused = [answer] + [post(url, bodies[sent]) for _ in range(3)]
    return FullDisk(
        sent=sent,
        refused=refused,
        readyz=httpx.get(f"{url}/readyz", timeout=10.0),
        healthz=httpx.get(f"{url}/healthz", timeout=10.0).status_code,
        metrics=httpx.get(f"{url}/metrics", timeout=10.0).status_code,
        tokens=agent_tokens(url),
    )


@pytest.mark.e2e
def test_full_disk_answers_503_and_loses_nothing(tmp_path: Path) -> None:
    """The state directory fills up under ingest: 503 with a JSON error (never a 202 that
    is not durable), the exporter keeps serving, recovers once space is freed, and after a
    kill -9 and a restart every acknowledged batch is still counted, exactly once."""
    state = tmp_path / "state"
    lines, truth = generate(seed=51, sessions=200, garbage=False)
    bodies = batches_of(lines, random.Random(3), 20, 40)
    with tmpfs(state, "size=6m,mode=0700"):
        with running_exporter(tmp_path) as exporter:
            url = exporter.url
            full = run_until_full(url, state, bodies, warmup=10)
            for refused in full.refused:
                assert refused.status_code == 503, refused.text
                assert refused.headers["content-type"] == "application/json"
                assert "ledger could not commit" in refused.json()["error"]
            assert (full.healthz, full.metrics) == (200, 200)
            assert exporter.proc.poll() is None
            (state / "filler").unlink()
            # Space is back: the same process accepts the refused body (no restart needed).
            recovered = post(url, bodies[full.sent])
            assert recovered.status_code == 202, recovered.text
            sent = full.sent + 1
            acknowledged = agent_tokens(url)
            assert acknowledged != full.tokens  # the recovered body counted
            exporter.proc.send_signal(signal.SIGKILL)
            exporter.proc.wait(timeout=10)
        with running_exporter(tmp_path) as again:
            assert agent_tokens(again.url) == acknowledged  # nothing acknowledged was lost
            for body in bodies[sent:]:
                assert post(again.url, body).status_code == 202
            assert agent_tokens(again.url) == +truth.tokens


@pytest.mark.e2e
def test_readyz_not_ready_while_the_ledger_cannot_write(tmp_path: Path) -> None:
    """While commits fail for lack of space, /readyz and the ingest source's health should
    say so, and recover once a commit succeeds again."""
    state = tmp_path / "state"
    lines, _ = generate(seed=52, sessions=60, garbage=False)
    bodies = batches_of(lines, random.Random(4), 20, 40)
    with tmpfs(state, "size=4m,mode=0700"), running_exporter(tmp_path) as exporter:
        full = run_until_full(exporter.url, state, bodies, warmup=3)
        assert full.refused[0].status_code == 503
        assert full.readyz.status_code == 503, full.readyz.text
        assert "ledger" in full.readyz.text
        counters = parse_counters(httpx.get(f"{exporter.url}/metrics", timeout=10.0).text)
        errors = pick(counters, "otel_claude_source_errors_total", ("reason",), source="ingest")
        assert errors[("ledger",)] >= 1
        (state / "filler").unlink()
        assert post(exporter.url, bodies[full.sent]).status_code == 202
        assert httpx.get(f"{exporter.url}/readyz", timeout=10.0).status_code == 200


@pytest.mark.e2e
def test_full_disk_error_names_the_cause(tmp_path: Path) -> None:
    state = tmp_path / "state"
    lines, _ = generate(seed=54, sessions=60, garbage=False)
    bodies = batches_of(lines, random.Random(5), 20, 40)
    with tmpfs(state, "size=4m,mode=0700"), running_exporter(tmp_path) as exporter:
        run_until_full(exporter.url, state, bodies, warmup=3)
        log = exporter.log.read_text()
    assert "ingest not committed" in log
    assert "disk is full" in log, log


def serve_once(tmp_path: Path, state: Path) -> subprocess.CompletedProcess[str]:
    """Run ``serve`` on ``state`` expecting it to give up at once (bounded)."""
    argv = [sys.executable, "-m", "otel_claude", "serve", "--listen", f"127.0.0.1:{free_port()}"]
    try:
        return subprocess.run(
            [*argv, "--state-dir", str(state)],
            env=exporter_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"serve kept running on a read-only {state}: {exc.stderr!r}") from None


@pytest.mark.e2e
def test_read_only_state_dir_refuses_to_start_and_keeps_the_data(tmp_path: Path) -> None:
    """A state directory on a read-only file system: ``serve`` exits (it cannot keep its
    promise that 202 means committed) instead of serving, and the ledger is intact once
    the file system is writable again."""
    state = tmp_path / "state"
    lines, truth = generate(seed=53, sessions=20, garbage=False)
    with tmpfs(state, "size=4m,mode=0700"):
        with running_exporter(tmp_path) as exporter:
            assert post(exporter.url, b"\n".join(lines)).status_code == 202
            before = agent_tokens(exporter.url)
        assert before == +truth.tokens
        remount(state, "ro")
        try:
            refused = serve_once(tmp_path, state)
        finally:
            remount(state, "rw")
        assert refused.returncode != 0, refused.stderr
        with running_exporter(tmp_path) as again:
            assert agent_tokens(again.url) == before


@pytest.mark.e2e
def test_read_only_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with tmpfs(state, "size=1m,mode=0700,ro"):
        refused = serve_once(tmp_path, state)
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr, refused.stderr
    assert str(state) in refused.stderr and "read-only" in refused.stderr.lower()


# --------------------------------------------------------------------------- 3. upstream

START = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)  # a Tuesday, mid-day
SINCE = datetime(2026, 11, 10, 0, 0, tzinfo=UTC)
CLIENT_TIMEOUT_S = 0.2
MAX_RETRIES = 4  # README: 429, 5xx and timeouts are retried with backoff (4 retries)
POLL_S = 60


@dataclass
class Rig:
    """An in-process exporter (usage report only) polling the simulator on a fake clock."""

    app: App
    sim: Simulator
    clock: Clock
    sleeps: list[float]

    def poll(self, settle_s: float = 0.0) -> tuple[list[RequestRecord], list[float]]:
        """One poll: the usage requests it made and the retry waits it asked for.

        The simulator logs a request when it answers; ``settle_s`` waits for slow answers
        the client gave up on to be logged too.
        """
        assert self.app.poller is not None
        requests, sleeps = len(self.sim.requests), len(self.sleeps)
        self.app.poller.poll_once()
        time.sleep(settle_s)
        return usage_requests(self.sim, requests), self.sleeps[sleeps:]

    def counters(self) -> dict[Series, float]:
        return parse_counters(generate_latest(self.app.registry).decode())

    def up(self) -> float:
        key = ("otel_claude_source_up", (("source", "admin_usage"),))
        for family in text_string_to_metric_families(generate_latest(self.app.registry).decode()):
            for sample in family.samples:
                if (sample.name, tuple(sorted(sample.labels.items()))) == key:
                    return sample.value
        raise AssertionError("otel_claude_source_up{source=admin_usage} is missing")

    def errors(self) -> Counter[str]:
        picked = pick(
            self.counters(), "otel_claude_source_errors_total", ("reason",), source="admin_usage"
        )
        return Counter({reason: n for (reason,), n in picked.items()})

    def expected(self) -> Counter[tuple[str, ...]]:
        now = datetime.fromtimestamp(self.clock(), UTC)
        end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        return usage_expected(self.sim, SINCE, end, at=self.clock())

    def exact(self) -> bool:
        return admin_latest(self.counters()) == self.expected()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    clock = Clock(START)
    sim = Simulator(seed=7, api_key=KEY, clock=clock, data_start=datetime(2026, 10, 1, tzinfo=UTC))
    sim.start()
    config = tmp_path / "admin.toml"
    config.write_text(f"[admin]\ntimeout_s = {CLIENT_TIMEOUT_S}\n")
    settings = load_settings(
        env={
            "ANTHROPIC_ADMIN_API_KEY": KEY,
            "OTEL_CLAUDE_ADMIN_API_URL": sim.url,
            "OTEL_CLAUDE_ADMIN_SINCE": SINCE.isoformat(),
            "OTEL_CLAUDE_ADMIN_SOURCES": "usage",
            "OTEL_CLAUDE_STATE_DIR": str(tmp_path / "state"),
            "OTEL_CLAUDE_POLL_INTERVAL": str(POLL_S),
            "OTEL_CLAUDE_TRANSCRIPTS": "off",
            "OTEL_CLAUDE_CONFIG": str(config),
        }
    )
    sleeps: list[float] = []
    app = build_app(settings, {}, clock=clock, sleep=sleeps.append)
    try:
        yield Rig(app, sim, clock, sleeps)
    finally:
        app.close()
        sim.stop()


@dataclass(frozen=True)
class Fault:
    """One way the usage endpoint can fail, and what a poll must do while it lasts."""

    id: str
    inject: dict[str, Any]
    reason: str  # otel_claude_source_errors_total{reason}
    requests: int  # usage requests per failing poll (the bound: no tight loop)
    waits: str  # "retry_after:<s>" (the server's wait), "backoff" or "none"


RETRIED = 1 + MAX_RETRIES  # requests of a poll whose fault outlasts every retry
FAULTS = (
    Fault("429-retry-after", {"status": 429, "retry_after": 2}, "rate_limited", RETRIED, "2"),
    Fault("429-no-retry-after", {"status": 429}, "rate_limited", RETRIED, "backoff"),
    Fault(
        "429-retry-after-beyond-max-wait",
        {"status": 429, "retry_after": 3600},
        "rate_limited",
        1,  # waiting an hour inside one poll would stall every source: next poll instead
        "none",
    ),
    Fault("429-spend-limit", {"spend_limit": True}, "spend_limit", 1, "none"),
    Fault("500", {"status": 500}, "server_error", RETRIED, "backoff"),
    Fault("529", {"status": 529}, "server_error", RETRIED, "backoff"),
    Fault("slow", {"delay_s": 2.5 * CLIENT_TIMEOUT_S}, "timeout", RETRIED, "backoff"),
    Fault("connection-reset", {"kind": "reset"}, "connection", RETRIED, "backoff"),
    Fault("short-body", {"kind": "short_body"}, "connection", RETRIED, "backoff"),
    Fault("truncated-json", {"kind": "truncated_json"}, "invalid_response", 1, "none"),
    Fault("malformed-json", {"kind": "malformed"}, "invalid_response", 1, "none"),
    # The first page says "more at <token>", the page at <token> says the same again.
    Fault("looping-page-token", {"kind": "repeat_page"}, "invalid_response", 2, "none"),
)


def check_waits(fault: Fault, waits: list[float]) -> None:
    if fault.waits == "none":
        assert waits == []
    elif fault.waits == "backoff":  # exponential, jittered to [50 %, 100 %] of 1, 2, 4, 8 s
        assert len(waits) == MAX_RETRIES
        for attempt, wait in enumerate(waits, start=1):
            assert 0.5 * 2 ** (attempt - 1) <= wait <= 2 ** (attempt - 1), waits
    else:  # the server's retry-after, honoured
        assert waits == [float(fault.waits)] * MAX_RETRIES


def grown(before: dict[Series, float], after: dict[Series, float], name: str) -> float:
    """How much counter ``name`` grew, over all its series."""
    return sum(v for (n, _), v in after.items() if n == name) - sum(
        v for (n, _), v in before.items() if n == name
    )


INGEST_BODY = (
    b'{"type":"assistant","session_id":"s-fault","message":{"id":"msg_fault_1",'
    b'"model":"claude-sonnet-4-5","usage":{"input_tokens":7,"output_tokens":3}}}\n'
)


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_upstream_fault_matrix(rig: Rig, fault: Fault) -> None:
    """While the fault lasts the source is down with its reason, every poll stays within
    its request budget and commits nothing; the exporter keeps ingesting and rendering;
    a fault that lasts fewer attempts than the retries is retried away; once the faults
    stop the counters are exact against the simulator's truth."""
    requests, _ = rig.poll()
    assert len(requests) == 1 and rig.up() == 1 and rig.exact()
    committed = {k: v for k, v in rig.counters().items() if k[0].startswith("anthropic_api_")}

    rig.sim.inject(count=10**6, endpoint=USAGE, **fault.inject)
    settle = 1.5 * float(fault.inject.get("delay_s", 0.0))
    for polls in (1, 2):
        rig.clock.advance(POLL_S)
        before = rig.counters()
        requests, waits = rig.poll(settle)
        assert len(requests) == fault.requests, [r.status for r in requests]
        check_waits(fault, waits)
        # The exporter's own request statistics agree with what the simulator saw.
        made = grown(before, rig.counters(), "otel_claude_admin_requests_total")
        retried = grown(before, rig.counters(), "otel_claude_admin_retries_total")
        assert (made, retried) == (len(requests), len(waits))
        assert rig.up() == 0
        assert rig.errors() == Counter({fault.reason: polls})
        assert not rig.app.health.not_ready()
        counters = rig.counters()
        assert {k: v for k, v in counters.items() if k[0].startswith("anthropic_api_")} == (
            committed
        ), "a failed poll changed the counters"
    ingest = IngestEndpoint(rig.app.ledger, token=None, max_bytes=1 << 20)
    assert ingest.post(INGEST_BODY)[0] == 202  # the exporter keeps serving meanwhile
    rig.sim.clear_faults()

    rig.clock.advance(POLL_S)
    if fault.requests == RETRIED:  # a shorter outage is retried away within one poll
        rig.sim.inject(count=MAX_RETRIES, endpoint=USAGE, **fault.inject)
        requests, waits = rig.poll(settle)
        assert len(requests) == RETRIED and requests[-1].status == 200
        check_waits(fault, waits)
    else:
        requests, waits = rig.poll()
        assert len(requests) == 1 and waits == []
    assert rig.up() == 1
    assert rig.errors() == Counter({fault.reason: 2})
    assert rig.exact()
    rig.clock.advance(10 * POLL_S)
    rig.poll()
    assert rig.up() == 1 and rig.exact()


def test_empty_page_with_more_to_come_is_followed(rig: Rig) -> None:
    """An empty page saying ``has_more`` with a valid token is not an error: follow it."""
    rig.sim.inject(kind="empty_page", endpoint=USAGE)
    requests, waits = rig.poll()
    assert len(requests) == 2 and "page" in requests[1].query and waits == []
    assert rig.up() == 1 and rig.exact()


def test_endless_empty_pages_are_bounded(rig: Rig) -> None:
    """Pages that are always empty but always "have more" must not be followed forever.

    The window needs ceil(13 hourly buckets / 168 per page) = 1 page; allowing one spurious
    page per real page, each with its retries, a poll has no reason to make more than
    2 * (1 + 4) requests.
    """
    rig.sim.inject(kind="empty_page", count=200, endpoint=USAGE)
    requests, _ = rig.poll()
    assert len(requests) <= 2 * RETRIED, f"{len(requests)} requests in one poll"
    assert rig.up() == 0 and rig.errors() == Counter({"invalid_response": 1})


def test_page_token_back_to_the_first_page_does_not_double_count(rig: Rig) -> None:
    """Page 1 says "more at <token for page 1's own start>": the buckets come twice."""
    rig.poll()
    rig.clock.advance(POLL_S)
    rig.sim.inject(kind="repeat_page", endpoint=USAGE)  # once: the second page is genuine
    requests, _ = rig.poll()
    assert len(requests) == 2
    total = pick(rig.counters(), "anthropic_api_tokens_total", ("token_type", *GROUP_BY))
    expected = rig.expected()
    assert all(total[k] <= v for k, v in expected.items()), "counted the repeated page twice"
    assert rig.exact()


def test_simulator_fault_kinds_are_validated() -> None:
    sim = Simulator(api_key=KEY)
    with pytest.raises(ValueError, match="kind must be one of"):
        sim.inject(kind="gremlins")
    with pytest.raises(ValueError, match="give no status"):
        sim.inject(500, kind="reset")
    with pytest.raises(ValueError, match="needs endpoint"):
        sim.inject(kind="empty_page")  # paging faults need a bucketed report
    with pytest.raises(ValueError, match="needs endpoint"):
        sim.inject(kind="repeat_page", endpoint="usage_report/claude_code")
    with pytest.raises(ValueError, match="revised_down needs endpoint"):
        sim.inject(kind="revised_down", endpoint="cost_report")
    sim.inject(kind="reset", delay_s=0.1)  # a slow reset is fine
    sim.inject(kind="empty_page", endpoint="cost_report")


def test_revision_down_then_back_up_ends_exact(rig: Rig) -> None:
    """Served 10, then 5, then 10 again: ``total - revised_down`` must end at 10."""
    rig.poll()
    rig.clock.advance(POLL_S)
    rig.sim.inject(kind="revised_down", endpoint=USAGE)
    rig.poll()  # every bucket revised down to half
    assert rig.up() == 1
    down = pick(rig.counters(), "anthropic_api_tokens_revised_down_total", ("token_type",))
    assert sum(down.values()) > 0
    rig.clock.advance(POLL_S)
    rig.poll()  # and back up
    assert rig.up() == 1 and rig.exact()
