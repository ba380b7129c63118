"""A real Prometheus scrapes the real exporter; PromQL answers must equal the ground truth.

This is the path users take (scrape → TSDB → PromQL), so it catches what a unit test of the
collector cannot: exposition the server rejects, float formatting that loses integers,
counter names Prometheus stores differently, and lint problems ``promtool`` reports.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import need_binary
from tests.procs import Exporter, post_lines, running_exporter, running_prometheus
from tests.streams import Truth, generate

pytestmark = pytest.mark.e2e

TOKENS_BY_TYPE = "sum by (model, token_type) (claude_agent_tokens_total)"


def _values(result: list[dict[str, Any]], *labels: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(item["metric"][label] for label in labels): float(item["value"][1]) for item in result
    }


@pytest.fixture
def prometheus_bin() -> str:
    """Resolved before the exporter starts, so a missing binary skips without any setup."""
    return need_binary("prometheus")


@pytest.fixture
def promtool_bin() -> str:
    """See ``prometheus_bin``."""
    return need_binary("promtool")


@pytest.fixture
def loaded_exporter(tmp_path: Path) -> Iterator[tuple[Exporter, Truth]]:
    """An exporter that has taken in the generated stream, with the stream's truth."""
    lines, truth = generate(seed=21, sessions=25)
    with running_exporter(tmp_path) as exporter:
        totals = post_lines(exporter.url, lines, batches=4)
        assert totals["accepted"] == truth.usage_lines
        yield exporter, truth


def test_promql_matches_truth(
    prometheus_bin: str, tmp_path: Path, loaded_exporter: tuple[Exporter, Truth]
) -> None:
    exporter, truth = loaded_exporter
    target = exporter.url.removeprefix("http://")
    with running_prometheus(prometheus_bin, tmp_path, [target]) as prometheus:
        up = prometheus.wait_for('up{job="otel-claude"} == 1')
        assert _values(up, "instance") == {(target,): 1.0}

        tokens = _values(prometheus.wait_for(TOKENS_BY_TYPE), "model", "token_type")
        assert all(v.is_integer() for v in tokens.values()), tokens
        assert {k: int(v) for k, v in tokens.items() if v} == dict(+truth.tokens)

        cost = _values(
            prometheus.query("sum by (cost_source) (claude_agent_cost_usd_total)"), "cost_source"
        )
        assert set(cost) == {("reported",), ("estimated",)}
        expected = {
            "reported": sum(truth.reported_pico.values()) / 1e12,
            "estimated": sum(truth.estimated_pico().values()) / 1e12,
        }
        for source, usd in expected.items():
            assert math.isclose(cost[(source,)], usd, rel_tol=1e-9), (source, cost, usd)

        outcomes = _values(prometheus.query("claude_agent_conversations_total"), "outcome")
        assert outcomes == {(o,): float(n) for o, n in truth.conversations.items()}


def test_promtool_check_metrics_is_clean(
    promtool_bin: str, loaded_exporter: tuple[Exporter, Truth]
) -> None:
    exporter, _truth = loaded_exporter
    text = httpx.get(f"{exporter.url}/metrics", timeout=10.0).content
    assert b"claude_agent_tokens_total{" in text  # linting an empty page would prove nothing
    checked = subprocess.run(
        [promtool_bin, "check", "metrics"],
        input=text,
        capture_output=True,
        timeout=30,
    )
    problems = (checked.stdout + checked.stderr).decode(errors="replace").strip()
    assert checked.returncode == 0 and not problems, problems
