"""Benchmark ``POST /v1/events`` over real HTTP against one ``otel-claude serve`` on one core.

Why a subprocess and real sockets: the number that matters to users is what one exporter
process sustains end to end (HTTP parsing, JSON, normalization, the SQLite commit), and
pinning it to a single CPU makes that number "per core" and comparable across machines.
The client runs on the other cores when there are any, so it does not steal the server's.

Every response and the final ``/metrics`` totals are checked against the generator's
ground truth: a fast exporter that miscounts must fail, not win.

    .venv/bin/python bench/ingest_http.py            # >= 200k lines x 3 rounds, 2,000 singles
    .venv/bin/python bench/ingest_http.py --quick    # ~20k lines x 1 round, 500 singles
    .venv/bin/python bench/ingest_http.py --json     # also print the raw numbers as JSON
    .venv/bin/python bench/ingest_http.py --rows FILE  # the result rows for ``python -m bench``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.rows import Row, compile_package, cpu_model, write_rows  # noqa: E402
from tests.streams import Truth, generate  # noqa: E402

TARGET_MSG_S = 20_000
TARGET_SINGLE_P99_MS = 10.0
SESSIONS_PER_SEED = 500  # ~8,900 lines per seed
BATCHED_SEED_BASE = 100_000  # batched and single-message workloads never share an id
SINGLE_SEED_BASE = 900_000
SOURCE = "ingest"
READY_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 60.0


class BenchFailure(Exception):
    """A wrong count, a failed request or an exceeded time budget: the run is invalid."""


# --- workload -----------------------------------------------------------------------


@dataclass
class Workload:
    """Unique NDJSON lines (in stream order) and the totals they must produce."""

    lines: list[bytes]
    truth: Truth
    seeds: int


def merge_truth(parts: Sequence[Truth]) -> Truth:
    """Sum several streams' truths; estimated cost is recomputed from the summed tokens."""
    total = Truth()
    for part in parts:
        total.tokens.update(part.tokens)
        total.web_search.update(part.web_search)
        total.steps.update(part.steps)
        total.reported_pico.update(part.reported_pico)
        total.conversations.update(part.conversations)
        total.rejected.update(part.rejected)
        total.usage_lines += part.usage_lines
        total.ignored_lines += part.ignored_lines
    return total


def build_workload(min_lines: int, seed_base: int, sessions: int) -> Workload:
    """Whole generated streams (distinct seeds, so no message id repeats) until ``min_lines``."""
    lines: list[bytes] = []
    truths: list[Truth] = []
    seed = seed_base
    while len(lines) < min_lines:
        chunk, truth = generate(seed, sessions, garbage=False)
        lines.extend(chunk)
        truths.append(truth)
        seed += 1
    return Workload(lines, merge_truth(truths), seed - seed_base)


def batches(lines: Sequence[bytes], size: int) -> list[tuple[bytes, int]]:
    """NDJSON bodies of ``size`` lines each (the last may be shorter), with their line counts."""
    return [
        (b"\n".join(lines[i : i + size]) + b"\n", len(lines[i : i + size]))
        for i in range(0, len(lines), size)
    ]


# --- the exporter process -----------------------------------------------------------


def free_port() -> int:
    """A port the kernel just handed out; the tiny race with other processes is acceptable."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env() -> dict[str, str]:
    """The caller's environment minus settings that would change what the exporter does."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "ANTHROPIC_")) and not k.lower().endswith("_proxy")
    }


class Exporter:
    """One ``otel-claude serve`` subprocess pinned to ``core``, on a fresh state directory."""

    live: ClassVar[set[Exporter]] = set()  # killed by main() whatever interrupted the run

    def __init__(self, core: int, workdir: Path) -> None:
        self.core = core
        self.state_dir = Path(tempfile.mkdtemp(prefix="state-", dir=workdir))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.state_dir.with_suffix(".log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "otel_claude",
                "serve",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--state-dir",
                str(self.state_dir),
            ],
            cwd=ROOT,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.sched_setaffinity(0, {core}),
        )
        Exporter.live.add(self)

    def wait_ready(self, client: httpx.Client) -> None:
        """Poll ``/readyz`` until 200; fail with the server's log if it exits or hangs."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchFailure(f"exporter exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if client.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise BenchFailure(f"exporter not ready after {READY_TIMEOUT_S:.0f}s:\n{self.log()}")

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process so far (all its threads)."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log(self) -> str:
        """The tail of the server's output, for failure messages."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """Terminate gracefully (the exporter closes its ledger on SIGTERM), else kill."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        shutil.rmtree(self.state_dir, ignore_errors=True)
        Exporter.live.discard(self)


