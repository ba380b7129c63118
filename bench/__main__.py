"""Run every benchmark and print one table: ``make bench`` or ``python -m bench``.

Each script runs as its own process with ``--rows FILE`` (see ``bench/rows.py``); its own
output streams to stderr while it runs. At the end one markdown table goes to stdout
(workload | otel-claude | peer | ratio | target | result) with the machine it ran on, and
the same as JSON (machine + rows) to ``bench/results.json``.

    python -m bench                        # everything at full size (several minutes)
    python -m bench --quick                # each script's quick mode: a smoke run
    python -m bench --only transcripts,ingest_http
    python -m bench --size 200             # transcript history size in MB (else 500)
    python -m bench --out /tmp/bench.json

Exit status 0 only if every row passed. A row that could not be measured (the peer is not
installed, say) is shown as "not measured" and does not count as passed; a script that is
missing, crashes or times out becomes a failed row of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.rows import TIMES, Row, cpu_model, read_rows  # noqa: E402

DEFAULT_OUT = BENCH / "results.json"
DEFAULT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Script:
    """One benchmark script in ``bench/`` and the options the runner gives it."""

    name: str
    args: tuple[str, ...] = ()  # always passed
    quick: tuple[str, ...] = ("--quick",)  # passed with --quick

    @property
    def path(self) -> Path:
        return BENCH / f"{self.name}.py"


# In the order. transcripts.py measures ccusage, report and serve's cold start in one
# run, so every transcript ratio compares figures taken minutes apart at most.
SCRIPTS = (
    Script("transcripts", ("--serve",)),
    Script("transcripts_live"),
    Script("metrics_scrape"),
    Script("ingest_http"),
    Script("admin_backfill"),
)


@dataclass
class Outcome:
    """What running one script gave: its rows, or a failed row saying why there are none."""

    script: str
    argv: list[str]
    returncode: int | None  # None: missing or timed out
    seconds: float
    rows: list[Row] = field(default_factory=list)


def failed_row(script: str, why: str) -> Row:
    """The row standing for a script that did not (completely) report."""
    return Row(
        workload=f"{script}: {why}",
        ours="—",
        target="runs and reports its rows",
        passed=False,
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End a script we started and everything it started (it leads its own session)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _stderr_fd() -> int:
    """Our stderr's descriptor (fd 2 when ``sys.stderr`` was replaced by a non-file)."""
    try:
        return sys.stderr.fileno()
    except (OSError, ValueError, AttributeError):
        return 2


def collect(name: str, path: Path, args: Sequence[str], timeout: float) -> Outcome:
    """Run ``path --rows FILE *args`` from the repo root, its output to our stderr; its rows.

    A missing script, a non-zero exit, a time-out or unreadable rows each add a failed row, so
    the table always says what happened (a script that exits 1 after writing its rows keeps
    them: they show what failed).
    """
    argv = [sys.executable, str(path), *args]
    if not path.is_file():
        return Outcome(name, argv, None, 0.0, [failed_row(name, f"missing ({path} not found)")])
    with tempfile.TemporaryDirectory(prefix="bench-rows-") as tmp:
        rows_file = Path(tmp) / "rows.json"
        argv = [sys.executable, str(path), "--rows", str(rows_file), *args]
        print(f"\n=== {name}: {' '.join(argv[1:])}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        started = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=_stderr_fd(),
            stderr=_stderr_fd(),
            start_new_session=True,
        )
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            code = None
        except BaseException:  # Ctrl-C: take the script (and its servers) down with us
            _kill_group(proc)
            raise
        seconds = time.monotonic() - started
        outcome = Outcome(name, argv, code, seconds)
        if rows_file.exists():
            try:
                outcome.rows = read_rows(rows_file)
            except (ValueError, TypeError) as exc:
                outcome.rows = [failed_row(name, f"failed (unreadable rows: {exc})")]
    if code is None:
        outcome.rows.append(failed_row(name, f"failed (timed out after {timeout:.0f} s)"))
    elif code != 0:
        outcome.rows.append(failed_row(name, f"failed (exit {code})"))
    elif not outcome.rows:
        outcome.rows.append(failed_row(name, "failed (no rows written)"))
    return outcome


def script_args(script: Script, *, quick: bool, size: float | None) -> list[str]:
    """The options one script gets: its own, quick mode, and the history size."""
    args = list(script.args)
    if script.name == "transcripts" and size is not None:
        args += ["--size", f"{size:g}"]  # its --quick would override the size with 50 MB
    elif quick:
        args += script.quick
    return args


