"""The documented offline example runs and prints the hand-computed totals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_replay_example_prints_exact_totals() -> None:
    proc = subprocess.run(
        [sys.executable, "examples/replay_stream.py", "examples/sample-stream.ndjson"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    doc = json.loads(proc.stdout)
    # Sonnet: two steps (msg_01Rws… streamed twice, output 1 then 87; msg_01Final…) agree
    # with the result. Haiku: one subagent step (812 in / 25 out) but the result's
    # modelUsage says 1950 / 310 — the result total wins, the step is not added on top.
    assert doc["tokens"] == {
        "claude-sonnet-4-5": {
            "input": 8,
            "output": 101,
            "cache_read": 32563,
            "cache_creation_5m": 3237,
        },
        "claude-haiku-4-5": {"input": 1950, "output": 310},
    }
    # $3/$15/$0.30/$3.75 per MTok: 24 + 1515 + 9768.9 + 12138.75 micro-dollars.
    assert doc["cost_usd"]["claude-sonnet-4-5 (estimated)"] == 0.02344665
    assert doc["cost_usd"]["claude-haiku-4-5 (estimated)"] == 0.0035  # 1950 x $1 + 310 x $5
    assert doc["cost_usd"]["claude-sonnet-4-5 (reported)"] == 0.0311184
    assert doc["cost_usd"]["claude-haiku-4-5 (reported)"] == 0.00411
