"""The command line: check reports every problem by name, ingest/report give exact totals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from otel_claude.config import load_settings
from otel_claude.errors import ConfigError
from tests.streams import generate

SECRET = "sk-ant-admin01-very-secret-value"


def run(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "ANTHROPIC_", "CLAUDE_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "otel_claude", *args],
        env={**base, **(env or {})},
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_check_reports_every_problem_by_setting(tmp_path: Path) -> None:
    config = tmp_path / "otel-claude.toml"
    config.write_text('bogus = 1\n[ledger]\ndedup_horizon_days = "soon"\n')
    proc = run(
        "check",
        "--config",
        str(config),
        env={
            "OTEL_CLAUDE_LISTEN": "0.0.0.0:9477",
            "OTEL_CLAUDE_POLL_INTERVAL": "often",
            "OTEL_CLAUDE_ADMIN_SINCE": "yesterday",
            "OTEL_CLAUDE_ADMIN_API_URL": "ftp://x",
            "ANTHROPIC_ADMIN_API_KEY": SECRET,
            "OTEL_CLAUDE_STATE_DIR": str(tmp_path / "state"),
        },
    )
    assert proc.returncode == 1
    for setting in (
        "bogus",
        "ledger.dedup_horizon_days",
        "OTEL_CLAUDE_POLL_INTERVAL",
        "OTEL_CLAUDE_ADMIN_SINCE",
        "OTEL_CLAUDE_ADMIN_API_URL",
        "OTEL_CLAUDE_LISTEN",
    ):
        assert setting in proc.stderr, setting
    assert "Traceback" not in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout


def test_check_ok_never_prints_secrets(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(SECRET + "\n")
    proc = run(
        "check",
        "--state-dir",
        str(tmp_path / "s"),
        env={
            "ANTHROPIC_ADMIN_API_KEY_FILE": str(key_file),
            "OTEL_CLAUDE_INGEST_TOKEN": "tok-123456789",
            "OTEL_CLAUDE_LISTEN": "0.0.0.0:9477",
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert "configuration ok" in proc.stdout
    assert "key set" in proc.stdout
    assert SECRET not in proc.stdout and "tok-123456789" not in proc.stdout


def test_missing_secret_file_is_named(tmp_path: Path) -> None:
    proc = run(
        "check",
        env={
            "ANTHROPIC_ADMIN_API_KEY_FILE": str(tmp_path / "nope"),
            "OTEL_CLAUDE_STATE_DIR": str(tmp_path),
        },
    )
    assert proc.returncode == 1
    assert "ANTHROPIC_ADMIN_API_KEY_FILE: cannot read secret file" in proc.stderr


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'listen = "127.0.0.1:1111"\nstate_dir = "/from/file"\n[ledger]\ndedup_horizon_days = 7\n'
    )
    env = {"OTEL_CLAUDE_CONFIG": str(config), "OTEL_CLAUDE_LISTEN": "127.0.0.1:2222"}
    settings = load_settings(env=env, flags={"listen": "127.0.0.1:3333"})
    assert settings.listen_port == 3333
    assert str(settings.state_dir) == "/from/file"
    assert settings.dedup_horizon_days == 7
    assert load_settings(env=env).listen_port == 2222


def test_beyond_loopback_needs_token() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(env={"OTEL_CLAUDE_LISTEN": "[::]:9477"})
    assert err.value.problems[0].setting == "OTEL_CLAUDE_LISTEN"
    assert load_settings(env={"OTEL_CLAUDE_LISTEN": "[::1]:9477"}).listen_host == "::1"


def test_ingest_file_then_report(tmp_path: Path) -> None:
    lines, truth = generate(seed=51, sessions=15)
    stream = tmp_path / "run.ndjson"
    stream.write_bytes(b"\n".join(lines))  # no final newline: the last line still counts
    state = ["--state-dir", str(tmp_path / "state")]
    first = run("ingest", str(stream), *state)
    assert first.returncode == 3  # some lines were rejected
    summary = json.loads(first.stdout)
    assert summary["accepted"] == truth.usage_lines
    assert Counter(r["reason"] for r in summary["rejected"]) == truth.rejected
    second = run("ingest", "-", *state, stdin=b"\n".join(lines))
    assert json.loads(second.stdout)["duplicates"] == truth.usage_lines
    report = run("report", "--state", "--json", *state)
    assert report.returncode == 0, report.stderr
    got: Counter[tuple[str, str]] = Counter()
    for row in json.loads(report.stdout):
        for token_type, value in row["tokens"].items():
            got[(row["model"], token_type)] += value
    assert +got == +truth.tokens
    table = run("report", "--state", *state)
    assert table.returncode == 0 and "claude-sonnet-4-5" in table.stdout


def test_report_without_ledger(tmp_path: Path) -> None:
    proc = run("report", "--state", "--state-dir", str(tmp_path / "empty"))
    assert proc.returncode == 1 and "nothing counted yet" in proc.stderr


def test_no_command_prints_help() -> None:
    proc = run()
    assert proc.returncode == 2 and "serve" in proc.stdout


def test_unknown_otlp_protocol_is_a_config_problem(tmp_path: Path) -> None:
    proc = run("check", "--state-dir", str(tmp_path), env={"OTEL_EXPORTER_OTLP_PROTOCOL": "grcp"})
    assert proc.returncode == 1
    assert "OTEL_EXPORTER_OTLP_PROTOCOL: expected http/protobuf or grpc" in proc.stderr


def test_sigterm_is_prompt_even_when_otlp_endpoint_is_down(tmp_path: Path) -> None:
    """A dead collector must not hold shutdown past the container's stop grace period."""
    import time

    from tests.procs import free_port, post_lines, running_exporter

    dead = f"http://127.0.0.1:{free_port()}"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": dead, "OTEL_METRIC_EXPORT_INTERVAL": "60000"}
    with running_exporter(tmp_path, env) as exporter:
        lines, _truth = generate(seed=52, sessions=3, garbage=False)
        post_lines(exporter.url, lines, batches=1)
        started = time.monotonic()
        code = exporter.stop(timeout=30)
        elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < 8.0, f"shutdown took {elapsed:.1f}s"


def test_price_overrides_from_config(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        '[pricing.models."claude-sonnet-4-5"]\ninput = 4.0\n'
        '[pricing.models."my-fine-tune"]\ninput = 1.0\noutput = 2.0\n'
    )
    proc = run("check", "--config", str(good), "--state-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "19 models" in proc.stdout  # 18 shipped + the added one
    bad = tmp_path / "bad.toml"
    bad.write_text('[pricing.models."claude-sonnet-4-5"]\ninput = -1\n')
    proc = run("check", "--config", str(bad), "--state-dir", str(tmp_path))
    assert proc.returncode == 1
    assert "pricing:" in proc.stderr and "claude-sonnet-4-5" in proc.stderr


def test_ctrl_c_exits_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from otel_claude import cli

    def interrupted(*_args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_report", interrupted)
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path))
    assert cli.main(["report", "--state-dir", str(tmp_path / "state")]) == 130
    assert capsys.readouterr().err == "otel-claude: interrupted\n"