# --- the table --------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def result_word(row: Row) -> str:
    if row.passed is None:
        return "not measured"
    return "pass" if row.passed else "**FAIL**"


def all_passed(rows: Sequence[Row]) -> bool:
    """The verdict: at least one row, and every row passed (not measured is not passed)."""
    return bool(rows) and all(row.passed is True for row in rows)


def _ratio(value: float) -> str:
    """Three decimals: a ratio is checked against a target, and 1.003x is not 1.00x."""
    return f"{value:.3f}{TIMES}"


def render_table(rows: Sequence[Row]) -> str:
    """The markdown table, then the rows' notes as a list."""
    out = [
        "| workload | otel-claude | peer | ratio | target | result |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in rows:
        ratio = "—" if row.ratio is None else _ratio(row.ratio)
        out.append(
            f"| {_cell(row.workload)} | {_cell(row.ours)} | {_cell(row.peer or '—')} | {ratio} "
            f"| {_cell(row.target)} | {result_word(row)} |"
        )
    notes = [f"- {row.workload}: {row.note}" for row in rows if row.note]
    if notes:
        out += ["", *notes]
    return "\n".join(out)


def summary_line(rows: Sequence[Row]) -> str:
    passed = sum(row.passed is True for row in rows)
    unmeasured = sum(row.passed is None for row in rows)
    failed = len(rows) - passed - unmeasured
    verdict = "ALL PASSED" if all_passed(rows) else "NOT ALL PASSED"
    return f"{verdict}: {passed} passed, {failed} failed, {unmeasured} not measured"


# --- the machine ----------------------------------------------------------------------


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def _commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def machine() -> dict[str, Any]:
    """Where the run happened, for the table's heading and the JSON."""
    from otel_claude import __version__

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)),
        "ram_gib": _ram_gib(),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "os": f"{platform.system()} {platform.release()}",
        "otel_claude": __version__,
        "commit": _commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def machine_line(info: dict[str, Any]) -> str:
    ram = "unknown RAM" if info.get("ram_gib") is None else f"{info['ram_gib']:.0f} GiB RAM"
    return (
        f"Machine: {info['cpu']}, {info['cores']} cores, {ram}; Python {info['python']}; "
        f"{info['os']}; otel-claude {info['otel_claude']} ({info.get('commit') or 'no commit'}); "
        f"{info['date']}"
    )


def render(info: dict[str, Any], rows: Sequence[Row], quick: bool) -> str:
    """Everything printed at the end: heading, table, notes, verdict."""
    out = [machine_line(info)]
    if quick:
        out.append(
            "Quick smoke run (each script's --quick mode: smaller inputs, fewer rounds); "
            "the targets are about the full run."
        )
    out += ["", render_table(rows), "", summary_line(rows)]
    return "\n".join(out)


# --- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = [s.name for s in SCRIPTS]
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="each script's quick mode")
    parser.add_argument("--only", metavar="NAME,...", help=f"run only these: {', '.join(names)}")
    parser.add_argument("--size", type=float, metavar="MB", help="transcript history size")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds per script before it is stopped (default {DEFAULT_TIMEOUT_S:.0f})",
    )
    args = parser.parse_args(argv)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown or not wanted:
            parser.error(f"--only: unknown {', '.join(unknown) or '(empty)'}; known: {names}")
        args.only = wanted
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine()
    outcomes = []
    for script in SCRIPTS:
        if args.only and script.name not in args.only:
            continue
        extra = script_args(script, quick=args.quick, size=args.size)
        try:
            outcomes.append(collect(script.name, script.path, extra, args.timeout))
        except KeyboardInterrupt:
            print("\nbenchmarks interrupted", file=sys.stderr)
            return 130
    rows = [row for outcome in outcomes for row in outcome.rows]
    passed = all_passed(rows)
    document = {
        "machine": info,
        "quick": args.quick,
        "passed": passed,
        "scripts": [
            {
                "name": o.script,
                "argv": o.argv[1:],
                "returncode": o.returncode,
                "seconds": round(o.seconds, 3),
            }
            for o in outcomes
        ],
        "rows": [asdict(row) for row in rows],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    print(file=sys.stderr, flush=True)
    print(render(info, rows, args.quick))
    print(f"(JSON: {args.out})", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
