"""Backfill → promtool import → real Prometheus: the imported totals are exact."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from otel_claude.simulator import Simulator
from tests.conftest import need_binary
from tests.procs import running_prometheus

KEY = "sk-ant-admin01-backfill-test"
SINCE = datetime(2026, 11, 7, tzinfo=UTC)
UNTIL = datetime(2026, 11, 10, tzinfo=UTC)
NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(
        seed=11,
        api_key=KEY,
        clock=lambda: NOW.timestamp(),
        data_start=datetime(2026, 10, 20, tzinfo=UTC),
    )
    simulator.start()
    yield simulator
    simulator.stop()


def _at(prom_url: str, expr: str, t: datetime) -> dict[str, float]:
    doc = httpx.get(
        f"{prom_url}/api/v1/query", params={"query": expr, "time": str(t.timestamp())}, timeout=10
    ).json()
    assert doc["status"] == "success", doc
    return {
        ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items())): float(r["value"][1])
        for r in doc["data"]["result"]
    }


def _backfill(
    sim: Simulator,
    tmp_path: Path,
    out: Path,
    *flags: str,
    group_by: str | None = "model,workspace_id,api_key_id,service_tier,context_window",
    actor_labels: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``otel-claude backfill`` of SINCE..UNTIL against ``sim`` (None: the default setting)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ANTHROPIC_"))}
    env.update(
        ANTHROPIC_ADMIN_API_KEY=KEY,
        OTEL_CLAUDE_ADMIN_API_URL=sim.url,
        OTEL_CLAUDE_STATE_DIR=str(tmp_path / "s"),
    )
    if group_by is not None:
        env["OTEL_CLAUDE_ADMIN_GROUP_BY"] = group_by
    if actor_labels is not None:
        env["OTEL_CLAUDE_ACTOR_LABELS"] = actor_labels
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "otel_claude",
            "backfill",
            "--since",
            SINCE.isoformat(),
            "--until",
            UNTIL.isoformat(),
            "--out",
            str(out),
            "--label",
            "job=otel-claude",
            *flags,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.e2e
def test_backfill_imports_exact_totals(sim: Simulator, tmp_path: Path) -> None:
    promtool = need_binary("promtool")
    prometheus = need_binary("prometheus")
    out = tmp_path / "backfill.om"
    proc = _backfill(sim, tmp_path, out, group_by=None, actor_labels="plain")
    assert proc.returncode == 0, proc.stderr
    assert KEY not in proc.stderr + out.read_text()
    data = tmp_path / "prometheus" / "data"
    data.mkdir(parents=True)
    imported = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(out), str(data)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr
    with running_prometheus(
        prometheus, tmp_path, targets=[], extra_args=["--storage.tsdb.retention.time=100y"]
    ) as prom:
        tokens = _at(
            prom.url, 'sum by (token_type) (anthropic_api_tokens_total{job="otel-claude"})', UNTIL
        )
        truth = sim.usage_truth(SINCE, UNTIL, [], at=NOW.timestamp())[()]
        names = {
            "uncached_input_tokens": "input",
            "output_tokens": "output",
            "cache_read_input_tokens": "cache_read",
            "cache_creation_5m": "cache_creation_5m",
            "cache_creation_1h": "cache_creation_1h",
        }
        assert tokens == {f"token_type={names[f]}": float(truth[f]) for f in names}
        # Halfway: the cumulative counter at an hour end equals the usage up to that hour.
        mid = SINCE + timedelta(hours=37)
        half = _at(prom.url, "sum(anthropic_api_tokens_total)", mid)
        mid_truth = sim.usage_truth(SINCE, mid, [], at=NOW.timestamp())[()]
        assert half == {"": float(sum(mid_truth[f] for f in names))}
        cost = _at(prom.url, "sum(anthropic_api_cost_usd_total)", UNTIL)
        cents = sum(sim.cost_truth(SINCE, UNTIL, [], at=NOW.timestamp()).values(), Decimal(0))
        assert abs(Decimal(str(cost[""])) - cents / 100) < Decimal("1e-6")
        sessions = _at(prom.url, "sum(anthropic_claude_code_sessions_total)", UNTIL)
        want = sum(
            r["core_metrics"]["num_sessions"]
            for d in (date(2026, 11, 7), date(2026, 11, 8), date(2026, 11, 9))
            for r in sim.claude_code_truth(d, at=NOW.timestamp())
        )
        assert sessions == {"": float(want)}


# --- concurrent reads ---------------------------------------------------------------

#: The fewest requests for SINCE..UNTIL: one usage page (72 hourly buckets), one cost page,
#: one Claude Code analytics request per day (3).
MINIMUM_REQUESTS = 5


def _final_tokens(path: Path) -> int:
    """Sum of every ``anthropic_api_tokens_total`` series at UNTIL."""
    stamp = f" {int(UNTIL.timestamp())}\n"
    return sum(
        int(line.rsplit(" ", 2)[1])
        for line in path.read_text().splitlines(keepends=True)
        if line.startswith("anthropic_api_tokens_total{") and line.endswith(stamp)
    )


def test_concurrent_backfill_is_byte_identical_with_minimal_requests(
    sim: Simulator, tmp_path: Path
) -> None:
    outputs = {}
    for concurrency in ("1", "4", "16"):
        before = len(sim.requests)
        out = tmp_path / f"c{concurrency}.om"
        proc = _backfill(sim, tmp_path, out, "--concurrency", concurrency)
        assert proc.returncode == 0, proc.stderr
        assert len(sim.requests) - before == MINIMUM_REQUESTS
        outputs[concurrency] = out.read_bytes()
    assert outputs["4"] == outputs["1"]
    assert outputs["16"] == outputs["1"]
    # The default is concurrent, and writes the same bytes.
    proc = _backfill(sim, tmp_path, tmp_path / "default.om")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "default.om").read_bytes() == outputs["1"]
    # Exact against the simulator's ground truth (not only against ourselves).
    truth = sim.usage_truth(SINCE, UNTIL, [], at=NOW.timestamp())[()]
    want = sum(v for k, v in truth.items() if k != "web_search_requests")
    assert _final_tokens(tmp_path / "c1.om") == want


def test_concurrent_backfill_keeps_requests_in_flight_bounded(tmp_path: Path) -> None:
    import threading

    from otel_claude.admin.claude_code import ClaudeCodeReport
    from otel_claude.admin.client import AdminClient
    from otel_claude.admin.cost import CostReport
    from otel_claude.admin.usage import UsageReport
    from otel_claude.backfill import collect
    from otel_claude.ledger import Ledger
    from otel_claude.pricing import load_price_table

    class Counting(httpx.HTTPTransport):
        def __init__(self) -> None:
            super().__init__()
            self.lock = threading.Lock()
            self.now = self.most = 0

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            try:
                response = super().handle_request(request)
                response.read()
                return response
            finally:
                with self.lock:
                    self.now -= 1

    def run(sim: Simulator, concurrency: int) -> tuple[list[object], int]:
        transport = Counting()
        scratch = Ledger(":memory:", prices=load_price_table())
        with AdminClient(sim.url, KEY, transport=transport) as client:
            samples = collect(
                since=SINCE,
                until=UNTIL,
                usage=UsageReport(
                    client, scratch, since=SINCE, interval_s=3600, clock=NOW.timestamp
                ),
                cost=CostReport(client, scratch, since=SINCE, clock=NOW.timestamp),
                claude_code=ClaudeCodeReport(client, scratch, since=SINCE, clock=NOW.timestamp),
                concurrency=concurrency,
            )
        return list(samples), transport.most

    with Simulator(
        seed=11,
        api_key=KEY,
        clock=NOW.timestamp,
        data_start=datetime(2026, 10, 20, tzinfo=UTC),
        latency_s=0.05,
    ) as slow:
        sequential, most = run(slow, 1)
        assert most == 1
        concurrent, most = run(slow, 3)
        assert 2 <= most <= 3
        assert len(slow.requests) == 2 * MINIMUM_REQUESTS
    assert concurrent == sequential  # same pairs, same order


def test_concurrent_backfill_retries_rate_limits(sim: Simulator, tmp_path: Path) -> None:
    proc = _backfill(sim, tmp_path, tmp_path / "a.om", "--concurrency", "1")
    assert proc.returncode == 0, proc.stderr
    before = len(sim.requests)
    sim.inject(429, count=2, endpoint="usage_report/claude_code", retry_after=0.2)
    sim.inject(529, count=1, endpoint="cost_report")
    proc = _backfill(sim, tmp_path, tmp_path / "b.om")
    assert proc.returncode == 0, proc.stderr
    assert len(sim.requests) - before == MINIMUM_REQUESTS + 3
    assert [r.status for r in sim.requests[before:]].count(429) == 2
    assert (tmp_path / "b.om").read_bytes() == (tmp_path / "a.om").read_bytes()


def test_failing_source_is_reported_and_nothing_written(sim: Simulator, tmp_path: Path) -> None:
    # Claude Code fails at once, usage later: the first source in order (usage) is reported,
    # whatever finished first, and no partial file is left for promtool to import.
    sim.inject(403, endpoint="usage_report/messages", delay_s=0.3)
    sim.inject(404, endpoint="usage_report/claude_code")
    out = tmp_path / "b.om"
    proc = _backfill(sim, tmp_path, out)
    assert proc.returncode == 1
    assert "otel-claude: usage_report/messages: HTTP 403" in proc.stderr, proc.stderr
    assert KEY not in proc.stderr
    assert not out.exists()
    assert len(sim.requests) <= MINIMUM_REQUESTS


def test_backfill_concurrency_flag_is_bounded(sim: Simulator, tmp_path: Path) -> None:
    for bad in ("0", "17", "many"):
        proc = _backfill(sim, tmp_path, tmp_path / "x.om", "--concurrency", bad)
        assert proc.returncode == 2
        assert "--concurrency" in proc.stderr
