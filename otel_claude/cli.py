"""The ``otel-claude`` command: serve, demo, ingest, report, backfill and check."""

from __future__ import annotations

import argparse
import fcntl
import gc
import json
import logging
import os
import signal
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from otel_claude import __version__
from otel_claude.config import Settings, load_settings
from otel_claude.errors import ConfigError, OtelClaudeError
from otel_claude.logs import setup_logging
from otel_claude.pricing import load_price_table

if TYPE_CHECKING:  # the ledger is imported by the commands that open one
    from otel_claude.ledger import Ledger
    from otel_claude.sources.coldscan import ParseJob

log = logging.getLogger("otel_claude.cli")

READ_CHUNK = 1 << 20
SHUTDOWN_OTLP_TIMEOUT_S = 5.0
#: Requests ``backfill`` keeps in flight. The Admin API asks for one request a minute when
#: polling, but accepts short bursts such as downloading paginated data.
BACKFILL_CONCURRENCY = 4
MAX_BACKFILL_CONCURRENCY = 16


def run() -> None:
    """The ``otel-claude`` program: ``main``, then exit with its status.

    ``report`` is a one-shot scan: once its output is flushed the process ends without
    tearing the interpreter down, which frees some 100k objects one by one (15 ms of a
    0.4 s report of a 500 MB history) only for the OS to take the memory back anyway. Its
    worker processes have been joined by then. Every other command exits normally.
    """
    argv = sys.argv[1:]
    code = main(argv)
    if argv[:1] == ["report"]:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (BrokenPipeError, ValueError):  # `report | head`: the reader left
            pass
        os._exit(code)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        settings = load_settings(flags=vars(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"otel-claude: {problem}", file=sys.stderr)
        return 1
    setup_logging(settings.log_level, settings.log_format)
    try:
        code: int = args.handler(settings, args)
        return code
    except OtelClaudeError as exc:
        print(f"otel-claude: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: what was committed stays committed, nothing half
        print("otel-claude: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-claude", description="Claude usage, cache and cost metrics exporter."
    )
    parser.add_argument("--version", action="version", version=f"otel-claude {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="FILE", help="TOML config file (OTEL_CLAUDE_CONFIG)")
        p.add_argument("--state-dir", metavar="DIR", help="state directory (OTEL_CLAUDE_STATE_DIR)")
        p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
        p.add_argument("--log-format", choices=("logfmt", "json"))

    serve = commands.add_parser("serve", help="run the exporter (HTTP /metrics, ingest, OTLP)")
    common(serve)
    serve.add_argument("--listen", metavar="HOST:PORT", help="address (OTEL_CLAUDE_LISTEN)")
    serve.set_defaults(handler=_serve)

    ingest = commands.add_parser(
        "ingest", help="count a stream-json file or stdin (e.g. claude -p … | otel-claude ingest -)"
    )
    common(ingest)
    ingest.add_argument("file", metavar="FILE|-", help="NDJSON file, or - for standard input")
    ingest.add_argument(
        "--url", help="post to a running exporter at this base URL instead of the local state"
    )
    ingest.set_defaults(handler=_ingest)

    demo = commands.add_parser(
        "demo", help="run the exporter against a built-in simulator and generated traffic"
    )
    common(demo)
    demo.add_argument("--listen", metavar="HOST:PORT", help="address (default 127.0.0.1:9477)")
    demo.add_argument(
        "--prometheus",
        action="store_true",
        help="also start Prometheus (if installed) scraping the demo with the project's rules",
    )
    demo.set_defaults(handler=_demo)

    backfill = commands.add_parser(
        "backfill", help="write past Admin API data as OpenMetrics for promtool to import"
    )
    common(backfill)
    backfill.add_argument("--since", required=True, help="start, RFC 3339 or YYYY-MM-DD (UTC)")
    backfill.add_argument("--until", help="end (default: now)")
    backfill.add_argument("--out", required=True, metavar="FILE", help="output file, - for stdout")
    backfill.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra label on every series (e.g. job=otel-claude to match the scrape job)",
    )
    backfill.add_argument(
        "--concurrency",
        type=_concurrency,
        default=BACKFILL_CONCURRENCY,
        metavar="N",
        help=f"Admin API requests in flight at once, 1 to {MAX_BACKFILL_CONCURRENCY} "
        "(1: one after another)",
    )
    backfill.set_defaults(handler=_backfill)

    report = commands.add_parser(
        "report", help="scan the Claude Code transcript history and print usage and cost"
    )
    common(report)
    report.add_argument("--json", action="store_true", help="print JSON instead of a table")
    report.add_argument("--by", choices=("day", "month", "model"), default="day")
    report.add_argument(
        "--source",
        choices=("transcripts", "state"),
        default="transcripts",
        help="scan the transcripts (default) or read a running exporter's ledger",
    )
    report.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="processes for the scan (default: one per core, at most 2)",
    )
    report.add_argument("--since", help="only usage from this time (RFC 3339 or YYYY-MM-DD)")
    report.add_argument("--until", help="only usage before this time")
    report.add_argument(
        "--state",
        action="store_true",
        help="instead, print what the exporter's ledger counted (all sources)",
    )
    report.set_defaults(handler=_report)

    check = commands.add_parser("check", help="validate configuration; exit 1 on any problem")
    common(check)
    check.add_argument("--listen", metavar="HOST:PORT")
    check.add_argument(
        "--online",
        action="store_true",
        help="also try the Admin API key, transcript directories, OTLP endpoint, listen address",
    )
    check.set_defaults(handler=_check)
    return parser


# --- helpers ------------------------------------------------------------------------


def _concurrency(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_BACKFILL_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_BACKFILL_CONCURRENCY}, got {value}")
    return value


@contextmanager
def _state_lock(settings: Settings) -> Iterator[None]:
    """Hold the state directory exclusively: one writer process per ledger."""
    try:
        settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(settings.state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise OtelClaudeError(
            f"OTEL_CLAUDE_STATE_DIR: cannot use {settings.state_dir}: {exc.strerror}"
        ) from None
    handle = os.fdopen(fd, "r+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OtelClaudeError(
                f"another otel-claude process is using {settings.state_dir}; "
                "stop it, choose another --state-dir, or use ingest --url"
            ) from None
        yield
    finally:
        handle.close()


def _open_ledger(settings: Settings, *, read_only: bool = False) -> Ledger:
    from otel_claude.app import open_ledger

    return open_ledger(settings, read_only=read_only)


# --- serve --------------------------------------------------------------------------


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    return run_serve(settings, os.environ)


def _start_first_scan(settings: Settings) -> ParseJob | None:
    """On a first start (no ledger yet), start the cold transcript scan's workers now.

    A new ledger holds no positions, so the files to parse are known before it is opened
    and before the rest of the exporter is imported: the workers start 12 ms earlier than
    from ``build_app``, which takes the job over. None when there is nothing to do.
    """
    if not settings.transcripts_enabled or settings.ledger_path.exists():
        return None
    from otel_claude.sources.coldscan import plan_parse, scan_workers
    from otel_claude.sources.transcripts import SOURCE, transcript_entries, transcript_limits

    job = plan_parse(
        transcript_entries(settings.transcript_roots),
        None,
        transcript_limits(settings.ingest_limits),
        SOURCE,
        scan_workers(),
    )
    return job.start() if job is not None else None


def run_serve(
    settings: Settings,
    env: Mapping[str, str],
    *,
    on_started: Callable[[threading.Event, str], None] | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT; ``on_started(stop, url)`` runs in a thread once listening."""
    with _state_lock(settings):
        first_scan = _start_first_scan(settings)  # first: it may fork cold-scan workers
        from otel_claude.app import build_app
        from otel_claude.sources.coldscan import paused_gc

        # Start-up builds only long-lived objects: no collections while it runs, and
        # frozen afterwards so that later collections skip them (30 ms to ready).
        with paused_gc():
            try:
                app = build_app(settings, env, cold_scan=first_scan)  # or it forks them
            except BaseException:
                if first_scan is not None:
                    first_scan.stop()
                raise
            from otel_claude.landing import LandingData
            from otel_claude.server import ExporterServer, IngestEndpoint
        gc.freeze()

        ingest = IngestEndpoint(
            app.ledger,
            token=settings.ingest_token,
            max_bytes=settings.ingest_max_bytes,
            limits=settings.ingest_limits,
            health=app.health,
        )
        try:
            server = ExporterServer(
                (settings.listen_host, settings.listen_port),
                registry=app.registry,
                ingest=ingest,
                sources=app.health,
                landing=LandingData.for_app(app),
                security=settings.web_security(),
            )
        except OSError as exc:
            app.close()
            raise OtelClaudeError(f"cannot listen on {settings.listen}: {exc.strerror}") from exc
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("stopping", extra={"fields": {"signal": signal.Signals(signum).name}})
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        threads = [threading.Thread(target=server.serve_forever, name="http", daemon=True)]
        if app.poller is not None:
            threads.append(
                threading.Thread(
                    target=app.poller.run, args=(stop,), name="admin-poller", daemon=True
                )
            )
        if app.tailer is not None:
            threads.append(
                threading.Thread(
                    target=app.tailer.run, args=(stop,), name="transcripts", daemon=True
                )
            )
        if on_started is not None:
            url = f"http://{settings.listen}"
            threads.append(
                threading.Thread(target=on_started, args=(stop, url), name="extra", daemon=True)
            )
        for thread in threads:
            thread.start()
        log.info(
            "listening",
            extra={
                "fields": {
                    "address": settings.listen,
                    "state_dir": str(settings.state_dir),
                    "otlp": app.meter_provider is not None,
                    "ingest_token": settings.ingest_token is not None,
                    "admin_api": [r.name for r in app.reports],
                    "transcripts": [str(p) for p in app.tailer.roots] if app.tailer else "off",
                    "version": __version__,
                }
            },
        )
        while not stop.wait(1.0):
            pass
        server.shutdown()
        server.server_close()
        for thread in threads[1:]:
            thread.join(timeout=SHUTDOWN_OTLP_TIMEOUT_S)
        if app.meter_provider is not None:
            _shutdown_otlp(app.meter_provider, timeout_s=SHUTDOWN_OTLP_TIMEOUT_S)
        app.close()
        log.info("stopped")
    return 0


def _shutdown_otlp(provider: Any, timeout_s: float) -> None:
    """Send the final OTLP export, but never hold up shutdown past ``timeout_s``.

    The SDK retries an unreachable endpoint for a long time; a container runtime would
    SIGKILL us first, so give up (and say so) instead.
    """
    worker = threading.Thread(target=provider.shutdown, name="otlp-shutdown", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        log.warning("final OTLP export did not finish", extra={"fields": {"timeout_s": timeout_s}})


# --- ingest -------------------------------------------------------------------------


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    """Yield runs of complete lines as they arrive; the last line may lack a newline."""
    pending = b""
    read = getattr(stream, "read1", stream.read)
    while True:
        block = read(READ_CHUNK)
        if not block:
            if pending.strip():
                yield pending
            return
        pending += block
        cut = pending.rfind(b"\n")
        if cut >= 0:
            yield pending[: cut + 1]
            pending = pending[cut + 1 :]


def _ingest(settings: Settings, args: argparse.Namespace) -> int:
    stream: IO[bytes]
    if args.file == "-":
        stream = sys.stdin.buffer
    else:
        try:
            stream = open(args.file, "rb")
        except OSError as exc:
            raise OtelClaudeError(f"cannot read {args.file}: {exc.strerror}") from exc
    totals: dict[str, Any] = {"accepted": 0, "duplicates": 0, "ignored": 0, "rejected": []}
    line_offset = 0
    with stream:
        if args.url:
            _ingest_remote(stream, args.url, settings, totals)
        else:
            from otel_claude.sources.ingest import iter_lines

            with _state_lock(settings):
                ledger = _open_ledger(settings)
                try:
                    for chunk in _chunks(stream):
                        parsed = list(iter_lines(chunk, "ingest", settings.ingest_limits))
                        summary = ledger.apply([rec for _, rec in parsed], source="ingest")
                        totals["accepted"] += summary.accepted
                        totals["duplicates"] += summary.duplicates
                        totals["ignored"] += summary.ignored
                        totals["rejected"] += [
                            {"line": line_offset + parsed[i][0], "reason": reason}
                            for i, reason in summary.rejected
                        ]
                        line_offset += chunk.count(b"\n")
                finally:
                    ledger.close()
    print(json.dumps(totals))
    return 0 if not totals["rejected"] else 3


def _ingest_remote(stream: IO[bytes], url: str, settings: Settings, totals: dict[str, Any]) -> None:
    import httpx

    headers = {"Content-Type": "application/x-ndjson"}
    if settings.ingest_token:
        headers["Authorization"] = f"Bearer {settings.ingest_token}"
    endpoint = url.rstrip("/") + "/v1/events"
    line_offset = 0
    with httpx.Client(timeout=httpx.Timeout(30.0), headers=headers) as client:
        for chunk in _chunks(stream):
            try:
                response = client.post(endpoint, content=chunk)
            except httpx.HTTPError as exc:
                raise OtelClaudeError(f"cannot post to {endpoint}: {exc}") from exc
            if response.status_code not in (202, 400):
                raise OtelClaudeError(
                    f"{endpoint} answered {response.status_code}: {response.text[:200]}"
                )
            answer = response.json()
            for key in ("accepted", "duplicates", "ignored"):
                totals[key] += answer.get(key, 0)
            totals["rejected"] += [
                {"line": line_offset + r["line"], "reason": r["reason"]}
                for r in answer.get("rejected", [])
            ]
            line_offset += chunk.count(b"\n")


# --- demo ---------------------------------------------------------------------------


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from otel_claude.demo import run_demo

    return run_demo(
        settings,
        state_dir=Path(args.state_dir) if args.state_dir else None,
        with_prometheus=args.prometheus,
    )


# --- backfill -----------------------------------------------------------------------


def _backfill(settings: Settings, args: argparse.Namespace) -> int:
    import time
    from datetime import UTC, datetime

    from otel_claude.admin.claude_code import ClaudeCodeReport
    from otel_claude.admin.client import AdminClient
    from otel_claude.admin.cost import CostReport
    from otel_claude.admin.usage import UsageReport
    from otel_claude.backfill import collect, estimate_requests, write_openmetrics
    from otel_claude.exposition.families import admin_families
    from otel_claude.progress import Progress
    from otel_claude.timeutil import parse_day_or_time

    if not settings.admin_api_key:
        raise OtelClaudeError("ANTHROPIC_ADMIN_API_KEY: backfill needs an Admin API key")
    try:
        since = parse_day_or_time(args.since)
        until = parse_day_or_time(args.until) if args.until else datetime.now(UTC)
    except ValueError as exc:
        raise OtelClaudeError(f"--since/--until: {exc}") from None
    until = min(until, datetime.now(UTC))
    if since >= until:
        raise OtelClaudeError("--since must be before --until")
    extra: dict[str, str] = {}
    for item in args.label:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise OtelClaudeError(f"--label: expected NAME=VALUE, got {item!r}")
        extra[name] = value
    wanted = set(settings.admin_sources)
    from otel_claude.ledger import Ledger

    scratch = Ledger(":memory:", prices=load_price_table())
    started = time.monotonic()
    with AdminClient(
        settings.admin_api_url, settings.admin_api_key, timeout=settings.admin_timeout_s
    ) as client:
        usage = (
            UsageReport(
                client,
                scratch,
                since=since,
                group_by=settings.admin_group_by,
                interval_s=3600,
                clock=time.time,
            )
            if "usage" in wanted
            else None
        )
        cost = (
            CostReport(client, scratch, since=since, clock=time.time) if "cost" in wanted else None
        )
        claude_code = (
            ClaudeCodeReport(
                client,
                scratch,
                since=since,
                clock=time.time,
                actor_mode=settings.actor_labels,
                actor_salt=settings.actor_salt,
            )
            if "claude_code" in wanted
            else None
        )
        progress = Progress(
            estimate_requests(
                since,
                until,
                usage=usage is not None,
                cost=cost is not None,
                claude_code=claude_code is not None,
            )
        )
        samples = collect(
            since=since,
            until=until,
            usage=usage,
            cost=cost,
            claude_code=claude_code,
            progress=progress,
            concurrency=args.concurrency,
        )
        progress.finish()
        requests = sum(client.stats.copy()[0].values())
    families = admin_families(settings.admin_group_by, settings.actor_labels)
    out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")
    try:
        written = write_openmetrics(
            out, samples, families, since=since, until=until, extra_labels=extra
        )
    finally:
        if out is not sys.stdout:
            out.close()
    print(
        json.dumps(
            {
                "samples": written,
                "requests": requests,
                "seconds": round(time.monotonic() - started, 2),
            }
        ),
        file=sys.stderr,
    )
    return 0


# --- report -------------------------------------------------------------------------


def _report(settings: Settings, args: argparse.Namespace) -> int:
    # The process ends with this command, which builds ~100k objects and no cycles:
    # collections (one more at exit) would only walk them again (20 ms of a 500 MB report).
    gc.disable()
    if args.state or args.source == "state":
        return _report_state(settings, args)
    from otel_claude.report import history_files, render_table, scan_history, summarize
    from otel_claude.sources.coldscan import scan_workers
    from otel_claude.sources.transcripts import transcript_limits
    from otel_claude.timeutil import parse_day_or_time

    try:
        since = parse_day_or_time(args.since) if args.since else None
        until = parse_day_or_time(args.until) if args.until else None
    except ValueError as exc:
        raise OtelClaudeError(f"--since/--until: {exc}") from None
    roots = [r for r in settings.transcript_roots if r.is_dir()]
    if not roots:
        raise OtelClaudeError(
            "CLAUDE_CONFIG_DIR: no projects/ directory found in "
            + ", ".join(str(r) for r in settings.transcript_roots)
        )
    prices = load_price_table(settings.prices_file, settings.price_overrides or None)
    from otel_claude.progress import Progress

    # Sizes only for a bar on a terminal; otherwise the listing skips a stat per file.
    files = history_files(roots, since, sizes=sys.stderr.isatty())
    bar = Progress(sum(size for size, _ in files if size > 0))
    history = scan_history(
        roots,
        since=since,
        until=until,
        workers=scan_workers() if args.workers is None else max(1, args.workers),
        progress=lambda n: bar.step("scanning transcripts", n),
        files=files,
        limits=transcript_limits(settings.ingest_limits),  # as serve reads transcripts
        long_context_tokens=prices.long_context_threshold_tokens,
    )
    bar.finish()
    summary = summarize(history, prices, by=args.by)
    if args.json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        print(render_table(summary))
    return 0


def _report_state(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.ledger_path.exists():
        raise OtelClaudeError(f"no ledger at {settings.ledger_path}: nothing counted yet")
    ledger = _open_ledger(settings, read_only=True)  # a running server may hold the lock
    try:
        snapshot = ledger.snapshot()
    finally:
        ledger.close()
    rows = _report_rows(snapshot)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    types = ("input", "output", "cache_read", "cache_creation_5m", "cache_creation_1h")
    header = ["model", *types, "est. USD", "reported USD"]
    table = [header] + [
        [
            r["model"],
            *(f"{r['tokens'].get(t, 0):,}" for t in types),
            f"{r['cost_usd']['estimated']:.4f}",
            f"{r['cost_usd']['reported']:.4f}",
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return 0


def _report_rows(snapshot: Mapping[tuple[str, tuple[str, ...]], int]) -> list[dict[str, Any]]:
    from otel_claude.ledger import COST, TOKENS

    tokens: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
    cost: defaultdict[str, dict[str, float]] = defaultdict(
        lambda: {"estimated": 0.0, "reported": 0.0}
    )
    for (family, labels), value in snapshot.items():
        if family == TOKENS:
            model, token_type = labels[0], labels[1]
            tokens[model][token_type] += value
        elif family == COST:
            model, cost_source = labels[0], labels[1]
            cost[model][cost_source] += value / 1e12
    return [
        {"model": model, "tokens": dict(tokens.get(model, {})), "cost_usd": cost[model]}
        for model in sorted(set(tokens) | set(cost))
    ]


# --- check --------------------------------------------------------------------------


def _check(settings: Settings, args: argparse.Namespace) -> int:
    problems = []
    try:
        prices = load_price_table(settings.prices_file, settings.price_overrides or None)
    except OtelClaudeError as exc:
        problems.append(f"pricing: {exc}")
        prices = None
    try:
        settings.web_security().ssl_context()
    except OtelClaudeError as exc:
        problems.append(str(exc))
    state = settings.state_dir
    probe = state if state.exists() else next((p for p in state.parents if p.exists()), Path("/"))
    if not os.access(probe, os.W_OK):
        problems.append(f"OTEL_CLAUDE_STATE_DIR: {state} is not writable")
    if problems:
        for problem in problems:
            print(f"otel-claude: {problem}", file=sys.stderr)
        return 1
    print(f"configuration ok (otel-claude {__version__})")
    print(f"  listen:        {settings.listen}")
    print(f"  state dir:     {settings.state_dir}")
    print(f"  ingest token:  {'set' if settings.ingest_token else 'not set (loopback only)'}")
    print(f"  dedup horizon: {settings.dedup_horizon_days:g} days")
    if prices is not None:
        print(f"  price table:   {prices.version}, {len(prices.models)} models")
    print(f"  admin API:     {'key set' if settings.admin_api_key else 'off (no key)'}")
    if not args.online:
        return 0
    from otel_claude.doctor import online_checks

    findings = online_checks(settings, os.environ)
    print("online checks:")
    for finding in findings:
        print(finding.line())
    return 0 if all(f.ok for f in findings) else 3
