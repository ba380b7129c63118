"""Benchmark: ``GET /metrics`` with 50,000 Admin API series, against prometheus-client itself.

The ledger holds ~50,000 ``anthropic_api_tokens_total`` series (workspaces, API keys,
models, service tiers and context windows, each with 5 token types) plus some web search
series, committed through ``Ledger.apply_buckets`` as the usage poller does. The exporter
is the real ``ExporterServer`` with the collectors ``serve`` registers, on loopback.

The peer holds the same series with the same values in plain prometheus-client ``Counter``
objects (one per family, same label names, ``_created`` samples off), served by
prometheus-client's own HTTP server and rendered with its ``generate_latest``. Both are
measured over HTTP (a fresh connection per scrape, full body read) and render-only, in the
same run. The check that they are comparable: our text starts with the peer's, byte for byte.

- after a change: each round commits one bumped bucket (the peer: one ``inc()``), then scrapes;
- unchanged: scrapes with no commit in between, as Prometheus asks (OpenMetrics, gzip) and
  as plain text.

    .venv/bin/python bench/metrics_scrape.py [--series 50000] [--quick] [--rows FILE]
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import itertools
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.rows import TIMES, Row, write_rows  # noqa: E402
from otel_claude.admin import usage  # noqa: E402
from otel_claude.exposition.admin import AdminCollector, Budgets  # noqa: E402
from otel_claude.exposition.families import (  # noqa: E402
    Family,
    admin_families,
    core_families,
    family_series,
)
from otel_claude.exposition.health import HealthCollector  # noqa: E402
from otel_claude.exposition.page import MetricsPage  # noqa: E402
from otel_claude.exposition.prometheus import LedgerCollector  # noqa: E402
from otel_claude.health import SourceHealth  # noqa: E402
from otel_claude.ledger import BucketValue, Ledger  # noqa: E402
from otel_claude.pricing import load_price_table  # noqa: E402
from otel_claude.server import ExporterServer, IngestEndpoint  # noqa: E402

TARGET_RATIO = 0.25
TARGET_UNCHANGED_MS = 5.0
TOKEN_TYPES = tuple(name for name, _path in usage.TOKEN_FIELDS)
MODELS = (
    "claude-opus-4-6",
    "claude-opus-4-1",
    "claude-sonnet-4-5",
    "claude-sonnet-4",
    "claude-haiku-4-5",
)
WORKSPACES = 20
BUCKET = "2026-03-02T10:00:00Z"
# What Prometheus 2.x sends (its default scrape protocols: OpenMetrics first).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PLAIN = {"Accept": "text/plain;version=0.0.4"}
AS_PROMETHEUS = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}


def usage_rows(series: int, seed: int = 7) -> list[BucketValue]:
    """One hour of usage-report rows: ``series`` token series plus web search for 1 in 20."""
    rng = random.Random(seed)
    per_workspace = max(1, -(-series // (len(TOKEN_TYPES) * WORKSPACES * len(MODELS) * 4)))
    combos = itertools.islice(
        itertools.product(
            range(WORKSPACES),
            range(per_workspace),
            MODELS,
            ("standard", "batch"),
            ("0-200k", "200k-1M"),
        ),
        series // len(TOKEN_TYPES),
    )
    rows = []
    for n, (ws, key, model, tier, window) in enumerate(combos):
        labels = (
            model,
            f"wrkspc_01{ws:020X}",
            f"apikey_01{ws:04X}{key:016X}",
            tier,
            window,
            "us" if key % 3 == 0 else "global",
        )
        group = "\x1f".join(labels)
        for token_type in TOKEN_TYPES:
            value = int(rng.lognormvariate(12, 2.5)) + 1
            rows.append(
                BucketValue(
                    usage.SOURCE, BUCKET, group, usage.API_TOKENS, (token_type, *labels), value
                )
            )
        if n % 20 == 0:
            rows.append(
                BucketValue(
                    usage.SOURCE, BUCKET, group, usage.API_WEB_SEARCH, labels, rng.randint(1, 99)
                )
            )
    return rows


@dataclass
class Setup:
    """Both servers, their registries and how to make one change on each side."""

    ledger: Ledger
    ours: CollectorRegistry
    ours_port: int
    peer: CollectorRegistry
    peer_port: int
    bump_ours: Callable[[], None]
    bump_peer: Callable[[], None]
    close: Callable[[], None]


def build(series: int, state: Path) -> Setup:
    """The ledger, our exporter as ``serve`` assembles it, and the peer, both listening."""
    ledger = Ledger(
        state / "ledger.sqlite3",
        prices=load_price_table(),
        synchronous="off",
        max_series_per_family=series + 1000,
    )
    rows = usage_rows(series)
    ledger.apply_buckets(rows)
    families = core_families(False) + admin_families(usage.DIMENSIONS, "hash")
    health = SourceHealth()
    health.enable("admin_usage")
    health.succeeded("admin_usage", at=time.time(), duration=0.5)
    ours = CollectorRegistry(auto_describe=False)
    ours.register(LedgerCollector(ledger, families=families))
    ours.register(AdminCollector(budgets=Budgets(5000.0)))
    ours.register(HealthCollector(health))
    ProcessCollector(registry=ours)
    server = ExporterServer(
        ("127.0.0.1", 0),
        registry=ours,
        ingest=IngestEndpoint(ledger, token=None, max_bytes=1 << 20),
        sources=health,
    )
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()

    peer, counters = peer_registry(families, ledger.snapshot())
    from prometheus_client import start_http_server

    peer_server, _thread = start_http_server(0, addr="127.0.0.1", registry=peer)

    bumped = rows[len(rows) // 2]
    state_of = {"value": bumped.value}

    def bump_ours() -> None:
        state_of["value"] += 1
        v = bumped
        ledger.apply_buckets(
            [BucketValue(v.source, v.bucket, v.group, v.family, v.labels, state_of["value"])]
        )

    peer_child = counters[usage.API_TOKENS].labels(*bumped.labels)

    def bump_peer() -> None:
        peer_child.inc(1)

    def close() -> None:
        server.shutdown()
        server.server_close()
        peer_server.shutdown()
        peer_server.server_close()
        ledger.close()

    return Setup(
        ledger,
        ours,
        server.server_address[1],
        peer,
        peer_server.server_address[1],
        bump_ours,
        bump_peer,
        close,
    )


def peer_registry(
    families: Sequence[Family], snapshot: dict[tuple[str, tuple[str, ...]], int]
) -> tuple[CollectorRegistry, dict[str, Any]]:
    """Plain ``Counter`` objects holding the same series and values (inserted sorted)."""
    disable_created_metrics()  # type: ignore[no-untyped-call]  # ours have no _created either
    registry = CollectorRegistry(auto_describe=False)
    counters: dict[str, Any] = {}
    for family in families:
        counter = Counter(family.name, family.help, labelnames=family.labels, registry=registry)
        for labels, value in sorted(family_series(family, snapshot).items()):
            counter.labels(*labels).inc(family.value(value))
        counters[family.key] = counter
    return registry, counters


def scrape(port: int, headers: dict[str, str]) -> tuple[float, bytes]:
    """One scrape on a fresh connection: seconds until the whole body is read, the body."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/metrics", headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"/metrics answered {response.status}")
    finally:
        conn.close()
    return time.perf_counter() - started, body


