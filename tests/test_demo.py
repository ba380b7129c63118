"""`otel-claude demo`: every metric family has data within a minute, with no key or network."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.procs import free_port

FAMILIES = {
    "anthropic_api_tokens": None,
    "anthropic_api_cost_usd": None,
    "anthropic_api_cost_month_to_date_usd": None,
    "anthropic_claude_code_sessions": None,
    "anthropic_api_workspace_info": None,
    "claude_agent_tokens": {"source": "transcript"},
    "claude_agent_cost_usd": {"cost_source": "reported"},
    "claude_agent_conversations": None,
}


def _missing(text: str) -> list[str]:
    seen: set[str] = set()
    for family in text_string_to_metric_families(text):
        want = FAMILIES.get(family.name, "absent")
        if want == "absent":
            continue
        for sample in family.samples:
            if sample.value > 0 and all(sample.labels.get(k) == v for k, v in (want or {}).items()):
                seen.add(family.name)
    ingest = any(
        s.labels.get("source") == "ingest" and s.value > 0
        for f in text_string_to_metric_families(text)
        if f.name == "claude_agent_tokens"
        for s in f.samples
    )
    return sorted(set(FAMILIES) - seen) + ([] if ingest else ["claude_agent_tokens{ingest}"])


def test_demo_fills_every_family(tmp_path: Path) -> None:
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ANTHROPIC_", "CLAUDE_"))
    }
    log = (tmp_path / "demo.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "otel_claude",
            "demo",
            "--listen",
            f"127.0.0.1:{port}",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        missing: list[str] = ["(not started)"]
        while missing:
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()
            assert time.monotonic() < deadline, f"still without data: {missing}"
            try:
                missing = _missing(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        log.close()
    assert code == 0
    output = (tmp_path / "demo.log").read_text()
    assert f"http://127.0.0.1:{port}/metrics" in output and "Next steps" in output
