"""Benchmark a full transcript-history scan: ``otel-claude report`` against ccusage.

Both tools read the same generated Claude Code history (``tests/history.py``: realistic
sessions, subagents and every counting trap) through ``CLAUDE_CONFIG_DIR``, as fresh
processes, for several rounds. Per tool the table shows the median wall time, the peak
resident memory of its whole process tree, and whether its totals equal the generator's
ground truth: a fast tool that miscounts is reported as such, with the differences.

    .venv/bin/python bench/transcripts.py             # 500 MB history, 5 rounds each
    .venv/bin/python bench/transcripts.py --quick     # 50 MB
    .venv/bin/python bench/transcripts.py --serve     # also: serve's start-up scan to /readyz
    .venv/bin/python bench/transcripts.py --ccusage /path/to/ccusage --json
    .venv/bin/python bench/transcripts.py --serve --rows FILE   # rows for ``python -m bench``

ccusage (npm ``ccusage``, the reference peer) is looked up at ``--ccusage``, then in
``/tmp/ccusage/node_modules/.bin``, then on PATH; without it the peer row is skipped.

Time and memory come from separate rounds: sampling a tree's memory slows the tool it
reads (ccusage: 0.79 s against 0.97 s), so wall times are taken from rounds that nothing
observes and memory from the rounds in between. In a memory round a background thread
sums the PSS of every process in the measured tree every 20 milliseconds (ccusage is a
Node launcher that spawns a native binary: both count; PSS so that pages a forked worker
shares with its parent count once), and ``/usr/bin/time -f %M`` (or ``getrusage`` in a
wrapper process) gives the exact peak RSS of the largest single process; the tree peak
shown is the larger of the two.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.readiness import ReadyProbe  # noqa: E402
from bench.rows import TIMES, compile_package, cpu_model, write_rows  # noqa: E402
from bench.rows import Row as BenchRow  # noqa: E402
from tests.history import (  # noqa: E402
    TOKEN_TYPES,
    HistoryTruth,
    generate_history,
    normalize_model,
)

MB = 1_000_000
DEFAULT_MB = 500
QUICK_MB = 50
TARGET_TIME_RATIO = 0.6
TARGET_RSS_RATIO = 0.5
TARGET_SERVE_RATIO = 1.0  # serve's start-up scan to /readyz against ccusage's report
SAMPLE_S = 0.02  # 5 ms sampling (PSS walks in this process) cost the measured tree ~0.05 s
USD_TOLERANCE = 1e-6
CCUSAGE_GUESS = Path("/tmp/ccusage/node_modules/.bin/ccusage")
GNU_TIME = Path("/usr/bin/time")
# ccusage's four token totals, as sums of the truth's token types
CCUSAGE_FIELDS = {
    "inputTokens": ("input",),
    "outputTokens": ("output",),
    "cacheReadTokens": ("cache_read",),
    "cacheCreationTokens": ("cache_creation_5m", "cache_creation_1h"),
}
# Runs a command and writes the largest max-RSS (KiB) among its descendants to a file.
RUSAGE_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(code)\n"
)


class BudgetExceeded(Exception):
    """The time budget ran out before the measurement finished."""


# --- process measurements -----------------------------------------------------------


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all its threads'), from /proc."""
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/children") as fh:
                    out.extend(int(c) for c in fh.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return out


PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def _statm_kb(pid: int) -> int:
    """The process's RSS: cheap to read, and never below its PSS."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE_KB
    except (OSError, IndexError, ValueError):
        return 0


def _pss_kb(pid: int) -> int:
    """The process's memory: its PSS (``smaps_rollup``), else its RSS.

    PSS (proportional set size) charges a page shared by N processes 1/N to each, so a
    process tree's PSS sum is what the tree costs the machine. A summed RSS would count a
    forked worker's pages shared with its parent (interpreter, modules: ~20 MiB) twice;
    for a tree without shared pages (ccusage's launcher and native binary) the two agree
    within a few MiB.
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        pass
    return _statm_kb(pid)


class TreeSampler:
    """Largest summed PSS (see ``_pss_kb``) of the tree below ``root_pid`` (root if asked)."""

    def __init__(self, root_pid: int, include_root: bool) -> None:
        self.root_pid = root_pid
        self.include_root = include_root
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        pids = [self.root_pid] if self.include_root else []
        todo = _children(self.root_pid)
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo.extend(_children(pid))
        # PSS costs the kernel a walk of every mapping, which would steal CPU from the
        # measured tree at this rate; RSS is never below PSS, so PSS is only read when the
        # summed RSS says the peak may have risen. The peak is exact all the same.
        if sum(_statm_kb(pid) for pid in pids) > self.peak_kb:
            self.peak_kb = max(self.peak_kb, sum(_pss_kb(pid) for pid in pids))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_S)


@dataclass
class Measurement:
    """One run of one tool."""

    seconds: float
    tree_peak_kb: int  # max(summed tree PSS sampled, largest single process's exact peak)
    largest_process_kb: int | None
    returncode: int
    stdout: bytes = field(repr=False)
    stderr: str = field(repr=False)
    #: A memory round: the tree was sampled while it ran, which slows the tool (a PSS read
    #: walks every mapping: 0.79 s against 0.97 s for ccusage), so its time is not used.
    sampled: bool = False


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End a process we started, and its children (it leads its own process group)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def run_measured(
    argv: Sequence[str], env: Mapping[str, str], timeout: float, *, sample: bool = False
) -> Measurement:
    """Run ``argv`` to completion; wall time, peak memory, exit code and output.

    With ``sample`` the process tree's memory is sampled while it runs (a memory round);
    otherwise only the largest single process's peak is known (a time round).
    """
    if timeout <= 0:
        raise BudgetExceeded("no time left")
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        peak_file = Path(tmp) / "maxrss"
        if GNU_TIME.exists():
            wrapped = [str(GNU_TIME), "-f", "%M", "-o", str(peak_file), *argv]
        else:
            wrapped = [sys.executable, "-c", RUSAGE_WRAPPER, str(peak_file), *argv]
        out_path, err_path = Path(tmp) / "out", Path(tmp) / "err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            started = time.perf_counter()
            proc = subprocess.Popen(
                wrapped,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
            sampler = TreeSampler(proc.pid, include_root=False)
            with sampler if sample else contextlib.nullcontext(sampler):
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _kill_group(proc)
                    raise BudgetExceeded(f"still running after {timeout:.0f} s") from None
                seconds = time.perf_counter() - started
        largest = None
        try:
            largest = int(peak_file.read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            pass
        return Measurement(
            seconds=seconds,
            tree_peak_kb=max(sampler.peak_kb, largest or 0),
            largest_process_kb=largest,
            returncode=proc.returncode,
            stdout=out_path.read_bytes(),
            stderr=err_path.read_text(errors="replace"),
            sampled=sample,
        )


# --- checks against the truth ---------------------------------------------------------


def _diff(what: str, got: Any, want: Any) -> str | None:
    if got == want:
        return None
    if isinstance(got, int) and isinstance(want, int):
        return f"{what}: {got:,} vs truth {want:,} ({got - want:+,})"
    return f"{what}: {got!r} vs truth {want!r}"


def _usd_diff(what: str, got: Any, want: float) -> str | None:
    if isinstance(got, int | float) and abs(got - want) <= USD_TOLERANCE + 1e-9 * want:
        return None
    return f"{what}: {got!r} vs truth {want:.8f}"


def ccusage_expected(truth: HistoryTruth) -> dict[str, int]:
    """The truth in ccusage's four totals."""
    totals = truth.totals()
    return {name: sum(totals[t] for t in types) for name, types in CCUSAGE_FIELDS.items()}


def explain_ccusage(truth: HistoryTruth, got: Mapping[str, Any]) -> str | None:
    """Which kinds of not-to-be-counted lines make up ccusage's difference, if any do."""
    want = ccusage_expected(truth)
    delta = {k: int(got.get(k, 0)) - v for k, v in want.items()}
    kinds = sorted({kind for kind, _ in truth.trap_tokens})
    for size in range(1, len(kinds) + 1):
        for combo in itertools.combinations(kinds, size):
            extra = {
                name: sum(truth.trap_tokens[(k, t)] for k in combo for t in types)
                for name, types in CCUSAGE_FIELDS.items()
            }
            if extra == delta:
                lines = ", ".join(f"{truth.trap_token_lines[k]} {k}" for k in combo)
                return f"the difference is exactly the usage on {lines} lines"
    return None


def check_ccusage(doc: Any, truth: HistoryTruth) -> list[str]:
    """ccusage daily JSON (UTC days) against the truth: totals and every day."""
    problems: list[str] = []
    if not isinstance(doc, dict) or not isinstance(doc.get("totals"), dict):
        return ["output is not ccusage's daily JSON (no 'totals')"]
    want = ccusage_expected(truth)
    for name, value in want.items():
        problem = _diff(f"total {name}", doc["totals"].get(name), value)
        if problem:
            problems.append(problem)
    days = {}
    for day, types in truth.day_totals().items():
        days[day] = {n: sum(types[t] for t in ts) for n, ts in CCUSAGE_FIELDS.items()}
    seen = {entry.get("date"): entry for entry in doc.get("daily", [])}
    bad_days = []
    for day in sorted(set(days) | set(seen)):
        got = {n: seen.get(day, {}).get(n, 0) for n in CCUSAGE_FIELDS}
        if got != days.get(day, dict.fromkeys(CCUSAGE_FIELDS, 0)):
            bad_days.append(day)
    if bad_days:
        problems.append(f"{len(bad_days)} day(s) differ: {', '.join(bad_days[:5])}")
    return problems


def check_otel_claude(doc: Any, truth: HistoryTruth) -> list[str]:
    """``otel-claude report --json`` against the truth: per model, totals, per day, cost."""
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        return ["output is not the report JSON (no 'models')"]
    problems: list[str] = []
    models = {normalize_model(m): v for m, v in doc["models"].items()}
    unpriced = set(doc.get("unpriced_models", truth.unpriced_models()))
    for model in sorted(set(models) | set(truth.steps)):
        got = models.get(model, {})
        for t in TOKEN_TYPES:
            problem = _diff(f"{model} {t}", got.get(t, 0), truth.tokens[(model, t)])
            if problem:
                problems.append(problem)
        cost = got.get("cost_usd")
        want_usd = truth.cost_usd(model)
        if want_usd is None:
            if cost not in (None, 0) or model not in unpriced:
                problems.append(f"{model}: unpriced, but cost {cost!r} and not listed unpriced")
        elif problem := _usd_diff(f"{model} cost_usd", cost, want_usd):
            problems.append(problem)
    totals = doc.get("totals", {})
    for t, value in truth.totals().items():
        if problem := _diff(f"total {t}", totals.get(t), value):
            problems.append(problem)
    if problem := _usd_diff(
        "total cost_usd", totals.get("cost_usd"), truth.total_cost_pico() / 1e12
    ):
        problems.append(problem)
    bad_days = []
    want_days = truth.day_totals()
    got_days = doc.get("days", {})
    for day in sorted(set(want_days) | set(got_days)):
        got = got_days.get(day, {})
        want = want_days.get(day, dict.fromkeys(TOKEN_TYPES, 0))
        same = all(got.get(t, 0) == want[t] for t in TOKEN_TYPES)
        if same and isinstance(got.get("models"), dict):
            per_model = {normalize_model(m): v for m, v in got["models"].items()}
            for model in set(per_model) | {m for d, m, _ in truth.by_day if d == day}:
                values = per_model.get(model, {})
                if any(values.get(t, 0) != truth.by_day[(day, model, t)] for t in TOKEN_TYPES):
                    same = False
        if not same:
            bad_days.append(day)
    if bad_days:
        problems.append(f"{len(bad_days)} day(s) differ: {', '.join(bad_days[:5])}")
    return problems


def check_metrics(text: str, truth: HistoryTruth) -> list[str]:
    """``claude_agent_tokens_total`` (summed over sources) against the truth."""
    from prometheus_client.parser import text_string_to_metric_families

    tokens: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "claude_agent_tokens_total":
                key = (normalize_model(sample.labels["model"]), sample.labels["token_type"])
                tokens[key] += int(sample.value)
    problems = []
    for key in sorted(set(+tokens) | set(+truth.tokens)):
        if problem := _diff(" ".join(key), tokens[key], truth.tokens[key]):
            problems.append(problem)
    return problems


# --- tools ----------------------------------------------------------------------------


@dataclass
class Row:
    """One tool's rounds."""

    tool: str
    command: str
    runs: list[Measurement] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # totals vs truth (first failing round)
    error: str | None = None  # the tool failed, was missing or ran out of time
    note: str | None = None

    @property
    def timed(self) -> list[Measurement]:
        """Time rounds (memory rounds run slower under sampling; used only without them)."""
        return [r for r in self.runs if not r.sampled] or self.runs

    @property
    def median_s(self) -> float | None:
        timed = self.timed
        return statistics.median(r.seconds for r in timed) if timed else None

    @property
    def peak_kb(self) -> int | None:
        return max(r.tree_peak_kb for r in self.runs) if self.runs else None


@dataclass
class Tool:
    name: str
    argv: list[str]
    env: Callable[[], dict[str, str]]
    check: Callable[[Any, HistoryTruth], list[str]]
    explain: Callable[[HistoryTruth, Any], str | None] | None = None


def clean_env(history: Path) -> dict[str, str]:
    """The caller's environment without settings that change what the tools read or do."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "ANTHROPIC_", "CLAUDE_", "CCUSAGE_"))
        and not k.lower().endswith("_proxy")
    }
    env.update(CLAUDE_CONFIG_DIR=str(history), TZ="UTC", NO_COLOR="1")
    return env


def find_ccusage(given: str | None) -> Path | None:
    """``--ccusage`` (a path or a name on PATH) when given, else the usual places."""
    candidates = [shutil.which(given)] if given else [CCUSAGE_GUESS, shutil.which("ccusage")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def ccusage_argv(binary: Path) -> list[str]:
    """ccusage 20 has ``ccusage claude daily``; older releases only ``ccusage daily``."""
    probe = subprocess.run(
        [str(binary), "claude", "daily", "--help"], capture_output=True, timeout=60, check=False
    )
    scope = ["claude", "daily"] if probe.returncode == 0 else ["daily"]
    return [str(binary), *scope, "--json", "--offline", "--timezone", "UTC"]


def version_of(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run([*argv, "--version"], capture_output=True, timeout=60, check=False)
    except OSError as exc:
        return f"unknown ({exc})"
    lines = (done.stdout or done.stderr).decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else f"unknown (--version exited {done.returncode})"


def otel_claude_argv() -> list[str]:
    script = Path(sys.executable).with_name("otel-claude")
    return [str(script)] if script.exists() else [sys.executable, "-m", "otel_claude"]


def run_rounds(
    tools: Sequence[Tool], rows: dict[str, Row], truth: HistoryTruth, rounds: int, deadline: float
) -> None:
    """Alternate the tools round by round, so that drift affects both alike.

    Each round is a time round (nothing else reads the tools' processes) followed by a
    memory round (the tree's memory sampled every 20 ms). First the history just written
    is flushed to disk and each tool runs once unmeasured: neither should be timed while
    the kernel writes 500 MB back, or load its own binary from disk.
    """
    os.sync()
    for tool in tools:
        if rows[tool.name].error or deadline <= time.monotonic():
            continue
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                tool.argv,
                env=tool.env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
            )
    for _, sample in itertools.product(range(rounds), (False, True)):
        for tool in tools:
            row = rows[tool.name]
            if row.error:
                continue
            try:
                run = run_measured(
                    tool.argv, tool.env(), deadline - time.monotonic(), sample=sample
                )
            except BudgetExceeded as exc:
                row.error = f"time budget: {exc} ({len(row.runs)} of {rounds} rounds done)"
                continue
            if run.returncode != 0:
                tail = run.stderr.strip().splitlines()[-3:]
                row.error = f"exit {run.returncode}: {' / '.join(tail) or '(no stderr)'}"
                continue
            row.runs.append(run)
            try:
                doc = json.loads(run.stdout)
            except json.JSONDecodeError as exc:
                row.error = f"output is not JSON ({exc}): {run.stdout[:120]!r}"
                continue
            problems = tool.check(doc, truth)
            if problems and not row.problems:
                row.problems = problems
                if tool.explain:
                    row.note = tool.explain(truth, doc.get("totals", {}))


# --- serve: the start-up scan until /readyz ------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _hwm_kb(pid: int) -> int:
    """The kernel's exact peak RSS of one process (VmHWM)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


@contextmanager
def _serving(argv: Sequence[str], env: Mapping[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        argv,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
        if proc.stderr:
            proc.stderr.close()


def _maybe_sampling(pid: int, sample: bool) -> contextlib.AbstractContextManager[TreeSampler]:
    sampler = TreeSampler(pid, True)
    return sampler if sample else contextlib.nullcontext(sampler)


def measure_serve(
    base: Sequence[str], history: Path, truth: HistoryTruth, rounds: int, deadline: float
) -> Row:
    """Spawn ``otel-claude serve`` on a fresh state dir; time until ``/readyz`` is 200."""
    import httpx  # for /metrics once ready

    row = Row("otel-claude serve", f"{' '.join(Path(a).name for a in base)} serve → /readyz")
    # Time rounds and memory rounds, as for the one-shot tools (``run_rounds``).
    for _, sample in itertools.product(range(rounds), (False, True)):
        port = free_port()
        with tempfile.TemporaryDirectory(prefix="bench-state-") as state:
            env = clean_env(history)
            argv = [*base, "serve", "--listen", f"127.0.0.1:{port}", "--state-dir", state]
            started = time.perf_counter()
            probe = ReadyProbe(port)
            with _serving(argv, env) as proc, _maybe_sampling(proc.pid, sample) as sampler:
                ready = False
                while time.monotonic() < deadline and proc.poll() is None:
                    ready = probe.ready()
                    if ready:
                        break
                    time.sleep(0.01)
                seconds = time.perf_counter() - started
                probe.close()
                if not ready:
                    err = b""
                    if proc.poll() is not None and proc.stderr is not None:
                        err = proc.stderr.read()[-400:]
                    row.error = (
                        f"exited {proc.returncode}: {err.decode(errors='replace').strip()}"
                        if proc.poll() is not None
                        else f"time budget: not ready ({len(row.runs)} of {rounds} rounds done)"
                    )
                    break
                metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
                sampler.sample()
                hwm = _hwm_kb(proc.pid)
            row.runs.append(
                Measurement(
                    seconds, max(sampler.peak_kb, hwm), hwm or None, 0, b"", "", sampled=sample
                )
            )
            problems = check_metrics(metrics, truth)
            if problems and not row.problems:
                row.problems = ["/metrics right after /readyz: " + problems[0], *problems[1:]]
    return row


# --- report ---------------------------------------------------------------------------


def _mb(kb: int | None) -> str:
    return "n/a" if kb is None else f"{kb / 1024:,.0f} MiB"


def _verdict(row: Row) -> str:
    if row.error and not row.runs:
        return "n/a"
    if not row.problems:
        return "yes"
    shown = "; ".join(row.problems[:4]) + (
        f"; … {len(row.problems) - 4} more" if len(row.problems) > 4 else ""
    )
    return f"**no**: {shown}" + (f" — {row.note}" if row.note else "")


def render(
    env: Mapping[str, Any],
    rows: Sequence[Row],
    peer: Row | None,
    ours: Row,
    missing: str | None = None,
) -> str:
    out = [
        f"CPU: {env['cpu']} ({env['cores']} cores available), Python {env['python']}, {env['os']}",
        f"Versions: {env['otel_claude']}; {env['ccusage']}",
        f"History: {env['mb']:.0f} MB, {env['files']:,} files, {env['lines']:,} lines, "
        f"{env['steps']:,} unique API messages over {env['days']} days (seed {env['seed']}); "
        f"generated in {env['gen_s']:.1f} s ({env['mb'] / env['gen_s']:.0f} MB/s)",
        f"Each tool: {env['rounds']} time round(s) and as many memory rounds (its process tree "
        "sampled), fresh process (and fresh state dir) each, tools alternating; page cache "
        "warm (the history was just written)",
        "",
        "| tool | command | wall time (median) | min to max | peak memory (process tree) "
        "| totals = truth |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in rows:
        if row.runs:
            times = [r.seconds for r in row.timed]
            cells = [f"{row.median_s:.2f} s", f"{min(times):.2f} to {max(times):.2f} s"]
        else:
            cells = ["n/a", "n/a"]
        verdict = _verdict(row)
        if row.error:
            verdict = f"{verdict} (error: {row.error})" if row.runs else f"error: {row.error}"
        out.append(
            f"| {row.tool} | `{row.command}` | {cells[0]} | {cells[1]} | {_mb(row.peak_kb)} "
            f"| {verdict} |"
        )
    out.append("")
    if peer is None or not peer.runs:
        reason = (
            peer.error
            if peer is not None
            else missing or "ccusage not found (install it, or pass --ccusage PATH)"
        )
        out.append(f"No peer column: {reason}.")
    elif ours.runs and ours.median_s and peer.median_s and ours.peak_kb and peer.peak_kb:
        t = ours.median_s / peer.median_s
        m = ours.peak_kb / peer.peak_kb
        out.append(
            f"otel-claude / ccusage: time {t:.2f}x (target ≤ {TARGET_TIME_RATIO}x: "
            f"{'met' if t <= TARGET_TIME_RATIO else 'NOT met'}), memory {m:.2f}x "
            f"(target ≤ {TARGET_RSS_RATIO}x: {'met' if m <= TARGET_RSS_RATIO else 'NOT met'})"
            + ("; void: otel-claude's totals are wrong" if ours.problems else "")
        )
    else:
        out.append("No ratio: otel-claude produced no measurement.")
    return "\n".join(out)


def _seconds(row: Row) -> list[float]:
    return [m.seconds for m in row.timed]


def _peaks(row: Row) -> list[int]:
    return [m.tree_peak_kb for m in row.runs]


def _median_s(row: Row) -> float | None:
    return row.median_s


def _peak_kb(row: Row) -> float | None:
    return row.peak_kb


def _show_s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def _show_kb(kb: float) -> str:
    return _mb(int(kb))


@dataclass
class Measure:
    """What a ratio row compares: a figure of a tool's rounds, its display, the limit."""

    value: Callable[[Row], float | None]
    show: Callable[[float], str]
    limit: float
    target: str


WALL = Measure(_median_s, _show_s, TARGET_TIME_RATIO, f"≤ {TARGET_TIME_RATIO}{TIMES} peer")
RSS = Measure(_peak_kb, _show_kb, TARGET_RSS_RATIO, f"≤ {TARGET_RSS_RATIO}{TIMES} peer")
SERVE = Measure(_median_s, _show_s, TARGET_SERVE_RATIO, f"≤ {TARGET_SERVE_RATIO}{TIMES} peer")


def _against_peer(
    workload: str, ours: Row, peer: Row | None, no_peer: str, measure: Measure, note: str
) -> BenchRow:
    """Ours over the peer's figure; void (failed) when our totals are wrong or a run failed,
    not measured (``passed`` None) when the peer has no figure."""
    raw: dict[str, Any] = {
        "ours_seconds": _seconds(ours),
        "ours_peak_kb": _peaks(ours),
        "peer_seconds": _seconds(peer) if peer else None,
        "peer_peak_kb": _peaks(peer) if peer else None,
        "target_ratio": measure.limit,
    }
    notes = [note]
    if ours.problems:
        notes.append(f"void: totals differ from the truth ({ours.problems[0]})")
    if ours.error:
        notes.append(f"error: {ours.error}")
    mine = measure.value(ours) if ours.runs else None
    if mine is None:
        return BenchRow(
            workload, "not measured", measure.target, False, note="; ".join(notes), values=raw
        )
    theirs = measure.value(peer) if peer is not None and peer.runs else None
    if peer is not None and peer.error:
        notes.append(f"ccusage error: {peer.error}")
    if not theirs:
        if peer is None:
            notes.append(no_peer)
        return BenchRow(
            workload, measure.show(mine), measure.target, None, note="; ".join(notes), values=raw
        )
    ratio = mine / theirs
    return BenchRow(
        workload,
        measure.show(mine),
        measure.target,
        ratio <= measure.limit and not ours.problems and not ours.error,
        peer=measure.show(theirs),
        ratio=ratio,
        note="; ".join(notes),
        values={**raw, "ratio": ratio},
    )


def result_rows(
    env: Mapping[str, Any],
    report: Row,
    peer: Row | None,
    serve: Row | None,
    missing: str | None,
) -> list[BenchRow]:
    """The rows for ``python -m bench``: report against ccusage (time, memory, totals), and
    with ``--serve`` serve's start-up scan and its memory after ingesting the history."""
    size = f"{env['mb']:.0f} MB"
    no_peer = missing or "ccusage not found (install it, or pass --ccusage PATH)"
    rounds = f"{env['rounds']} round(s) per tool, alternating"
    rows = [
        _against_peer(
            f"`report --json`, {size} history: wall time",
            report,
            peer,
            no_peer,
            WALL,
            f"median of {rounds}",
        ),
        _against_peer(
            f"`report --json`, {size} history: peak memory",
            report,
            peer,
            no_peer,
            RSS,
            f"process tree (sum of PSS), largest of {rounds}",
        ),
    ]
    peer_exact = None
    if peer is not None and peer.runs:
        peer_exact = "exact" if not peer.problems else f"{len(peer.problems)} difference(s)"
    notes = []
    if report.problems:
        notes.append("otel-claude: " + "; ".join(report.problems[:3]))
    if report.error:
        notes.append(f"otel-claude error: {report.error}")
    if peer is not None and peer.problems:
        notes.append(f"ccusage: {'; '.join(peer.problems[:2])}")
        if peer.note:
            notes.append(peer.note)
    rows.append(
        BenchRow(
            f"`report --json`, {size} history: totals",
            ("exact" if not report.problems else f"{len(report.problems)} difference(s)")
            if report.runs
            else "not measured",
            "= generator's ground truth",
            bool(report.runs) and not report.problems and not report.error,
            peer=peer_exact,
            note="; ".join(notes),
            values={
                "problems": report.problems,
                "peer_problems": peer.problems if peer is not None else None,
                "peer_note": peer.note if peer is not None else None,
            },
        )
    )
    if serve is not None:
        rows.append(
            _against_peer(
                f"`serve` cold start to `/readyz`, {size} history",
                serve,
                peer,
                no_peer,
                SERVE,
                f"fresh state dir, median of {rounds}; peer: ccusage's report wall time",
            )
        )
    if serve is not None and serve.runs:
        # The exporter's own peak (VmHWM once /readyz is 200: everything it held while
        # ingesting); the parse workers live only during the cold scan and are gone
        # after it. Their share is in the note and in the `report` memory row.
        tree = max(m.tree_peak_kb for m in serve.runs)
        memory = replace(
            serve,
            runs=[
                replace(m, tree_peak_kb=m.largest_process_kb or m.tree_peak_kb) for m in serve.runs
            ],
        )
        source = (
            "the exporter's peak RSS (VmHWM) once the start-up scan is committed, largest "
            f"of the rounds; with its parse workers during the scan the tree peaked at "
            f"{_mb(tree)}"
        )
    else:
        source, memory = "`report`'s peak RSS (serve not measured)", report
    rows.append(
        _against_peer(
            f"memory after ingesting the {size} history",
            memory,
            peer,
            no_peer,
            RSS,
            f"{source}; peer: ccusage's peak (process tree)",
        )
    )
    for item in rows:
        item.values.update(
            history_mb=env["mb"], files=env["files"], rounds=env["rounds"], ccusage=env["ccusage"]
        )
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", type=float, default=DEFAULT_MB, help="history size in MB")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_MB} MB history")
    parser.add_argument("--rounds", type=int, default=5, help="runs per tool (median shown)")
    parser.add_argument("--budget", type=float, default=600, help="seconds for the whole bench")
    parser.add_argument("--ccusage", metavar="PATH", help="ccusage executable")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serve", action="store_true", help="also time serve's start-up scan")
    parser.add_argument("--keep", action="store_true", help="keep the generated history")
    parser.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    parser.add_argument("--rows", metavar="FILE", help="write the result rows (JSON) to FILE")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    compile_package()
    deadline = time.monotonic() + args.budget
    size_mb = QUICK_MB if args.quick else args.size
    workdir = Path(tempfile.mkdtemp(prefix="bench-transcripts-"))
    try:
        history = workdir / "claude"
        print(f"generating a {size_mb:.0f} MB history in {history} …", file=sys.stderr)
        truth = generate_history(history, seed=args.seed, target_bytes=int(size_mb * MB))

        ours_base = otel_claude_argv()
        state_dirs = itertools.count()

        def ours_env() -> dict[str, str]:  # a fresh state dir per run: no cached scan
            env = clean_env(history)
            env["OTEL_CLAUDE_STATE_DIR"] = str(workdir / f"state-{next(state_dirs)}")
            return env

        tools = [Tool("otel-claude", [*ours_base, "report", "--json"], ours_env, check_otel_claude)]
        rows = {"otel-claude": Row("otel-claude", "otel-claude report --json")}
        binary = find_ccusage(args.ccusage)
        peer: Row | None = None
        ccusage_version = "not found"
        missing = f"ccusage not found at {args.ccusage}" if args.ccusage else None
        if binary is not None:
            ccusage_version = version_of([str(binary)])
            cc_argv = ccusage_argv(binary)
            peer = Row("ccusage", " ".join([binary.name, *cc_argv[1:]]))
            rows["ccusage"] = peer
            tools.insert(
                0,
                Tool(
                    "ccusage", cc_argv, lambda: clean_env(history), check_ccusage, explain_ccusage
                ),
            )
        run_rounds(tools, rows, truth, args.rounds, deadline)
        table = [rows[t.name] for t in tools]
        serve: Row | None = None
        if args.serve:
            serve = measure_serve(ours_base, history, truth, args.rounds, deadline)
            table.append(serve)
        env = {
            "cpu": cpu_model(),
            "cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "os": f"{platform.system()} {platform.release()}",
            "otel_claude": version_of(ours_base),
            "ccusage": ccusage_version,
            "mb": truth.bytes / MB,
            "files": truth.files,
            "lines": truth.lines,
            "steps": sum(truth.steps.values()),
            "days": len({day for day, _, _ in truth.by_day}),
            "seed": args.seed,
            "gen_s": truth.generation_seconds,
            "rounds": args.rounds,
        }
        print(render(env, table, peer, rows["otel-claude"], missing))
        if args.json:
            print(
                json.dumps(
                    {
                        "environment": env,
                        "rows": [
                            {
                                "tool": r.tool,
                                "command": r.command,
                                "seconds": [m.seconds for m in r.runs],
                                "tree_peak_kb": [m.tree_peak_kb for m in r.runs],
                                "largest_process_kb": [m.largest_process_kb for m in r.runs],
                                "matches_truth": not r.problems and bool(r.runs),
                                "problems": r.problems,
                                "note": r.note,
                                "error": r.error,
                            }
                            for r in table
                        ],
                    },
                    indent=2,
                )
            )
        ours = rows["otel-claude"]
        if args.rows:
            write_rows(args.rows, result_rows(env, ours, peer, serve, missing))
        return 0 if ours.runs and not ours.problems and not ours.error else 1
    finally:
        if args.keep:
            print(f"history kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
