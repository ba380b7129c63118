"""The /metrics contract: a golden file makes every rename or label change a reviewed diff."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from otel_claude.config import Settings
from otel_claude.exposition.admin import AdminCollector, Budgets
from otel_claude.exposition.families import FAMILIES, admin_families
from otel_claude.exposition.health import HealthCollector
from otel_claude.exposition.page import MetricsPage
from otel_claude.exposition.prometheus import LedgerCollector
from otel_claude.health import SourceHealth
from otel_claude.ledger import Ledger
from otel_claude.sources.ingest import iter_lines
from tests.conftest import need_binary
from tests.streams import generate

GOLDEN = Path(__file__).parent / "fixtures" / "metrics.golden.txt"


def _registry(ledger: Ledger) -> CollectorRegistry:
    """The collectors `serve` registers (process metrics aside), admin families included."""
    health = SourceHealth()
    health.enable("ingest", ready=True)
    families = FAMILIES + admin_families(Settings().admin_group_by, "hash")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector(ledger, families=families))
    registry.register(AdminCollector(budgets=Budgets(5000.0, {"wrkspc_01": 1200.0})))
    registry.register(HealthCollector(health))
    return registry


def _exposition(ledger: Ledger) -> str:
    registry = _registry(ledger)
    text = generate_latest(registry).decode()
    # The server's cached rendering sends the very same bytes.
    assert MetricsPage().render(registry, "").body().decode() == text
    # Volatile values: the database size and the interpreter version.
    text = re.sub(r"^(otel_claude_ledger_size_bytes) \S+$", r"\1 <size>", text, flags=re.M)
    return text.replace(
        f'python_version="{platform.python_version()}"', 'python_version="<python>"'
    )


def test_metrics_match_golden_file(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger(clock=lambda: 1_800_000_000.0)
    lines, _truth = generate(seed=5, sessions=6)
    ledger.apply([rec for _, rec in iter_lines(b"\n".join(lines), "ingest")], source="ingest")
    text = _exposition(ledger)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "run with UPDATE_GOLDEN=1 and review the diff"


def test_promtool_accepts_metrics(make_ledger: Callable[..., Ledger]) -> None:
    promtool = need_binary("promtool")
    ledger = make_ledger()
    lines, _truth = generate(seed=6, sessions=5)
    ledger.apply([rec for _, rec in iter_lines(b"\n".join(lines), "ingest")], source="ingest")
    registry = _registry(ledger)
    proc = subprocess.run(
        [promtool, "check", "metrics"],
        input=generate_latest(registry),
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == b"" and proc.stderr.strip() == b""
