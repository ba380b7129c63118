"""202 means durable: a kill -9 of the exporter right after an answer loses nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.procs import exporter_env, post_lines, running_exporter
from tests.streams import generate


def _tokens(url: str) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        if family.name == "claude_agent_tokens":
            for sample in family.samples:
                out[(sample.labels["model"], sample.labels["token_type"])] += int(sample.value)
    return out


def test_kill_9_after_202_then_restart(tmp_path: Path) -> None:
    lines, truth = generate(seed=61, sessions=30)
    half = len(lines) // 2
    with running_exporter(tmp_path) as first:
        post_lines(first.url, lines[:half], batches=3)
        before = _tokens(first.url)
        first.proc.send_signal(signal.SIGKILL)
        assert first.proc.wait(timeout=10) == -signal.SIGKILL
    assert sum(before.values()) > 0
    with running_exporter(tmp_path) as second:
        assert _tokens(second.url) == before  # counters continue from committed totals
        answer = post_lines(second.url, lines, batches=5)  # the client re-sends everything
        assert _tokens(second.url) == +truth.tokens
        assert answer["accepted"] + answer["duplicates"] == truth.usage_lines


def test_local_ingest_refuses_a_state_dir_in_use(tmp_path: Path) -> None:
    lines, truth = generate(seed=62, sessions=5, garbage=False)
    stream = tmp_path / "run.ndjson"
    stream.write_bytes(b"\n".join(lines) + b"\n")
    with running_exporter(tmp_path) as exporter:
        env = exporter_env(tmp_path)
        base = [sys.executable, "-m", "otel_claude", "ingest", str(stream)]
        local = subprocess.run(
            [*base, "--state-dir", str(exporter.state_dir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert local.returncode == 1
        assert "another otel-claude process is using" in local.stderr
        remote = subprocess.run(
            [*base, "--url", exporter.url], env=env, capture_output=True, text=True, timeout=60
        )
        assert remote.returncode == 0, remote.stderr
        assert json.loads(remote.stdout)["accepted"] == truth.usage_lines
        assert _tokens(exporter.url) == +truth.tokens
        # `report` reads the ledger while the server keeps it (read-only, no lock needed).
        report = subprocess.run(
            [
                sys.executable,
                "-m",
                "otel_claude",
                "report",
                "--state",
                "--json",
                "--state-dir",
                str(exporter.state_dir),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert report.returncode == 0, report.stderr
        reported: Counter[tuple[str, str]] = Counter()
        for row in json.loads(report.stdout):
            for token_type, value in row["tokens"].items():
                reported[(row["model"], token_type)] += value
        assert +reported == +truth.tokens