def timed(rounds: int, before: Callable[[], None], run: Callable[[], object]) -> list[float]:
    """``rounds`` timings of ``run``, each after an untimed ``before``."""
    out = []
    for _ in range(rounds):
        before()
        started = time.perf_counter()
        run()
        out.append(time.perf_counter() - started)
    return out


def nothing() -> None:
    """No change between scrapes."""


def measure(setup: Setup, rounds: int, peer_rounds: int) -> dict[str, Any]:
    """Every timing (seconds, medians) and the comparability checks."""
    page = MetricsPage()
    ours_port, peer_port = setup.ours_port, setup.peer_port
    # First scrapes render everything once (not timed): a server has served one long since.
    scrape(ours_port, PLAIN)
    scrape(ours_port, AS_PROMETHEUS)
    _s, peer_body = scrape(peer_port, PLAIN)
    _s, ours_body = scrape(ours_port, PLAIN)
    if not ours_body.startswith(peer_body):
        raise RuntimeError("our counter text differs from the peer's: not the same series")
    _s, zipped = scrape(ours_port, AS_PROMETHEUS)
    if not gzip.decompress(zipped).endswith(b"# EOF\n"):
        raise RuntimeError("gzip body is not a complete OpenMetrics exposition")

    def http_ours(headers: dict[str, str]) -> Callable[[], object]:
        return lambda: scrape(ours_port, headers)

    results = {
        "ours_http_change": timed(rounds, setup.bump_ours, http_ours(PLAIN)),
        "ours_render_change": timed(rounds, setup.bump_ours, lambda: page.render(setup.ours, "")),
        "ours_http_change_prometheus": timed(rounds, setup.bump_ours, http_ours(AS_PROMETHEUS)),
        "ours_http_unchanged": timed(rounds * 2, nothing, http_ours(PLAIN)),
        "ours_http_unchanged_prometheus": timed(rounds * 2, nothing, http_ours(AS_PROMETHEUS)),
        "ours_render_unchanged": timed(rounds * 2, nothing, lambda: page.render(setup.ours, "")),
        "peer_http_change": timed(peer_rounds, setup.bump_peer, lambda: scrape(peer_port, PLAIN)),
        "peer_render_change": timed(
            peer_rounds, setup.bump_peer, lambda: generate_latest(setup.peer)
        ),
    }
    medians = {name: statistics.median(times) for name, times in results.items()}
    return {
        "medians_s": medians,
        "rounds": {name: len(times) for name, times in results.items()},
        "body_bytes": len(ours_body),
        "gzip_bytes": len(zipped),
        "peer_counter_bytes": len(peer_body),
    }


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


