"""``otel-claude demo``: every metric family with data within a minute, no key, no network.

It starts the bundled Admin API simulator on loopback, writes a small Claude Code transcript
history into the demo directory, and runs the real exporter wired to both. While it runs, a
traffic thread appends transcript lines and posts Agent SDK messages to ``/v1/events`` every
few seconds, so counters keep moving on graphs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path

import httpx

from otel_claude.config import Settings
from otel_claude.simulator import Simulator

DEMO_KEY = "sk-ant-admin01-demo-simulator"
TRAFFIC_EVERY_S = 3.0
MODELS = ("claude-sonnet-4-5-20250929", "claude-opus-4-6", "claude-haiku-4-5-20251001")


def _assistant(n: int, session: str, when: datetime, *, transcript: bool) -> dict[str, object]:
    model = MODELS[n % len(MODELS)]
    usage = {
        "input_tokens": 3 + n % 7,
        "output_tokens": 40 + 13 * (n % 11),
        "cache_read_input_tokens": 12_000 + 97 * n % 5000,
        "cache_creation_input_tokens": 600 + n % 300,
        "cache_creation": {
            "ephemeral_5m_input_tokens": 600 + n % 300,
            "ephemeral_1h_input_tokens": 0,
        },
        "service_tier": "standard",
    }
    message = {
        "id": f"msg_demo_{'t' if transcript else 's'}{n:08d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "usage": usage,
    }
    if transcript:
        return {
            "parentUuid": None,
            "isSidechain": False,
            "userType": "external",
            "cwd": "/home/demo/acme-api",
            "sessionId": session,
            "version": "2.1.114",
            "message": message,
            "requestId": f"req_demo_{n:08d}",
            "type": "assistant",
            "uuid": f"u-demo-{n}",
            "timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
    return {
        "type": "assistant",
        "message": message,
        "session_id": session,
        "uuid": f"u-sdk-{n}",
        "parent_tool_use_id": None,
    }


def _sdk_call(ids: Iterator[int], session: str) -> list[dict[str, object]]:
    """One ``query()``: init, two steps, and a result whose modelUsage adds a subagent."""
    steps = [_assistant(next(ids), session, datetime.now(UTC), transcript=False) for _ in range(2)]
    n = next(ids)
    totals: dict[str, list[int]] = {}  # model -> input, output, cache read, cache creation
    for step in steps:
        message = step["message"]
        assert isinstance(message, dict)
        u = message["usage"]
        row = totals.setdefault(str(message["model"]), [0, 0, 0, 0])
        row[0] += u["input_tokens"]
        row[1] += u["output_tokens"]
        row[2] += u["cache_read_input_tokens"]
        row[3] += u["cache_creation_input_tokens"]
    subagent = totals.setdefault("claude-haiku-4-5-20251001", [0, 0, 0, 0])
    subagent[0] += 900 + n % 100  # usage only the result reports
    subagent[1] += 120
    model_usage = {
        model: {
            "inputTokens": t[0],
            "outputTokens": t[1],
            "cacheReadInputTokens": t[2],
            "cacheCreationInputTokens": t[3],
            "webSearchRequests": 0,
            "costUSD": 0.0123,
        }
        for model, t in totals.items()
    }
    result: dict[str, object] = {
        "type": "result",
        "subtype": "success" if n % 5 else "error_max_turns",
        "session_id": session,
        "uuid": f"r-demo-{n}",
        "is_error": n % 5 == 0,
        "num_turns": 2,
        "duration_ms": 4000,
        "modelUsage": model_usage,
        "total_cost_usd": round(0.0123 * len(model_usage), 7),
    }
    init: dict[str, object] = {
        "type": "system",
        "subtype": "init",
        "session_id": session,
        "uuid": f"i-demo-{n}",
        "model": MODELS[0],
        "cwd": "/srv/agent",
    }
    return [init, *steps, result]


def write_history(claude_dir: Path, ids: Iterator[int], *, sessions: int = 6) -> Path:
    """A small transcript history spread over the last days; returns a file to append to."""
    project = claude_dir / "projects" / "-home-demo-acme-api"
    project.mkdir(parents=True, exist_ok=True)
    start = datetime.now(UTC) - timedelta(days=2)
    path = project
    for s in range(sessions):
        path = project / f"demo-session-{s}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for i in range(20):
                when = start + timedelta(hours=8 * s, minutes=3 * i)
                line = _assistant(next(ids), f"demo-session-{s}", when, transcript=True)
                f.write(json.dumps(line, separators=(",", ":")) + "\n")
    return path


def _traffic(stop: threading.Event, url: str, live_file: Path, ids: Iterator[int]) -> None:
    with httpx.Client(timeout=10.0) as client:
        session = 0
        while not stop.wait(TRAFFIC_EVERY_S):
            line = _assistant(next(ids), "demo-live", datetime.now(UTC), transcript=True)
            with live_file.open("a", encoding="utf-8") as f:
                f.write(json.dumps(line, separators=(",", ":")) + "\n")
            session += 1
            body = "\n".join(json.dumps(m) for m in _sdk_call(ids, f"sdk-{session}"))
            try:
                client.post(f"{url}/v1/events", content=body.encode())
            except httpx.HTTPError:
                continue  # the exporter is stopping; the loop ends with it


def _start_prometheus(url: str, workdir: Path) -> subprocess.Popen[bytes] | None:
    binary = shutil.which("prometheus")
    if binary is None:
        return None
    rules = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "rules"
    config = workdir / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
                "rule_files": [str(p) for p in sorted(rules.glob("*.yml"))],
                "scrape_configs": [
                    {
                        "job_name": "otel-claude",
                        "static_configs": [{"targets": [url.removeprefix("http://")]}],
                    }
                ],
            }
        )
    )
    return subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            "--web.listen-address=127.0.0.1:9090",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run_demo(settings: Settings, *, state_dir: Path | None, with_prometheus: bool) -> int:
    """Run the demo until interrupted."""
    from dataclasses import replace

    from otel_claude.cli import run_serve

    workdir = Path(tempfile.mkdtemp(prefix="otel-claude-demo-"))
    ids = count(1)
    claude_dir = workdir / "claude"
    live_file = write_history(claude_dir, ids)
    since = (datetime.now(UTC) - timedelta(days=3)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    simulator = Simulator(seed=1, api_key=DEMO_KEY)
    api_url = simulator.start()
    prometheus: subprocess.Popen[bytes] | None = None
    demo = replace(
        settings,
        state_dir=state_dir or workdir / "state",
        admin_api_key=DEMO_KEY,
        admin_api_url=api_url,
        admin_since=since,
        poll_interval=5.0,
        actor_labels="plain",
        transcripts_enabled=True,
        transcript_roots=(claude_dir / "projects",),
        budget_organization=settings.budget_organization or 250.0,
    )

    def started(stop: threading.Event, url: str) -> None:
        nonlocal prometheus
        if with_prometheus:
            prometheus = _start_prometheus(url, workdir)
        print(_next_steps(url, api_url, prometheus is not None, with_prometheus), flush=True)
        _traffic(stop, url, live_file, ids)

    try:
        return run_serve(demo, {}, on_started=started)
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(timeout=10)
        simulator.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _next_steps(url: str, api_url: str, prometheus: bool, wanted: bool) -> str:
    lines = [
        "",
        "otel-claude demo is running (Ctrl-C to stop). Within a minute every family has data:",
        f"  landing page   {url}/",
        f"  metrics        {url}/metrics",
        f"  Admin API      {api_url} (simulated; key {DEMO_KEY})",
    ]
    if prometheus:
        lines.append("  Prometheus     http://127.0.0.1:9090 (scraping the demo, rules loaded)")
    elif wanted:
        lines.append("  Prometheus     not found on PATH (apt-get install prometheus)")
    lines += [
        "",
        "Next steps:",
        "  * Prometheus: add a scrape job",
        f"      - job_name: otel-claude\n        static_configs: [{{targets: "
        f"['{url.removeprefix('http://')}']}}]",
        "  * Grafana: Dashboards > New > Import, upload grafana/dashboards/*.json",
        "  * Real data: set ANTHROPIC_ADMIN_API_KEY, or point CLAUDE_CONFIG_DIR at your",
        "    Claude Code config, then run `otel-claude serve`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: otel-claude demo")