@contextmanager
def exporter(core: int, workdir: Path, client: httpx.Client) -> Iterator[Exporter]:
    """A ready exporter that is always stopped, whatever happens in the block."""
    server = Exporter(core, workdir)
    try:
        server.wait_ready(client)
        yield server
    finally:
        server.stop()


# --- measurements -------------------------------------------------------------------


@dataclass
class Run:
    """One scenario in one round, against a fresh exporter."""

    scenario: str
    lines_per_post: int
    messages: int
    requests: int
    seconds: float
    server_cpu_s: float
    latencies_ms: list[float] = field(repr=False)

    @property
    def rate(self) -> float:
        """Lines taken in (202, counted as accepted, duplicate or ignored) per wall second."""
        return self.messages / self.seconds


def post_all(
    client: httpx.Client,
    server: Exporter,
    bodies: Sequence[tuple[bytes, int]],
    scenario: str,
    lines_per_post: int,
) -> tuple[Run, Counter[str]]:
    """POST ``bodies`` in order on one keep-alive connection; check every answer adds up."""
    url = f"{server.url}/v1/events"
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    clock = time.perf_counter
    cpu_before = server.cpu_seconds()
    started = clock()
    for number, (body, lines) in enumerate(bodies, start=1):
        sent = clock()
        response = client.post(url, content=body)
        latencies.append((clock() - sent) * 1000.0)
        if response.status_code != 202:
            raise BenchFailure(
                f"{scenario}: request {number} answered {response.status_code}: "
                f"{response.text[:300]}"
            )
        answer = response.json()
        counted = answer["accepted"] + answer["duplicates"] + answer["ignored"]
        if counted != lines or answer["rejected"]:
            raise BenchFailure(
                f"{scenario}: request {number} posted {lines} lines but the answer counts "
                f"{counted} (rejected: {answer['rejected'][:3]})"
            )
        for key in ("accepted", "duplicates", "ignored"):
            outcomes[key] += answer[key]
    seconds = clock() - started
    cpu = server.cpu_seconds() - cpu_before
    messages = sum(lines for _, lines in bodies)
    return Run(scenario, lines_per_post, messages, len(bodies), seconds, cpu, latencies), outcomes


