"""``python -m otel_claude.simulator``: run the Admin API simulator in the foreground."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from otel_claude.simulator.server import DEFAULT_API_KEY, RequestRecord, Simulator


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until interrupted; print the URL and the key a client should use."""
    parser = argparse.ArgumentParser(
        prog="python -m otel_claude.simulator",
        description="Serve a simulated Anthropic Admin API (usage, cost, Claude Code analytics).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=8099, help="port (0 = any free port)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the synthetic organisation")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="admin key clients must send")
    parser.add_argument("--days", type=float, default=40, help="days of history before now")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--no-late-data", action="store_true", help="minutes visible at once")
    parser.add_argument("--no-revisions", action="store_true", help="no bucket revisions")
    parser.add_argument("--verbose", "-v", action="store_true", help="log requests to stderr")
    args = parser.parse_args(argv)

    simulator = Simulator(
        seed=args.seed,
        api_key=args.api_key,
        data_start=datetime.now(UTC) - timedelta(days=args.days),
        latency_s=args.latency,
        late_data=not args.no_late_data,
        revisions=not args.no_revisions,
    )
    if args.verbose:

        def log(record: RequestRecord) -> None:
            stamp = time.strftime("%H:%M:%S", time.gmtime(record.at))
            print(f"{stamp} {record.method} {record.path} {record.status}", file=sys.stderr)

        simulator.on_request = log
    url = simulator.start(args.host, args.port)
    print(f"Admin API simulator listening on {url}", flush=True)
    print(f"  OTEL_CLAUDE_ADMIN_API_URL={url}", flush=True)
    print(f"  ANTHROPIC_ADMIN_API_KEY={simulator.api_key}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        simulator.stop()
    return 0
