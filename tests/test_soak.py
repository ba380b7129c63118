"""The short soak: steady ingest, scrapes and polling with zero errors, exact totals, flat RSS.

The long run (10 minutes at 5,000 msg/s) is ``python bench/soak.py``; this is its CI version.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
def test_short_soak() -> None:
    spec = importlib.util.spec_from_file_location("soak", ROOT / "bench" / "soak.py")
    assert spec is not None and spec.loader is not None
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    verdict = soak.run(seconds=15, rate=2000, report_every=5, rss_tolerance=0.25)
    assert verdict["errors"] == 0 and verdict["scrape_errors"] == 0
    assert verdict["exact"], "totals differ from the independently computed truth"
    assert verdict["rss_flat"], verdict["rows"]
