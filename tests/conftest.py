"""Shared fixtures: a fresh ledger per test, the shipped price table, stream helpers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from otel_claude.ledger import Ledger
from otel_claude.pricing import PriceTable, load_price_table


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never inherit OTEL_*/ANTHROPIC_*/CLAUDE_* settings or proxies from the shell,
    and never read the developer's real ~/.claude (HOME points at an empty directory)."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "ANTHROPIC_", "CLAUDE_")) or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="session")
def prices() -> PriceTable:
    return load_price_table()


@pytest.fixture
def make_ledger(tmp_path: Path, prices: PriceTable) -> Iterator[Callable[..., Ledger]]:
    opened: list[Ledger] = []

    def make(name: str = "ledger.sqlite3", **kwargs: object) -> Ledger:
        kwargs.setdefault("prices", prices)
        ledger = Ledger(tmp_path / name, **kwargs)  # type: ignore[arg-type]
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        try:
            ledger.close()
        except Exception:
            pass


def need_binary(name: str) -> str:
    """Path of a real tool; skip without it locally, fail in CI (which installs it)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (make test installs it as root)")
        pytest.skip(f"{name} not installed")
    return path