def scrape(client: httpx.Client, server: Exporter) -> dict[tuple[str, tuple[str, ...]], float]:
    """``/metrics`` as ``{(sample name, label values in sorted label-name order): value}``."""
    response = client.get(f"{server.url}/metrics")
    response.raise_for_status()
    samples: dict[tuple[str, tuple[str, ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = tuple(value for _, value in sorted(sample.labels.items()))
            samples[(sample.name, labels)] = sample.value
    return samples


def exact(value: float, what: str) -> int:
    """A counter value that must be a whole number (token and message counts)."""
    if not value.is_integer():
        raise BenchFailure(f"/metrics {what} is not a whole number: {value!r}")
    return int(value)


def pico_to_exposed(pico: int) -> float:
    """USD exactly as the exporter renders picodollars (``Family.value``)."""
    return float(Decimal(pico) / 10**12)


def check_metrics(
    samples: dict[tuple[str, tuple[str, ...]], float],
    *,
    truth: Truth | None,
    outcomes: Counter[str],
    scenario: str,
) -> None:
    """``/metrics`` must equal the generator's truth exactly; raise listing every mismatch."""
    by_name: dict[str, dict[tuple[str, ...], float]] = {}
    for (name, labels), value in samples.items():
        by_name.setdefault(name, {})[labels] = value
    problems: list[str] = []

    def compare(what: str, got: object, want: object) -> None:
        if got == want:
            return
        if isinstance(got, dict) and isinstance(want, dict):  # name only what differs
            keys = sorted(set(got) | set(want), key=str)
            got = {k: got.get(k) for k in keys if got.get(k) != want.get(k)}
            want = {k: want.get(k) for k in keys if k in got}
        problems.append(f"{what}: /metrics has {got}, expected {want}")

    # Label values come in sorted label-name order: (outcome, source) here.
    messages = {
        outcome: exact(v, "ingest messages")
        for (outcome, src), v in by_name.get("otel_claude_ingest_messages_total", {}).items()
        if src == SOURCE and v
    }
    compare(
        "ingest messages by outcome",
        messages,
        {
            name: n
            for name, n in (
                ("accepted", outcomes["accepted"]),
                ("duplicate", outcomes["duplicates"]),
                ("ignored", outcomes["ignored"]),
            )
            if n
        },
    )
    rejected = {k: v for k, v in by_name.get("otel_claude_ingest_rejected_total", {}).items() if v}
    compare("rejected messages", rejected, {})
    if truth is not None:
        compare("accepted lines", outcomes["accepted"], truth.usage_lines)
        compare("ignored lines", outcomes["ignored"], truth.ignored_lines)
        compare("duplicate lines", outcomes["duplicates"], 0)
        tokens: Counter[tuple[str, str]] = Counter()
        for (model, src, token_type), v in by_name.get("claude_agent_tokens_total", {}).items():
            if src == SOURCE and v:
                tokens[(model, token_type)] += exact(v, "tokens")
        compare("tokens by (model, type)", dict(tokens), dict(+truth.tokens))
        compare(
            "steps by model",
            {m: exact(v, "steps") for (m, _s), v in by_name["claude_agent_steps_total"].items()},
            dict(truth.steps),
        )
        compare(
            "web searches by model",
            {
                m: exact(v, "web searches")
                for (m, _s), v in by_name["claude_agent_web_search_requests_total"].items()
                if v
            },
            dict(+truth.web_search),
        )
        compare(
            "conversations by outcome",
            {
                o: exact(v, "conversations")
                for (o,), v in by_name["claude_agent_conversations_total"].items()
            },
            dict(truth.conversations),
        )
        cost = by_name["claude_agent_cost_usd_total"]  # labels: (cost_source, model)
        for kind, want in (
            ("reported", dict(truth.reported_pico)),
            ("estimated", truth.estimated_pico()),
        ):
            compare(
                f"{kind} cost by model",
                {m: v for (s, m), v in cost.items() if s == kind},
                {m: pico_to_exposed(p) for m, p in want.items()},
            )
        unpriced = {k: v for k, v in by_name.get("claude_agent_unpriced_tokens_total", {}).items()}
        compare("unpriced tokens", {k: v for k, v in unpriced.items() if v}, {})
    if problems:
        raise BenchFailure(
            f"{scenario}: /metrics disagrees with the ground truth:\n  - " + "\n  - ".join(problems)
        )


def run_batched(
    client: httpx.Client, core: int, workdir: Path, workload: Workload, size: int
) -> Run:
    """The whole workload in ``size``-line bodies on a fresh exporter, then the exact check."""
    scenario = f"batched, {size:,} lines/POST"
    bodies = batches(workload.lines, size)
    with exporter(core, workdir, client) as server:
        run, outcomes = post_all(client, server, bodies, scenario, size)
        check_metrics(
            scrape(client, server), truth=workload.truth, outcomes=outcomes, scenario=scenario
        )
    return run


def run_single(client: httpx.Client, core: int, workdir: Path, lines: Sequence[bytes]) -> Run:
    """One line per POST, sequentially, on a fresh exporter: latency of a live SDK hook."""
    scenario = "single message/POST"
    with exporter(core, workdir, client) as server:
        run, outcomes = post_all(client, server, [(line, 1) for line in lines], scenario, 1)
        check_metrics(scrape(client, server), truth=None, outcomes=outcomes, scenario=scenario)
    return run


# --- report -------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: an observed value, no interpolation."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * pct // 100)))
    return ordered[int(rank) - 1]


def summarize(runs: Sequence[Run]) -> dict[str, Any]:
    """Median and range of throughput over rounds; latency percentiles over all requests."""
    rates = [r.rate for r in runs]
    latencies = [ms for r in runs for ms in r.latencies_ms]
    cpu = sum(r.server_cpu_s for r in runs)
    messages = sum(r.messages for r in runs)
    median = statistics.median(rates)
    return {
        "scenario": runs[0].scenario,
        "lines_per_post": runs[0].lines_per_post,
        "messages_per_round": runs[0].messages,
        "requests_per_round": runs[0].requests,
        "rounds": len(runs),
        "median_msg_s": median,
        "target_met": median >= TARGET_MSG_S if runs[0].lines_per_post > 1 else None,
        "min_msg_s": min(rates),
        "max_msg_s": max(rates),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
        "server_cpu_us_per_msg": cpu / messages * 1e6,
        "server_cpu_utilization": cpu / sum(r.seconds for r in runs),
        "per_round": [
            {"seconds": r.seconds, "msg_s": r.rate, "server_cpu_s": r.server_cpu_s} for r in runs
        ],
    }


def target_met(summaries: Sequence[dict[str, Any]]) -> bool:
    """The issue's target holds for every batched scenario."""
    return all(s["target_met"] for s in summaries if s["target_met"] is not None)


def render(env: dict[str, Any], summaries: Sequence[dict[str, Any]]) -> str:
    """The markdown block for the README, with the target verdict.

    The target must hold for every batch size: clients send small batches too, and a fixed
    per-request cost only shows there.
    """
    out = [
        f"CPU: {env['cpu']} — exporter pinned to core {env['server_core']}, "
        f"client on {env['client_cores'] or 'the same core (only one available)'}",
        f"Python {env['python']}, SQLite {env['sqlite']}, otel-claude {env['version']}",
        f"Workload: {env['lines']:,} unique NDJSON lines ({env['seeds']} generated streams, "
        f"{env['avg_line_bytes']:.0f} B/line); batched: {env['rounds']} round(s), each scenario "
        "on a fresh exporter and state dir",
        "",
        "| scenario | messages | median msg/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in summaries:
        out.append(
            f"| {s['scenario']} | {s['messages_per_round']:,} | {s['median_msg_s']:,.0f} "
            f"| {s['p50_ms']:.2f} | {s['p99_ms']:.2f} |"
        )
    out.append("")
    for s in summaries:
        out.append(
            f"- {s['scenario']}: {s['min_msg_s']:,.0f} to {s['max_msg_s']:,.0f} msg/s "
            f"over {s['rounds']} round(s), "
            f"max latency {s['max_ms']:.2f} ms, server CPU {s['server_cpu_us_per_msg']:.1f} "
            f"µs/msg at {s['server_cpu_utilization']:.0%} of its core"
        )
    batched = [s for s in summaries if s["target_met"] is not None]
    verdicts = [
        f"{s['scenario']}: {s['median_msg_s']:,.0f} {'met' if s['target_met'] else 'MISSED'}"
        for s in batched
    ]
    out.append("")
    out.append(
        f"Target ≥ {TARGET_MSG_S:,} msg/s batched on one core (every batch size, median): "
        f"{'MET' if target_met(summaries) else 'NOT MET'} ({'; '.join(verdicts)})"
    )
    return "\n".join(out)


def result_rows(summaries: Sequence[dict[str, Any]]) -> list[Row]:
    """The summaries as ``python -m bench`` rows: each batch size's median, the single p99."""
    rows = []
    for s in summaries:
        if s["lines_per_post"] > 1:
            rows.append(
                Row(
                    workload=f"HTTP ingest, NDJSON batches of {s['lines_per_post']:,} messages",
                    ours=f"{s['median_msg_s']:,.0f} msg/s",
                    target=f"≥ {TARGET_MSG_S:,} msg/s on one core",
                    passed=s["median_msg_s"] >= TARGET_MSG_S,
                    note=f"median of {s['rounds']} round(s) of {s['messages_per_round']:,} "
                    f"messages ({s['min_msg_s']:,.0f} to {s['max_msg_s']:,.0f} msg/s)",
                    values=s,
                )
            )
        else:
            rows.append(
                Row(
                    workload="single-message POST",
                    ours=f"p99 {s['p99_ms']:.2f} ms",
                    target=f"p99 < {TARGET_SINGLE_P99_MS:g} ms",
                    passed=s["p99_ms"] < TARGET_SINGLE_P99_MS,
                    note=f"{s['messages_per_round']:,} sequential POSTs on one keep-alive "
                    f"connection, p50 {s['p50_ms']:.2f} ms",
                    values=s,
                )
            )
    return rows


# --- main ---------------------------------------------------------------------------


def pick_cores(requested: int | None) -> tuple[int, list[int]]:
    """The server's core and the client's cores (all others we may run on)."""
    allowed = sorted(os.sched_getaffinity(0))
    server = allowed[-1] if requested is None else requested
    if server not in allowed:
        raise BenchFailure(f"core {server} is not available (allowed: {allowed})")
    return server, [c for c in allowed if c != server]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="~20k lines, 1 round")
    parser.add_argument("--json", action="store_true", help="also print the raw numbers as JSON")
    parser.add_argument("--rows", metavar="FILE", help="write the result rows (JSON) to FILE")
    parser.add_argument("--lines", type=int, help="minimum batched lines (default 200,000)")
    parser.add_argument("--rounds", type=int, help="rounds on fresh state dirs (default 3)")
    parser.add_argument("--single", type=int, help="single-message POSTs (default 2,000)")
    parser.add_argument("--core", type=int, help="CPU core for the exporter (default: last)")
    parser.add_argument(
        "--budget", type=float, default=240.0, help="abort the whole run after this many seconds"
    )
    args = parser.parse_args(argv)
    args.lines = args.lines or (20_000 if args.quick else 200_000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.single = args.single or (500 if args.quick else 2000)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run every scenario, print the table (and JSON); exit 1 on any wrong count or timeout."""
    args = parse_args(argv)
    compile_package()

    def out_of_time(signum: int, frame: FrameType | None) -> None:
        raise BenchFailure(f"the run exceeded its budget of {args.budget:.0f}s")

    def terminated(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, out_of_time)
    signal.signal(signal.SIGTERM, terminated)
    signal.alarm(max(1, int(args.budget)))
    try:
        with ExitStack() as stack:
            return _run(args, stack)
    except BenchFailure as exc:
        print(f"BENCHMARK FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("benchmark interrupted; exporters stopped", file=sys.stderr)
        return 130
    finally:
        signal.alarm(0)
        for server in list(Exporter.live):  # only if a stop() itself was interrupted
            server.proc.kill()
            server.proc.wait()


def _run(args: argparse.Namespace, stack: ExitStack) -> int:
    from otel_claude import __version__

    server_core, client_cores = pick_cores(args.core)
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="otel-claude-bench-")))
    started = time.monotonic()
    workload = build_workload(args.lines, BATCHED_SEED_BASE, SESSIONS_PER_SEED)
    single = build_workload(args.single, SINGLE_SEED_BASE, 100).lines[: args.single]
    if client_cores:
        os.sched_setaffinity(0, client_cores)
    print(
        f"generated {len(workload.lines):,} + {len(single):,} lines in "
        f"{time.monotonic() - started:.1f}s; server on core {server_core}",
        file=sys.stderr,
    )
    client = stack.enter_context(
        httpx.Client(
            trust_env=False,
            timeout=httpx.Timeout(REQUEST_TIMEOUT_S),
            headers={"Content-Type": "application/x-ndjson"},
        )
    )
    runs: dict[str, list[Run]] = {}
    for round_no in range(1, args.rounds + 1):
        for size in (5000, 1000):
            run = run_batched(client, server_core, workdir, workload, size)
            runs.setdefault(run.scenario, []).append(run)
            print(f"round {round_no}: {run.scenario}: {run.rate:,.0f} msg/s", file=sys.stderr)
    # Once, not per round: its per-request cost dominates, rounds would only add minutes.
    run = run_single(client, server_core, workdir, single)
    runs[run.scenario] = [run]
    print(f"{run.scenario}: {run.rate:,.0f} msg/s", file=sys.stderr)
    summaries = [summarize(r) for r in runs.values()]
    env = {
        "cpu": cpu_model(),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "sqlite": sqlite3.sqlite_version,
        "version": __version__,
        "server_core": server_core,
        "client_cores": ",".join(map(str, client_cores)),
        "lines": len(workload.lines),
        "seeds": workload.seeds,
        "avg_line_bytes": sum(map(len, workload.lines)) / len(workload.lines),
        "rounds": args.rounds,
        "wall_s": time.monotonic() - started,
    }
    print(render(env, summaries))
    if args.json:
        raw = {
            "env": env,
            "target_msg_s": TARGET_MSG_S,
            "target_met": target_met(summaries),
            "scenarios": summaries,
        }
        print(json.dumps(raw))
    if args.rows:
        write_rows(args.rows, result_rows(summaries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
