"""The landing page ``/``: exact figures from a hand-built view, figures equal to ``/metrics``
on a live exporter, and the page as a real headless Chromium renders it (with a screenshot)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from otel_claude.app import App, build_app
from otel_claude.config import load_settings
from otel_claude.health import SourceState
from otel_claude.landing import (
    BilledCost,
    LandingData,
    LandingView,
    SourceView,
    build_view,
    render_landing,
)
from otel_claude.server import ExporterServer, IngestEndpoint
from otel_claude.simulator import Simulator
from tests.conftest import need_binary
from tests.procs import ROOT, post_lines, running_exporter
from tests.streams import generate

KEY = "sk-ant-admin01-landing-test-key-never-shown"
INGEST_TOKEN = "landing-ingest-token-never-shown"
NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC).timestamp()
TYPES = ("input", "output", "cache_read", "cache_creation_5m", "cache_creation_1h")
ARTIFACTS = ROOT / "test-artifacts"
BROWSER_TIMEOUT_S = 60


# --- reading the page --------------------------------------------------------------------


@dataclass
class Figure:
    metric: str
    value: str | None
    text: str
    attrs: dict[str, str]


class _Figures(HTMLParser):
    """Collect every element with an ``id``: its data-* attributes and its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: dict[str, Figure] = {}
        self._open: list[tuple[str, str | None]] = []  # (tag, id) of open elements
        self._text: dict[str, list[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        ident = a.get("id")
        if tag not in ("meta", "link", "br"):
            self._open.append((tag, ident))
        if ident:
            self.found[ident] = Figure(a.get("data-metric", ""), a.get("data-value"), "", a)
            self._text[ident] = []

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            open_tag, ident = self._open.pop()
            if ident:
                self.found[ident].text = "".join(self._text[ident]).strip()
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, ident in self._open:
            if ident:
                self._text[ident].append(data)


def figures(page: str) -> dict[str, Figure]:
    parser = _Figures()
    parser.feed(page)
    parser.close()
    return parser.found


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out.append((s.labels, s.value))
    return out


def by_label(text: str, name: str, label: str) -> Counter[str]:
    """``name`` summed by one label; token counts are integers (exact in a float)."""
    out: Counter[str] = Counter()
    for labels, value in samples(text, name):
        assert value == int(value), (name, labels, value)
        out[labels[label]] += int(value)
    return out


def usd_sum(text: str, name: str, **match: str) -> Decimal:
    """Sum of a USD series, each float read back as the shortest decimal it prints as."""
    return sum(
        (
            Decimal(repr(v))
            for labels, v in samples(text, name)
            if all(labels.get(k) == want for k, want in match.items())
        ),
        Decimal(0),
    )


def ratio(tokens: Mapping[str, int]) -> float:
    read = tokens["cache_read"]
    return read / (
        tokens["input"] + read + tokens["cache_creation_5m"] + tokens["cache_creation_1h"]
    )


def assert_page_matches_metrics(
    page: str, metrics: str, *, admin: bool, reported: bool = True
) -> dict[str, Figure]:
    """Every figure on the page equals the figure computed here from ``/metrics``."""
    found = figures(page)
    client = by_label(metrics, "claude_agent_tokens_total", "token_type")
    assert sum(client.values()) > 0
    for t in TYPES:
        fig = found[f"client-tokens-{t}"]
        assert fig.metric == "claude_agent_tokens_total" and fig.attrs["data-token-type"] == t
        assert fig.value == str(client[t]) and fig.text == f"{client[t]:,}"
    assert found["client-tokens-total"].value == str(sum(client.values()))
    assert float(found["client-cache-hit-ratio"].value or "nan") == ratio(client)
    assert found["client-cache-hit-ratio"].text == f"{ratio(client) * 100:.1f} %"

    estimated = usd_sum(metrics, "claude_agent_cost_usd_total", cost_source="estimated")
    page_estimated = Decimal(found["client-cost-estimated-usd"].value or "nan")
    assert estimated > 0 and abs(page_estimated - estimated) <= Decimal("1e-9")
    if reported:
        want = usd_sum(metrics, "claude_agent_cost_usd_total", cost_source="reported")
        got = Decimal(found["client-cost-reported-usd"].value or "nan")
        assert want > 0 and abs(got - want) <= Decimal("1e-9")

    if not admin:
        assert "billed-today-usd" not in found and "api-tokens-input" not in found
        return found
    api = by_label(metrics, "anthropic_api_tokens_total", "token_type")
    assert sum(api.values()) > 0
    for t in TYPES:
        fig = found[f"api-tokens-{t}"]
        assert fig.metric == "anthropic_api_tokens_total"
        assert fig.value == str(api[t]) and fig.text == f"{api[t]:,}"
    assert float(found["api-cache-hit-ratio"].value or "nan") == ratio(api)
    # The two views of usage are never mixed: each ratio comes from its own column only.
    assert ratio(api) != ratio(client)
    for ident, name in (
        ("billed-today-usd", "anthropic_api_cost_today_usd"),
        ("billed-month-usd", "anthropic_api_cost_month_to_date_usd"),
    ):
        fig = found[ident]
        assert fig.metric == name
        assert Decimal(fig.value or "nan") == usd_sum(metrics, name)
    assert Decimal(found["billed-month-usd"].value or "0") > 0
    return found


# --- 1. pure rendering -------------------------------------------------------------------


def test_render_exact_figures_from_a_hand_built_view() -> None:
    view = LandingView(
        version="9.8.7",
        now=NOW,
        sources=(
            SourceView("admin_cost", "up", NOW - 42, 0.25, None, NOW - 3 * 3600),
            SourceView("admin_usage", "down", NOW - 600, 1.5, "rate_limited", NOW - 7200),
            SourceView("ingest", "up"),
            SourceView("transcripts", "waiting"),
        ),
        client_tokens={
            "input": 1000,
            "output": 2500,
            "cache_read": 6000,
            "cache_creation_5m": 2000,
            "cache_creation_1h": 1000,
        },
        client_estimated_pico=1_234_567_890_123,  # $1.234567890123
        client_reported_pico=500_000_000,  # $0.0005
        api_tokens={
            "input": 10,
            "output": 20,
            "cache_read": 30,
            "cache_creation_5m": 0,
            "cache_creation_1h": 0,
        },
        billed=BilledCost(today_usd=Decimal("12.34"), month_usd=Decimal("4321.5")),
    )
    page = render_landing(view)
    found = figures(page)
    client = {
        t: (found[f"client-tokens-{t}"].value, found[f"client-tokens-{t}"].text) for t in TYPES
    }
    assert client == {
        "input": ("1000", "1,000"),
        "output": ("2500", "2,500"),
        "cache_read": ("6000", "6,000"),
        "cache_creation_5m": ("2000", "2,000"),
        "cache_creation_1h": ("1000", "1,000"),
    }
    assert (found["client-tokens-total"].value, found["client-tokens-total"].text) == (
        "12500",
        "12,500",
    )
    # 6000 / (1000 + 6000 + 2000 + 1000): output tokens are not part of the ratio.
    assert (found["client-cache-hit-ratio"].value, found["client-cache-hit-ratio"].text) == (
        "0.6",
        "60.0 %",
    )
    assert (found["api-cache-hit-ratio"].value, found["api-cache-hit-ratio"].text) == (
        "0.75",
        "75.0 %",
    )
    assert found["api-tokens-output"].value == "20"
    assert found["api-tokens-total"].metric == "anthropic_api_tokens_total"
    est = found["client-cost-estimated-usd"]
    assert (est.value, est.text, est.attrs["data-cost-source"]) == (
        "1.234567890123",
        "$1.23",
        "estimated",
    )
    rep = found["client-cost-reported-usd"]
    assert (rep.value, rep.text) == ("0.0005", "$0.0005")
    today, month = found["billed-today-usd"], found["billed-month-usd"]
    assert (today.metric, today.value, today.text) == (
        "anthropic_api_cost_today_usd",
        "12.34",
        "$12.34",
    )
    assert (month.metric, month.value, month.text) == (
        "anthropic_api_cost_month_to_date_usd",
        "4321.5",
        "$4,321.50",
    )
    assert found["version"].value == "9.8.7"
    assert found["status"].attrs["data-status"] == "down"
    assert "admin_usage down" in found["status"].text
    states = {
        k[len("source-") :]: f.attrs["data-state"] for k, f in found.items() if k[:7] == "source-"
    }
    assert states == {
        "admin_cost": "up",
        "admin_usage": "down",
        "ingest": "up",
        "transcripts": "waiting",
    }
    cost_row = found["source-admin_cost"].text
    assert "42 s ago2026-11-10 11:59:18 UTC" in cost_row  # last success: age, then the time
    assert "3.0 h ago2026-11-10 09:00:00 UTC" in cost_row  # data up to (newest bucket end)
    assert '<time datetime="2026-11-10T09:00:00+00:00">' in page
    assert "rate_limited" in found["source-admin_usage"].text
    for href in (
        "/metrics",
        "/healthz",
        "/readyz",
        "https://github.com/otel-claude/otel-claude/tree/main/grafana/dashboards",
        "https://github.com/otel-claude/otel-claude#readme",
    ):
        assert f'href="{href}"' in page
    assert '<meta http-equiv="refresh" content="30">' in page
    assert "<script" not in page.lower() and "@import" not in page
    # Nothing is fetched: the only URLs are plain links (and the empty data: icon).
    assert "src=" not in page and 'rel="stylesheet"' not in page


def test_render_escapes_and_handles_missing_figures() -> None:
    evil = '<script>alert("x")</script>&'
    view = LandingView(
        version=evil,
        now=NOW,
        sources=(SourceView(evil, "down", last_error=evil),),
        client_tokens={t: 0 for t in TYPES},
        billed=BilledCost(),  # cost report on, not polled yet
    )
    page = render_landing(view)
    assert (
        "<script" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page
    )
    found = figures(page)
    assert found["client-cache-hit-ratio"].value is None
    assert found["client-cache-hit-ratio"].text == "—"
    assert found["billed-today-usd"].value is None and found["billed-today-usd"].text == "—"
    assert "client-cost-reported-usd" not in found  # shown only once something was reported
    assert "api-tokens-input" not in found  # usage report off
    bare = figures(render_landing(LandingView(version="1", now=NOW)))
    assert "client-tokens-input" not in bare and "billed-today-usd" not in bare
    assert bare["status"].attrs["data-status"] == "up"


def test_build_view_sums_families_separately() -> None:
    snapshot = {
        ("tokens", ("claude-opus-4-6", "input", "ingest", "")): 5,
        ("tokens", ("claude-haiku-4-5", "input", "transcript", "proj")): 7,
        ("tokens", ("claude-haiku-4-5", "cache_read", "sdk", "")): 30,
        ("api_tokens", ("cache_read", "m", "ws", "k", "t", "c", "g")): 100,
        ("api_tokens", ("input", "m", "ws2", "k", "t", "c", "g")): 300,
        ("api_tokens:revised_down", ("input", "m", "ws2", "k", "t", "c", "g")): 9,
        ("cost_pico", ("claude-opus-4-6", "estimated", "")): 10**12,
        ("cost_pico", ("claude-haiku-4-5", "estimated", "proj")): 5 * 10**11,
        ("cost_pico", ("unknown", "reported", "")): 7,
        ("api_cost_pico", ("ws", "tokens", "m", "input", "t", "c")): 10**15,
    }
    states = {"ingest": SourceState(ready=True), "admin_usage": SourceState()}
    view = build_view(now=NOW, states=states, snapshot=snapshot, version="v")
    assert view.client_tokens == {
        "input": 12,
        "output": 0,
        "cache_read": 30,
        "cache_creation_5m": 0,
        "cache_creation_1h": 0,
    }
    assert view.api_tokens == {
        "input": 300,
        "output": 0,
        "cache_read": 100,
        "cache_creation_5m": 0,
        "cache_creation_1h": 0,
    }
    assert (view.client_estimated_pico, view.client_reported_pico) == (15 * 10**11, 7)
    assert view.billed is None
    assert [(s.name, s.state) for s in view.sources] == [
        ("admin_usage", "waiting"),
        ("ingest", "up"),
    ]
    no_admin = build_view(now=NOW, states={"ingest": SourceState(ready=True)}, snapshot={})
    assert no_admin.api_tokens is None and no_admin.client_tokens == dict.fromkeys(TYPES, 0)


# --- 2. in process: the page equals /metrics ---------------------------------------------


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def live_app(tmp_path: Path) -> Iterator[tuple[App, str]]:
    """``build_app`` against the Admin API simulator, served on loopback like ``serve``."""
    clock = Clock(NOW)
    sim = Simulator(seed=11, api_key=KEY, clock=clock, data_start=datetime(2026, 10, 1, tzinfo=UTC))
    sim.start()
    settings = load_settings(
        env={
            "ANTHROPIC_ADMIN_API_KEY": KEY,
            "OTEL_CLAUDE_ADMIN_API_URL": sim.url,
            "OTEL_CLAUDE_ADMIN_SINCE": "2026-11-01T00:00:00Z",
            "OTEL_CLAUDE_STATE_DIR": str(tmp_path / "state"),
            "OTEL_CLAUDE_POLL_INTERVAL": "60",
            "OTEL_CLAUDE_TRANSCRIPTS": "off",
            "OTEL_CLAUDE_INGEST_TOKEN": INGEST_TOKEN,
        }
    )
    app = build_app(settings, {}, clock=clock, sleep=lambda _s: None)
    server = ExporterServer(
        ("127.0.0.1", 0),
        registry=app.registry,
        ingest=IngestEndpoint(app.ledger, token=None, max_bytes=1 << 22),
        sources=app.health,
        landing=LandingData.for_app(app, clock=clock),
    )
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield app, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        app.close()
        sim.stop()


def test_page_figures_equal_metrics(live_app: tuple[App, str]) -> None:
    app, url = live_app
    before = figures(httpx.get(f"{url}/").text)
    assert before["billed-today-usd"].value is None  # not polled yet: no figure, not $0
    assert before["source-admin_cost"].attrs["data-state"] == "waiting"
    assert app.poller is not None
    app.poller.poll_once()
    lines, truth = generate(seed=5, sessions=20)
    post_lines(url, lines)
    page = httpx.get(f"{url}/")
    metrics = httpx.get(f"{url}/metrics").text
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in page.headers["content-security-policy"]
    found = assert_page_matches_metrics(page.text, metrics, admin=True)
    # ... and /metrics itself agrees with the generator's ground truth.
    for t in TYPES:
        want = sum(n for (_model, tt), n in truth.tokens.items() if tt == t)
        assert found[f"client-tokens-{t}"].value == str(want)
    states = {k[7:]: f.attrs["data-state"] for k, f in found.items() if k.startswith("source-")}
    assert states == {
        "admin_cost": "up",
        "admin_names": "up",
        "admin_usage": "up",
        "claude_code": "up",
        "ingest": "up",
    }
    assert "data up to" in page.text and "2026-11-10" in found["source-admin_cost"].text
    assert KEY not in page.text and INGEST_TOKEN not in page.text


def test_page_reads_memory_only(live_app: tuple[App, str]) -> None:
    """``/`` runs no SQL: it must stay fast however large the ledger grows."""
    app, url = live_app
    post_lines(url, generate(seed=6, sessions=5)[0], batches=1)
    statements: list[str] = []
    conn: sqlite3.Connection = app.ledger._conn  # observed, not touched
    conn.set_trace_callback(statements.append)
    try:
        for _ in range(5):
            assert httpx.get(f"{url}/").status_code == 200
    finally:
        conn.set_trace_callback(None)
    assert statements == []


# --- 3. a real headless browser ----------------------------------------------------------


def chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """One bounded run of headless Chromium, isolated in its own profile directory."""
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.e2e
def test_headless_chromium_renders_the_page(tmp_path: Path) -> None:
    binary = need_binary("chromium")
    with Simulator(seed=3, api_key=KEY) as live:
        env = {
            "ANTHROPIC_ADMIN_API_KEY": KEY,
            "OTEL_CLAUDE_ADMIN_API_URL": live.url,
            # One poll at start (/readyz waits for it), none during the test: stable figures.
            "OTEL_CLAUDE_POLL_INTERVAL": "3600",
        }
        with running_exporter(tmp_path, env) as exporter:
            url = exporter.url
            post_lines(url, generate(seed=9, sessions=16)[0])
            metrics = httpx.get(f"{url}/metrics").text
            dom_run = chromium(binary, tmp_path / "profile-dom", "--dump-dom", f"{url}/")
            assert dom_run.returncode == 0, dom_run.stderr[-2000:]
            shot = tmp_path / "landing.png"
            shot_run = chromium(
                binary,
                tmp_path / "profile-shot",
                f"--screenshot={shot}",
                "--window-size=1200,900",
                "--hide-scrollbars",
                f"{url}/",
            )
            assert shot_run.returncode == 0, shot_run.stderr[-2000:]
            again = httpx.get(f"{url}/metrics").text
    dom = dom_run.stdout
    assert "<html" in dom and "otel-claude" in dom
    # Figures as the browser parsed them equal /metrics (taken before and after: unchanged).
    assert by_label(again, "claude_agent_tokens_total", "token_type") == by_label(
        metrics, "claude_agent_tokens_total", "token_type"
    )
    found = assert_page_matches_metrics(dom, metrics, admin=True)
    assert found["status"].attrs["data-status"] == "up"
    assert KEY not in dom
    assert shot.exists() and shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "landing.png")
