"""``otel-claude check --online``: try what the configuration points at, without side effects.

Each check returns a short result line; a failing check names the setting to fix. Nothing
here writes state, and the Admin API costs one request (a one-item workspace list).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from otel_claude.admin.client import AdminApiError, AdminClient
from otel_claude.config import Settings
from otel_claude.sources.transcripts import transcript_files


@dataclass(frozen=True)
class Finding:
    """One online check: ``ok`` or the setting to fix and why."""

    name: str
    ok: bool
    detail: str
    setting: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        where = f" ({self.setting})" if self.setting and not self.ok else ""
        return f"  {mark} {self.name}: {self.detail}{where}"


def online_checks(
    settings: Settings,
    env: Mapping[str, str],
    *,
    transport: httpx.BaseTransport | None = None,
) -> list[Finding]:
    """Run every online check that applies to the configuration."""
    return [
        _listen(settings),
        _admin(settings, transport),
        _transcripts(settings),
        _otlp(env),
    ]


def _listen(settings: Settings) -> Finding:
    family = socket.AF_INET6 if ":" in settings.listen_host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((settings.listen_host, settings.listen_port))
    except OSError as exc:
        return Finding(
            "listen address",
            False,
            f"cannot bind {settings.listen}: {exc.strerror} (is another exporter running?)",
            "OTEL_CLAUDE_LISTEN",
        )
    return Finding("listen address", True, f"{settings.listen} is free")


def _admin(settings: Settings, transport: httpx.BaseTransport | None) -> Finding:
    if not settings.admin_api_key:
        return Finding("Admin API", True, "off (no ANTHROPIC_ADMIN_API_KEY)")
    try:
        with AdminClient(
            settings.admin_api_url,
            settings.admin_api_key,
            timeout=10.0,
            max_retries=1,
            transport=transport,
        ) as client:
            client.get("workspaces", [("limit", "1")])
    except AdminApiError as exc:
        hint = {
            "unauthorized": "the key is wrong or revoked (an Admin key starts sk-ant-admin01-)",
            "forbidden": "the key lacks admin permission",
            "not_found": "the URL does not serve the Admin API",
        }.get(exc.reason, str(exc))
        setting = (
            "OTEL_CLAUDE_ADMIN_API_URL"
            if exc.reason in ("not_found", "connection")
            else "ANTHROPIC_ADMIN_API_KEY"
        )
        return Finding("Admin API", False, f"{exc.reason}: {hint}", setting)
    return Finding("Admin API", True, f"key accepted by {settings.admin_api_url}")


def _transcripts(settings: Settings) -> Finding:
    if not settings.transcripts_enabled:
        return Finding("transcripts", True, "off (OTEL_CLAUDE_TRANSCRIPTS=off)")
    roots = [r for r in settings.transcript_roots if r.is_dir()]
    if not roots:
        listed = ", ".join(str(r) for r in settings.transcript_roots)
        return Finding(
            "transcripts", False, f"no projects/ directory in {listed}", "CLAUDE_CONFIG_DIR"
        )
    unreadable = [r for r in roots if not os.access(r, os.R_OK | os.X_OK)]
    if unreadable:
        return Finding("transcripts", False, f"cannot read {unreadable[0]}", "CLAUDE_CONFIG_DIR")
    files = sum(1 for _ in transcript_files(roots))
    return Finding(
        "transcripts", True, f"{files} transcript files in {', '.join(str(r) for r in roots)}"
    )


def _otlp(env: Mapping[str, str]) -> Finding:
    from otel_claude.exposition.otlp import otlp_enabled, otlp_protocol

    if not otlp_enabled(env):
        return Finding("OTLP export", True, "off (no OTEL_EXPORTER_OTLP_ENDPOINT)")
    endpoint = (
        env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or ""
    )
    protocol = otlp_protocol(env)
    if not endpoint:
        endpoint = "http://localhost:4317" if protocol == "grpc" else "http://localhost:4318"
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=5):
            pass
    except OSError as exc:
        return Finding(
            "OTLP export",
            False,
            f"cannot connect to {endpoint}: {exc.strerror or exc}",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        )
    return Finding("OTLP export", True, f"{protocol} endpoint {endpoint} reachable")
