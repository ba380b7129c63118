"""The whole stack for real: exporter fed by the Admin API simulator, a transcript history and
posted SDK messages; Prometheus scraping it with the project's rule files; Alertmanager
delivering to a webhook. Every dashboard query returns data, every recording rule produces
series, and a budget alert set low reaches the webhook."""

from __future__ import annotations

import importlib.util
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from otel_claude.simulator import Simulator
from tests.conftest import need_binary
from tests.history import generate_history
from tests.procs import post_lines, running_alertmanager, running_exporter, running_prometheus
from tests.streams import generate

ROOT = Path(__file__).resolve().parent.parent
RULES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
KEY = "sk-ant-admin01-e2e-stack"

pytestmark = pytest.mark.e2e


class Webhook:
    """Collects Alertmanager webhook posts."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.alerts.extend(json.loads(body).get("alerts", []))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


def _panel_queries() -> list[tuple[str, str, str]]:
    spec = importlib.util.spec_from_file_location("grafana_build", ROOT / "grafana" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.panel_queries())


def _recorded_names() -> list[str]:
    names = []
    for path in RULES:
        names += re.findall(r"^\s*-?\s*record:\s*(\S+)", path.read_text(), flags=re.M)
    return names


def test_stack_end_to_end(tmp_path: Path, webhook: Webhook) -> None:
    prometheus = need_binary("prometheus")
    alertmanager = need_binary("prometheus-alertmanager")
    assert RULES, "rule files are missing"
    generate_history(tmp_path / "claude", seed=4, target_bytes=2_000_000)
    am_config = {
        "route": {
            "receiver": "hook",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "hook", "webhook_configs": [{"url": webhook.url}]}],
    }
    with Simulator(seed=9, api_key=KEY) as sim:
        config = tmp_path / "otel-claude.toml"
        workspace = sim.workspaces[0]["id"]
        config.write_text(
            "[admin.budgets]\norganization = 0.01\n"
            f'[admin.budgets.workspaces]\n"{workspace}" = 0.01\n'
        )
        # Start the Admin API counters a few days back, so Claude Code days are complete.
        since = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT00:00:00Z")
        env = {
            "OTEL_CLAUDE_ADMIN_SINCE": since,
            "ANTHROPIC_ADMIN_API_KEY": KEY,
            "OTEL_CLAUDE_ADMIN_API_URL": sim.url,
            "OTEL_CLAUDE_POLL_INTERVAL": "2",
            "OTEL_CLAUDE_CONFIG": str(config),
            "CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
            "OTEL_CLAUDE_TRANSCRIPTS": "on",
            "OTEL_CLAUDE_ADMIN_GROUP_BY": "model,workspace_id,api_key_id,service_tier,"
            "context_window,inference_geo",
            "OTEL_CLAUDE_ACTOR_LABELS": "plain",
        }
        with running_exporter(tmp_path, env) as exporter:
            lines, _truth = generate(seed=77, sessions=10)
            half = len(lines) // 2
            post_lines(exporter.url, lines[:half], batches=2)
            target = exporter.url.removeprefix("http://")
            with (
                running_alertmanager(alertmanager, tmp_path, am_config) as am,
                running_prometheus(
                    prometheus, tmp_path, [target], rule_files=RULES, alertmanagers=[am]
                ) as prom,
            ):
                prom.wait_for('up{job="otel-claude"} == 1')
                time.sleep(3)
                post_lines(exporter.url, lines[half:], batches=2)  # growth between scrapes
                time.sleep(4)  # several scrapes, so rate() and increase() have two points
                for name in _recorded_names():
                    assert prom.wait_for(name, timeout=30), f"recording rule {name} is empty"
                empty = [
                    f"{uid} / {title}: {expr}"
                    for uid, title, expr in _panel_queries()
                    if not prom.query(expr)
                ]
                assert not empty, "panel queries without data:\n" + "\n".join(empty)
                deadline = time.monotonic() + 60
                while not any(
                    a["labels"].get("alertname") == "AnthropicBudgetExceeded"
                    for a in webhook.alerts
                ):
                    assert time.monotonic() < deadline, "budget alert never reached the webhook"
                    time.sleep(0.5)
                fired = next(
                    a
                    for a in webhook.alerts
                    if a["labels"]["alertname"] == "AnthropicBudgetExceeded"
                )
                assert fired["status"] == "firing"
                assert fired["labels"]["severity"] == "critical"
                assert "runbook_url" in fired["annotations"]
