"""Run the real exporter (and other servers) as subprocesses on loopback for end-to-end tests.

Every wait is bounded by a deadline and every process is reaped, so a hung or crashed
server fails the test with its log instead of hanging the suite or leaking a process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
DEADLINE_S = 30.0


def child_pids() -> set[int]:
    """This process's children that exist and were not reaped yet (Linux ``/proc``)."""
    pids: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as listing:
                pids.update(int(pid) for pid in listing.read().split())
        except OSError:  # the thread ended meanwhile
            continue
    return pids


def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    what: str,
    check: Callable[[], bool],
    *,
    timeout: float = DEADLINE_S,
    interval: float = 0.1,
    alive: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll ``check`` until it is true; fail early if ``alive`` exits, fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if alive is not None and alive.poll() is not None:
            raise AssertionError(
                f"process exited with {alive.returncode} while waiting for {what}\n{tail(log)}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}\n{tail(log)}")
        time.sleep(interval)


def tail(log: Path | None, lines: int = 40) -> str:
    """The end of a process log, to explain a failure."""
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return f"--- {log.name} ---\n" + "\n".join(text)


def http_ok(url: str) -> bool:
    """Whether ``GET url`` answers 200 (connection errors count as not yet)."""
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def spawn(
    argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr going to ``log`` (a pipe could fill and block)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=ROOT,
        )


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    """SIGTERM, wait for a clean exit; SIGKILL (and still reap) if it does not come."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@dataclass
class Exporter:
    """A running ``otel-claude serve`` subprocess."""

    proc: subprocess.Popen[bytes]
    url: str
    state_dir: Path
    log: Path

    def stop(self, timeout: float = 15.0) -> int:
        """Terminate gracefully and return the exit code."""
        return stop(self.proc, timeout)


def exporter_env(tmp: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process environment (already free of OTEL_*), isolated from the user's files."""
    env = dict(os.environ)
    claude_dir = tmp / "claude-config"
    claude_dir.mkdir(exist_ok=True)
    env.update(
        CLAUDE_CONFIG_DIR=str(claude_dir),  # never tail the developer's real transcripts
        OTEL_CLAUDE_TRANSCRIPTS="off",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


def _start_on_free_port(
    name: str,
    argv: Callable[[int], list[str]],
    tmp: Path,
    env: Mapping[str, str] | None,
    ready_path: str,
    bind_error: str,
    attempts: int = 3,
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start a server on a free port and wait until ``ready_path`` answers 200.

    A port picked by ``free_port`` can be taken by someone else before the server binds it,
    so a start whose log shows ``bind_error`` is retried on another port.
    """
    for attempt in range(attempts):
        port = free_port()
        log = tmp / f"{name}-{attempt}.log"
        proc = spawn(argv(port), log, env)
        url = f"http://127.0.0.1:{port}{ready_path}"
        try:
            wait_until(f"{name} {ready_path}", partial(http_ok, url), alive=proc, log=log)
        except AssertionError:
            stop(proc)
            if bind_error not in log.read_text(errors="replace") or attempt + 1 == attempts:
                raise
            continue
        return proc, port, log
    raise AssertionError("unreachable")


@contextmanager
def running_exporter(tmp: Path, env: Mapping[str, str] | None = None) -> Iterator[Exporter]:
    """Start ``otel-claude serve`` on a free port, wait for /readyz, always stop it after."""
    state_dir = tmp / "state"

    def argv(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "otel_claude",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--state-dir",
            str(state_dir),
        ]

    proc, port, log = _start_on_free_port(
        "exporter", argv, tmp, exporter_env(tmp, env), "/readyz", "cannot listen"
    )
    try:
        yield Exporter(proc, f"http://127.0.0.1:{port}", state_dir, log)
    finally:
        stop(proc)


@dataclass
class Prometheus:
    """A running Prometheus server and its HTTP API."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Run an instant query; return the vector's ``[{"metric": …, "value": [t, "v"]}]``."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10.0)
        assert response.status_code == 200, response.text
        doc = response.json()
        assert doc["status"] == "success", doc
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def wait_for(self, expr: str, timeout: float = DEADLINE_S) -> list[dict[str, Any]]:
        """Poll ``expr`` until it returns a non-empty result (scrapes land asynchronously)."""
        found: list[dict[str, Any]] = []

        def check() -> bool:
            found[:] = self.query(expr)
            return bool(found)

        wait_until(
            f"Prometheus to answer {expr}",
            check,
            timeout=timeout,
            interval=0.25,
            alive=self.proc,
            log=self.log,
        )
        return found


@contextmanager
def running_prometheus(
    binary: str,
    tmp: Path,
    targets: Sequence[str],
    *,
    job: str = "otel-claude",
    scrape_interval: str = "1s",
    rule_files: Sequence[Path] = (),
    extra_args: Sequence[str] = (),
    alertmanagers: Sequence[str] = (),
    scrape_extra: Mapping[str, Any] | None = None,
) -> Iterator[Prometheus]:
    """Start a real Prometheus on loopback scraping ``targets`` (host:port); always stop it."""
    workdir = tmp / "prometheus"
    workdir.mkdir(exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML, and this way nothing needs quoting by hand
            {
                "global": {
                    "scrape_interval": scrape_interval,
                    "scrape_timeout": scrape_interval,
                    "evaluation_interval": scrape_interval,
                },
                "rule_files": [str(p) for p in rule_files],
                "alerting": {
                    "alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]
                }
                if alertmanagers
                else {},
                "scrape_configs": [
                    {
                        "job_name": job,
                        "static_configs": [{"targets": list(targets)}],
                        **(scrape_extra or {}),
                    }
                ],
            }
        )
    )

    def argv(port: int) -> list[str]:
        return [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            *extra_args,
        ]

    proc, port, log = _start_on_free_port(
        "prometheus", argv, tmp, None, "/-/ready", "address already in use"
    )
    try:
        yield Prometheus(proc, f"http://127.0.0.1:{port}", log)
    finally:
        stop(proc)


def post_lines(url: str, lines: Sequence[bytes], batches: int = 4) -> dict[str, int]:
    """POST ``lines`` as NDJSON to ``/v1/events`` in ``batches`` bodies; sum the answers."""
    totals = {"accepted": 0, "duplicates": 0, "ignored": 0, "rejected": 0}
    size = max(1, -(-len(lines) // batches))
    with httpx.Client(timeout=30.0) as client:
        for start in range(0, len(lines), size):
            body = b"\n".join(lines[start : start + size]) + b"\n"
            response = client.post(
                f"{url}/v1/events",
                content=body,
                headers={"Content-Type": "application/x-ndjson"},
            )
            assert response.status_code == 202, response.text
            answer = response.json()
            for key in ("accepted", "duplicates", "ignored"):
                totals[key] += answer[key]
            totals["rejected"] += answer.get("rejected_total", len(answer["rejected"]))
    return totals


@contextmanager
def running_alertmanager(binary: str, tmp: Path, config: Mapping[str, Any]) -> Iterator[str]:
    """Start a real Alertmanager on loopback with ``config``; yield its host:port."""
    workdir = tmp / "alertmanager"
    workdir.mkdir(exist_ok=True)
    path = workdir / "alertmanager.yml"
    path.write_text(json.dumps(config))

    def argv(port: int) -> list[str]:
        return [
            binary,
            f"--config.file={path}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]

    proc, port, _log = _start_on_free_port(
        "alertmanager", argv, tmp, None, "/-/ready", "address already in use"
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)
