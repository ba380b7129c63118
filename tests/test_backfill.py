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


@pytest.mark.e2e
def test_backfill_imports_exact_totals(sim: Simulator, tmp_path: Path) -> None:
    promtool = need_binary("promtool")
    prometheus = need_binary("prometheus")
    out = tmp_path / "backfill.om"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ANTHROPIC_"))}
    env.update(
        ANTHROPIC_ADMIN_API_KEY=KEY,
        OTEL_CLAUDE_ADMIN_API_URL=sim.url,
        OTEL_CLAUDE_ACTOR_LABELS="plain",
        OTEL_CLAUDE_STATE_DIR=str(tmp_path / "s"),
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "otel_claude",
            "backfill",
            "--since",
            "2026-11-07",
            "--until",
            "2026-11-10",
            "--out",
            str(out),
            "--label",
            "job=otel-claude",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
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