def result_rows(series: int, raw: dict[str, Any]) -> list[Row]:
    """The two rows of the issue: after a change (against the peer), and unchanged."""
    m = raw["medians_s"]
    http_ratio = m["ours_http_change"] / m["peer_http_change"]
    render_ratio = m["ours_render_change"] / m["peer_render_change"]
    label = f"{series // 1000}k" if series % 1000 == 0 else f"{series:,}"
    return [
        Row(
            workload=f"/metrics, {label} series, after a change",
            ours=ms(m["ours_http_change"]),
            peer=ms(m["peer_http_change"]),
            ratio=round(http_ratio, 4),
            target=f"≤ {TARGET_RATIO:g}{TIMES} peer",
            passed=http_ratio <= TARGET_RATIO and render_ratio <= TARGET_RATIO,
            note=f"HTTP GET, text format, median; render only {ms(m['ours_render_change'])} vs "
            f"generate_latest {ms(m['peer_render_change'])} ({render_ratio:.3f}{TIMES})",
            values=raw,
        ),
        Row(
            workload=f"/metrics, {label} series, unchanged",
            ours=ms(m["ours_http_unchanged_prometheus"]),
            target=f"< {TARGET_UNCHANGED_MS:g} ms",
            passed=m["ours_http_unchanged_prometheus"] * 1000 < TARGET_UNCHANGED_MS,
            note=f"HTTP GET as Prometheus asks (OpenMetrics, gzip, {raw['gzip_bytes']:,} B), "
            f"median; plain text {ms(m['ours_http_unchanged'])} for {raw['body_bytes']:,} B, "
            f"render only {ms(m['ours_render_unchanged'])}",
            values=raw,
        ),
    ]


def table(rows: Sequence[Row]) -> str:
    out = [
        "| workload | ours | peer (prometheus-client) | ratio | target | passed |",
        "|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        ratio = f"{r.ratio:.3f}{TIMES}" if r.ratio is not None else "-"
        out.append(
            f"| {r.workload} | {r.ours} | {r.peer or '-'} | {ratio} | {r.target} "
            f"| {'yes' if r.passed else 'NO'} |"
        )
    out += [f"- {r.workload}: {r.note}" for r in rows]
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=50_000, help="token series (default 50k)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--rows", metavar="FILE", help="write the result rows (JSON) to FILE")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Build, measure, print the table; exit 1 when a target is missed."""
    args = parse_args(argv)
    rounds, peer_rounds = (7, 3) if args.quick else (21, 7)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="otel-claude-scrape-") as tmp:
        setup = build(args.series, Path(tmp))
        try:
            built = time.monotonic() - started
            total = len(setup.ledger.snapshot())
            print(f"{total:,} ledger series built in {built:.1f}s", file=sys.stderr)
            raw = measure(setup, rounds, peer_rounds)
        finally:
            setup.close()
    raw["series"] = total
    raw["wall_s"] = time.monotonic() - started
    rows = result_rows(args.series, raw)
    print(table(rows))
    if args.rows:
        write_rows(args.rows, rows)
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
