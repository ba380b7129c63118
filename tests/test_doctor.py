"""`otel-claude check`: a matrix of bad settings, each named; `--online` tries the real parts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from otel_claude.simulator import Simulator
from tests.procs import free_port

KEY = "sk-ant-admin01-doctor-test"


def check(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ANTHROPIC_", "CLAUDE_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "otel_claude", "check", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "setting", "expected"),
    [
        ({"OTEL_CLAUDE_LISTEN": "nope"}, "OTEL_CLAUDE_LISTEN", "expected HOST:PORT"),
        ({"OTEL_CLAUDE_LISTEN": "0.0.0.0:9477"}, "OTEL_CLAUDE_LISTEN", "OTEL_CLAUDE_INGEST_TOKEN"),
        ({"OTEL_CLAUDE_POLL_INTERVAL": "-5"}, "OTEL_CLAUDE_POLL_INTERVAL", "at least"),
        ({"OTEL_CLAUDE_ADMIN_SINCE": "2026-13-01"}, "OTEL_CLAUDE_ADMIN_SINCE", "RFC 3339"),
        (
            {"OTEL_CLAUDE_ADMIN_API_URL": "api.anthropic.com"},
            "OTEL_CLAUDE_ADMIN_API_URL",
            "http(s) URL",
        ),
        (
            {"OTEL_CLAUDE_ADMIN_GROUP_BY": "model,colour"},
            "OTEL_CLAUDE_ADMIN_GROUP_BY",
            "unknown: colour",
        ),
        ({"OTEL_CLAUDE_ACTOR_LABELS": "maybe"}, "OTEL_CLAUDE_ACTOR_LABELS", "hash, plain"),
        ({"OTEL_CLAUDE_TRANSCRIPTS": "sometimes"}, "OTEL_CLAUDE_TRANSCRIPTS", "on/off"),
        ({"OTEL_CLAUDE_INGEST_MAX_BYTES": "lots"}, "OTEL_CLAUDE_INGEST_MAX_BYTES", "a number"),
        ({"OTEL_CLAUDE_DEDUP_HORIZON_DAYS": "0"}, "OTEL_CLAUDE_DEDUP_HORIZON_DAYS", "at least"),
        ({"OTEL_CLAUDE_LOG_LEVEL": "loud"}, "OTEL_CLAUDE_LOG_LEVEL", "debug, info"),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "http/protobuf or grpc",
        ),
        (
            {"OTEL_CLAUDE_INGEST_TOKEN_FILE": "/nonexistent/token"},
            "OTEL_CLAUDE_INGEST_TOKEN_FILE",
            "cannot read",
        ),
        (
            {"OTEL_CLAUDE_PRICES_FILE": "/nonexistent/prices.toml"},
            "OTEL_CLAUDE_PRICES_FILE",
            "does not exist",
        ),
    ],
)
def test_each_bad_setting_is_named(
    env: dict[str, str], setting: str, expected: str, tmp_path: Path
) -> None:
    proc = check(env={"OTEL_CLAUDE_STATE_DIR": str(tmp_path), **env})
    assert proc.returncode == 1
    assert setting in proc.stderr and expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_online_all_good(tmp_path: Path) -> None:
    (tmp_path / "claude" / "projects" / "-p").mkdir(parents=True)
    (tmp_path / "claude" / "projects" / "-p" / "s.jsonl").write_text("{}\n")
    with Simulator(api_key=KEY) as sim, socket.socket() as collector:
        collector.bind(("127.0.0.1", 0))
        collector.listen()
        env = {
            "OTEL_CLAUDE_STATE_DIR": str(tmp_path / "s"),
            "ANTHROPIC_ADMIN_API_KEY": KEY,
            "OTEL_CLAUDE_ADMIN_API_URL": sim.url,
            "CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.getsockname()[1]}",
            "OTEL_CLAUDE_LISTEN": f"127.0.0.1:{free_port()}",
        }
        proc = check("--online", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok   Admin API: key accepted" in proc.stdout
    assert "ok   transcripts: 1 transcript files" in proc.stdout
    assert "ok   OTLP export" in proc.stdout
    assert KEY not in proc.stdout + proc.stderr


def test_online_failures_name_the_setting(tmp_path: Path) -> None:
    wrong = "sk-ant-admin01-wrong-key-value"
    with Simulator(api_key=KEY) as sim, socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = {
            "OTEL_CLAUDE_STATE_DIR": str(tmp_path / "s"),
            "ANTHROPIC_ADMIN_API_KEY": wrong,
            "OTEL_CLAUDE_ADMIN_API_URL": sim.url,
            "CLAUDE_CONFIG_DIR": str(tmp_path / "none"),
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
            "OTEL_CLAUDE_LISTEN": f"127.0.0.1:{busy.getsockname()[1]}",
        }
        proc = check("--online", env=env)
    assert proc.returncode == 3
    out = proc.stdout
    assert "FAIL Admin API: unauthorized" in out and "(ANTHROPIC_ADMIN_API_KEY)" in out
    assert "FAIL transcripts" in out and "(CLAUDE_CONFIG_DIR)" in out
    assert "FAIL OTLP export" in out and "(OTEL_EXPORTER_OTLP_ENDPOINT)" in out
    assert "FAIL listen address" in out and "(OTEL_CLAUDE_LISTEN)" in out
    assert wrong not in out + proc.stderr
