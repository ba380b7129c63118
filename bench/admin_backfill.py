"""Benchmark: a 31-day backfill at 1-hour buckets with full group_by, against the simulator.

The simulator adds 100 ms to every response (a distant API). Printed: requests made against
the minimum possible (one page per 168 hourly buckets, one per 31 days of cost, one per day of
Claude Code analytics), wall time, samples written, and a cross-check of the written totals
against the simulator's ground truth. The peer column is the naive approach a hand-written
poller takes (one request per day per report), computed from the same window.

    python bench/admin_backfill.py [--days 31] [--latency 0.1] [--json]
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

from otel_claude.simulator import Simulator  # noqa: E402

KEY = "sk-ant-admin01-bench"
GROUP_BY = "model,workspace_id,api_key_id,service_tier,context_window,inference_geo"


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
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
    return 0 if all(r["exact"] for r in runs) and requests <= minimum else 1


if __name__ == "__main__":
    raise SystemExit(main())
