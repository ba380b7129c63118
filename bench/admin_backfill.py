"""Benchmark: a 31-day backfill at 1-hour buckets with full group_by, against the simulator.

The simulator adds 100 ms to every response (a distant API). Printed: requests made against
the minimum possible (one page per 168 hourly buckets, one per 31 days of cost, one per day of
Claude Code analytics), wall time, samples written, and a cross-check of the written totals
against the simulator's ground truth. The peer column is the naive approach a hand-written
poller takes (one request per day per report), computed from the same window.

    python bench/admin_backfill.py [--days 31] [--latency 0.1] [--json] [--rows FILE] [--quick]

``--quick`` runs one round instead of three; ``--rows FILE`` writes the result row for
``python -m bench``. Target: requests = the minimum, and a wall time of at most 1.2 times
the minimum request count times the added latency.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rows import TIMES, Row, compile_package, write_rows  # noqa: E402
from otel_claude.simulator import Simulator  # noqa: E402

KEY = "sk-ant-admin01-bench"
GROUP_BY = "model,workspace_id,api_key_id,service_tier,context_window,inference_geo"
TARGET_WALL_RATIO = 1.2  # wall time against (minimum requests x added latency)


def run_once(days: int, latency: float, until: datetime) -> dict[str, float]:
    """One backfill through the real CLI; returns requests, seconds, samples, exactness."""
    since = until - timedelta(days=days)
    sim = Simulator(
        seed=5,
        api_key=KEY,
        clock=lambda: until.timestamp() + 6 * 3600,
        data_start=since - timedelta(days=1),
        latency_s=latency,
    )
    url = sim.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ANTHROPIC_"))}
        env.update(
            ANTHROPIC_ADMIN_API_KEY=KEY,
            OTEL_CLAUDE_ADMIN_API_URL=url,
            OTEL_CLAUDE_ADMIN_GROUP_BY=GROUP_BY,
            OTEL_CLAUDE_STATE_DIR="/tmp/otel-bench",
        )
        out = Path("/tmp/otel-claude-bench-backfill.om")
        started = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "otel_claude",
                "backfill",
                "--since",
                since.isoformat(),
                "--until",
                until.isoformat(),
                "--out",
                str(out),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        wall = time.monotonic() - started
        if proc.returncode != 0:
            raise SystemExit(f"backfill failed: {proc.stderr[-500:]}")
        summary = json.loads(proc.stderr.strip().splitlines()[-1])
        truth = sim.usage_truth(since, until, [], at=until.timestamp() + 6 * 3600)[()]
        want = sum(v for k, v in truth.items() if k != "web_search_requests")
        last: dict[str, float] = {}
        ts_until = str(int(until.timestamp()))
        with out.open() as lines:
            for line in lines:
                if line.startswith("anthropic_api_tokens_total{") and line.rstrip().endswith(
                    ts_until
                ):
                    series, value, _ts = line.rsplit(" ", 2)
                    last[series] = float(value)
        got = sum(last.values())
        requests = len(sim.requests)
    finally:
        sim.stop()
    return {
        "requests": requests,
        "seconds": wall,
        "samples": summary["samples"],
        "exact": float(got == want),
        "bytes": out.stat().st_size,
    }


def result_row(
    days: int, latency: float, runs: list[dict[str, float]], minimum: int, naive: int
) -> Row:
    """The row for ``python -m bench``: the peer is the minimum request count at this latency."""
    seconds = statistics.median(r["seconds"] for r in runs)
    requests = sorted({int(r["requests"]) for r in runs})
    floor_s = minimum * latency
    ratio = seconds / floor_s
    exact = all(r["exact"] for r in runs)
    notes = [f"median of {len(runs)} round(s)", "totals exact" if exact else "totals NOT exact"]
    if requests != [minimum]:
        notes.append(f"requests per round: {', '.join(map(str, requests))}, minimum {minimum}")
    notes.append(f"a naive per-day poller needs {naive} requests")
    return Row(
        workload=f"{days}-day Admin API backfill, 1h buckets, full group_by, "
        f"{latency * 1000:.0f} ms added latency",
        ours=f"{'/'.join(map(str, requests))} requests, {seconds:.2f} s",
        peer=f"{minimum} requests (minimum), {floor_s:.2f} s",
        ratio=ratio,
        target=f"requests = minimum; wall ≤ {TARGET_WALL_RATIO}{TIMES} (minimum {TIMES} latency)",
        passed=exact and requests == [minimum] and ratio <= TARGET_WALL_RATIO,
        note="; ".join(notes),
        values={
            "runs": runs,
            "median_s": seconds,
            "minimum": minimum,
            "naive": naive,
            "latency_s": latency,
            "minimum_times_latency_s": floor_s,
            "target_wall_ratio": TARGET_WALL_RATIO,
        },
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, help="backfills run (default 3, 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="one round")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--rows", metavar="FILE", help="write the result row (JSON) to FILE")
    args = parser.parse_args()
    compile_package()
    args.rounds = args.rounds or (1 if args.quick else 3)
    until = datetime(2026, 11, 1, tzinfo=UTC)
    hours = args.days * 24
    minimum = -(-hours // 168) + -(-args.days // 31) + args.days
    naive = args.days * 3  # one request per day for each of the three reports
    runs = [run_once(args.days, args.latency, until) for _ in range(args.rounds)]
    seconds = statistics.median(r["seconds"] for r in runs)
    requests = runs[0]["requests"]
    buf = io.StringIO()
    buf.write(
        f"Backfill of {args.days} days, 1h buckets, group_by={GROUP_BY}, "
        f"{args.latency * 1000:.0f} ms per response, {args.rounds} rounds\n\n"
    )
    buf.write("| approach | requests | minimum | wall time (median) | samples | exact |\n")
    buf.write("|---|---:|---:|---:|---:|---|\n")
    buf.write(
        f"| otel-claude backfill | {requests} | {minimum} | {seconds:.2f} s | "
        f"{runs[0]['samples']:,} | {'yes' if all(r['exact'] for r in runs) else 'NO'} |\n"
    )
    buf.write(
        f"| naive per-day poller (computed) | {naive} | {minimum} | "
        f"≥ {naive * args.latency:.1f} s in latency alone | | |\n"
    )
    print(buf.getvalue())
    if args.json:
        print(json.dumps({"runs": runs, "minimum": minimum, "naive": naive}))
    if args.rows:
        write_rows(args.rows, [result_row(args.days, args.latency, runs, minimum, naive)])
    return 0 if all(r["exact"] for r in runs) and requests <= minimum else 1


if __name__ == "__main__":
    raise SystemExit(main())
