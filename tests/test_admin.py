"""Admin API polling against the simulator over loopback: exact counters under late data,
revisions, faults, restarts, pagination; request budget; secrets never leak."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from otel_claude.app import App, build_app
from otel_claude.config import load_settings
from otel_claude.simulator import Simulator
from tests.adminkit import GROUP_BY, MODELS, NULLS, TOKEN_FIELDS, Clock, usage_expected

KEY = "sk-ant-admin01-simulator-test-key"
START = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)  # a Tuesday, mid-day
SINCE = datetime(2026, 11, 10, 0, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def sim(clock: Clock) -> Iterator[Simulator]:
    simulator = Simulator(
        seed=7, api_key=KEY, clock=clock, data_start=datetime(2026, 10, 1, tzinfo=UTC)
    )
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def make_app(sim: Simulator, clock: Clock, tmp_path: Path) -> Iterator[Callable[..., App]]:
    apps: list[App] = []
    sleeps: list[float] = []

    def make(**env: str) -> App:
        settings = load_settings(
            env={
                "ANTHROPIC_ADMIN_API_KEY": KEY,
                "OTEL_CLAUDE_ADMIN_API_URL": sim.url,
                "OTEL_CLAUDE_ADMIN_SINCE": SINCE.isoformat(),
                "OTEL_CLAUDE_STATE_DIR": str(tmp_path),
                "OTEL_CLAUDE_POLL_INTERVAL": "60",
                "OTEL_CLAUDE_ACTOR_LABELS": "plain",
                "OTEL_CLAUDE_TRANSCRIPTS": "off",
                **env,
            }
        )
        app = build_app(settings, {}, clock=clock, sleep=sleeps.append)
        apps.append(app)
        return app

    make.sleeps = sleeps  # type: ignore[attr-defined]
    yield make
    for app in apps:
        try:
            app.close()
        except Exception:
            pass


def samples(app: App, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(generate_latest(app.registry).decode()):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def counted(app: App, name: str) -> Counter[tuple[str, ...]]:
    out: Counter[tuple[str, ...]] = Counter()
    for labels, value in samples(app, name).items():
        d = dict(labels)
        out[(d["token_type"], *(d[dim] for dim in GROUP_BY))] += int(value)
    return +out


def poll_for(app: App, clock: Clock, minutes: int, step_s: float = 60) -> None:
    assert app.poller is not None
    for _ in range(int(minutes * 60 / step_s)):
        app.poller.poll_once()
        clock.advance(step_s)


def hour_end(clock: Clock) -> datetime:
    now = datetime.fromtimestamp(clock(), UTC)
    return now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def test_usage_exact_after_late_data_and_revisions(
    make_app: Callable[..., App], sim: Simulator, clock: Clock
) -> None:
    app = make_app()
    poll_for(app, clock, minutes=5 * 60, step_s=300)  # 5 h of polls, 5 min apart
    app.poller.poll_once()  # type: ignore[union-attr]
    total = counted(app, "anthropic_api_tokens_total")
    down = counted(app, "anthropic_api_tokens_revised_down_total")
    served_now = usage_expected(sim, SINCE, hour_end(clock), at=clock())
    assert +(total - down) == +served_now  # latest figure: counters minus revisions
    assert sum(down.values()) > 0, "the seed should include a downward revision"
    # Counters never ran below what was served at any earlier poll.
    assert all(total[k] >= v for k, v in served_now.items())


def test_restart_in_the_middle_repeats_nothing(
    make_app: Callable[..., App], sim: Simulator, clock: Clock
) -> None:
    first = make_app()
    poll_for(first, clock, minutes=90, step_s=300)
    first.close()
    clock.advance(3 * 3600)  # down for three hours: the window resumes from the cursor
    second = make_app()
    poll_for(second, clock, minutes=30, step_s=300)
    second.poller.poll_once()  # type: ignore[union-attr]
    total = counted(second, "anthropic_api_tokens_total")
    down = counted(second, "anthropic_api_tokens_revised_down_total")
    assert +(total - down) == +usage_expected(sim, SINCE, hour_end(clock), at=clock())


def test_faults_are_retried_and_totals_stay_exact(
    make_app: Callable[..., App], sim: Simulator, clock: Clock
) -> None:
    app = make_app(OTEL_CLAUDE_ADMIN_SOURCES="usage")
    sim.inject(429, retry_after=2, endpoint="usage_report/messages")
    sim.inject(500, count=2, endpoint="usage_report/messages")
    app.poller.poll_once()  # type: ignore[union-attr]
    assert app.health.states()["admin_usage"].up
    assert make_app.sleeps[0] == 2.0  # type: ignore[attr-defined]  # retry-after honoured
    assert len(make_app.sleeps) == 3  # type: ignore[attr-defined]
    sim.inject(429, spend_limit=True, endpoint="usage_report/messages")
    clock.advance(600)
    app.poller.poll_once()  # type: ignore[union-attr]
    state = app.health.states()["admin_usage"]
    assert not state.up and state.errors == Counter({"spend_limit": 1})
    assert samples(app, "otel_claude_source_up")[(("source", "admin_usage"),)] == 0
    clock.advance(600)
    app.poller.poll_once()  # type: ignore[union-attr]
    assert app.health.states()["admin_usage"].up
    total = counted(app, "anthropic_api_tokens_total")
    down = counted(app, "anthropic_api_tokens_revised_down_total")
    assert +(total - down) == +usage_expected(sim, SINCE, hour_end(clock), at=clock())
    retries = samples(app, "otel_claude_admin_retries_total")
    assert retries[(("endpoint", "usage_report/messages"), ("reason", "rate_limited"))] == 1
    assert retries[(("endpoint", "usage_report/messages"), ("reason", "server_error"))] == 2


def test_timeout_is_retried(make_app: Callable[..., App], sim: Simulator, tmp_path: Path) -> None:
    config = tmp_path / "timeout.toml"
    config.write_text("[admin]\ntimeout_s = 0.3\n")
    app = make_app(OTEL_CLAUDE_ADMIN_SOURCES="usage", OTEL_CLAUDE_CONFIG=str(config))
    sim.inject(delay_s=1.0, endpoint="usage_report/messages")
    app.poller.poll_once()  # type: ignore[union-attr]
    assert app.health.states()["admin_usage"].up
    statuses = samples(app, "otel_claude_admin_requests_total")
    assert statuses[(("endpoint", "usage_report/messages"), ("status", "timeout"))] == 1


def test_long_outage_pages_through_every_bucket(
    make_app: Callable[..., App], sim: Simulator, clock: Clock
) -> None:
    """Ten days since the start: 240 hourly buckets need two pages (168 per page)."""
    app = make_app(
        OTEL_CLAUDE_ADMIN_SINCE="2026-10-31T00:00:00Z", OTEL_CLAUDE_ADMIN_SOURCES="usage"
    )
    app.poller.poll_once()  # type: ignore[union-attr]
    pages = [r for r in sim.requests if r.path.endswith("usage_report/messages")]
    assert len(pages) == 2 and "page" in pages[1].query
    since = datetime(2026, 10, 31, tzinfo=UTC)
    got = counted(app, "anthropic_api_tokens_total") - counted(
        app, "anthropic_api_tokens_revised_down_total"
    )
    want: Counter[tuple[str, ...]] = Counter()
    for key, fields in sim.usage_truth(since, hour_end(clock), GROUP_BY, at=clock()).items():
        labels = [MODELS[str(key[0])]] + [
            NULLS[d] if v is None else str(v) for d, v in zip(GROUP_BY[1:], key[1:], strict=True)
        ]
        for field, token_type in TOKEN_FIELDS.items():
            want[(token_type, *labels)] += fields[field]
    assert +got == +want


def test_request_budget_in_steady_state(
    make_app: Callable[..., App], sim: Simulator, clock: Clock
) -> None:
    app = make_app()
    app.poller.poll_once()  # type: ignore[union-attr]  # first poll (names included)
    before = len(sim.requests)
    polls = 20
    poll_for(app, clock, minutes=polls)  # one poll a minute
    per_endpoint = Counter(r.path.rsplit("/organizations/", 1)[1] for r in sim.requests[before:])
    assert per_endpoint == {
        "usage_report/messages": polls,
        "cost_report": polls,
        "usage_report/claude_code": polls,
    }


def test_cost_counters_and_gauges(
    make_app: Callable[..., App], sim: Simulator, clock: Clock
) -> None:
    app = make_app(OTEL_CLAUDE_ADMIN_SOURCES="cost")
    app.poller.poll_once()  # type: ignore[union-attr]
    clock.advance(3 * 3600)
    app.poller.poll_once()  # type: ignore[union-attr]
    today = datetime.fromtimestamp(clock(), UTC).replace(hour=0, minute=0)
    truth = sim.cost_truth(SINCE, today + timedelta(days=1), ("workspace_id",), at=clock())
    costs = samples(app, "anthropic_api_cost_usd_total")
    by_ws: Counter[str] = Counter()
    for labels, value in costs.items():
        by_ws[dict(labels)["workspace_id"]] += Decimal(str(value))
    for (ws,), cents in truth.items():
        assert abs(by_ws[ws or "default"] - cents / 100) < Decimal("1e-9")
    today_gauge = samples(app, "anthropic_api_cost_today_usd")
    truth_today = sim.cost_truth(today, today + timedelta(days=1), ("workspace_id",), at=clock())
    for (ws,), cents in truth_today.items():
        assert Decimal(str(today_gauge[(("workspace_id", ws or "default"),)])) == cents / 100
    month = samples(app, "anthropic_api_cost_month_to_date_usd")
    truth_month = sim.cost_truth(
        today.replace(day=1), today + timedelta(days=1), ("workspace_id",), at=clock()
    )
    for (ws,), cents in truth_month.items():
        assert abs(Decimal(str(month[(("workspace_id", ws or "default"),)])) - cents / 100) < (
            Decimal("1e-9")
        )


def test_claude_code_counters(make_app: Callable[..., App], sim: Simulator, clock: Clock) -> None:
    app = make_app(OTEL_CLAUDE_ADMIN_SOURCES="claude_code")
    poll_for(app, clock, minutes=6 * 60, step_s=1800)
    app.poller.poll_once()  # type: ignore[union-attr]
    sessions: Counter[str] = Counter()
    lines: Counter[tuple[str, str]] = Counter()
    cost_cents: Counter[str] = Counter()
    day = SINCE.date()
    while day <= datetime.fromtimestamp(clock(), UTC).date():
        for record in sim.claude_code_truth(day, at=clock()):
            actor = record["actor"].get("email_address") or record["actor"]["api_key_name"]
            sessions[actor] += record["core_metrics"]["num_sessions"]
            for kind in ("added", "removed"):
                lines[(actor, kind)] += record["core_metrics"]["lines_of_code"][kind]
            for entry in record["model_breakdown"]:
                cost_cents[actor] += entry["estimated_cost"]["amount"]
        day += timedelta(days=1)
    got_sessions = {
        dict(k)["actor"]: v for k, v in samples(app, "anthropic_claude_code_sessions_total").items()
    }
    assert got_sessions == dict(+sessions)
    got_lines = {
        (dict(k)["actor"], dict(k)["type"]): v
        for k, v in samples(app, "anthropic_claude_code_lines_total").items()
        if v
    }
    assert got_lines == dict(+lines)
    got_cost: Counter[str] = Counter()
    for k, v in samples(app, "anthropic_claude_code_estimated_cost_usd_total").items():
        got_cost[dict(k)["actor"]] += round(v * 100)
    assert got_cost == +cost_cents


def test_actor_hashing_hides_emails(make_app: Callable[..., App], clock: Clock) -> None:
    app = make_app(OTEL_CLAUDE_ACTOR_LABELS="hash", OTEL_CLAUDE_ADMIN_SOURCES="claude_code")
    app.poller.poll_once()  # type: ignore[union-attr]
    text = generate_latest(app.registry).decode()
    assert 'anthropic_claude_code_sessions_total{actor="user-' in text
    assert "@example.com" not in text


def test_names_and_freshness(make_app: Callable[..., App], sim: Simulator) -> None:
    app = make_app()
    app.poller.poll_once()  # type: ignore[union-attr]
    ws = samples(app, "anthropic_api_workspace_info")
    assert {dict(k)["workspace_id"]: dict(k)["workspace_name"] for k in ws} == {
        w["id"]: w["name"] for w in sim.workspaces
    }
    keys = samples(app, "anthropic_api_key_info")
    assert {dict(k)["api_key_id"] for k in keys} == {k["id"] for k in sim.api_keys}
    fresh = samples(app, "anthropic_api_newest_bucket_end_timestamp_seconds")
    assert fresh[(("source", "admin_usage"),)] == START.timestamp()
    assert fresh[(("source", "admin_cost"),)] == (START.replace(hour=0)).timestamp()


def test_wrong_key_is_unauthorized_and_never_logged(
    make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "sk-ant-admin01-WRONG-secret-should-not-leak"
    app = make_app(ANTHROPIC_ADMIN_API_KEY=wrong)
    with caplog.at_level(logging.DEBUG, logger="otel_claude"):
        app.poller.poll_once()  # type: ignore[union-attr]
    states = app.health.states()
    assert {name: s.last_error for name, s in states.items() if name != "ingest"} == {
        "admin_usage": "unauthorized",
        "admin_cost": "unauthorized",
        "claude_code": "unauthorized",
        "admin_names": "unauthorized",
    }
    assert wrong not in caplog.text
    assert wrong not in generate_latest(app.registry).decode()
    assert not app.health.not_ready()  # a failed first poll still counts as done for /readyz


def test_since_in_the_past_counts_only_from_since(
    make_app: Callable[..., App], sim: Simulator, clock: Clock
) -> None:
    app = make_app(OTEL_CLAUDE_ADMIN_SOURCES="usage")
    app.poller.poll_once()  # type: ignore[union-attr]
    total = counted(app, "anthropic_api_tokens_total")
    whole = usage_expected(sim, SINCE, hour_end(clock), at=clock())
    assert sum(total.values()) == sum(whole.values())  # nothing before SINCE
    assert date(2026, 11, 10) == SINCE.date()


def test_serve_polls_the_simulator_end_to_end(tmp_path: Path) -> None:
    """`otel-claude serve` with a key: /readyz waits for the first polls, /metrics has data."""
    import httpx

    from tests.procs import running_exporter

    with Simulator(seed=3, api_key=KEY) as live:
        env = {
            "ANTHROPIC_ADMIN_API_KEY": KEY,
            "OTEL_CLAUDE_ADMIN_API_URL": live.url,
            "OTEL_CLAUDE_POLL_INTERVAL": "2",
        }
        with running_exporter(tmp_path, env) as exporter:
            text = httpx.get(f"{exporter.url}/metrics").text
            assert 'otel_claude_source_up{source="admin_usage"} 1.0' in text
            assert "anthropic_api_tokens_total{" in text
            assert "anthropic_api_cost_month_to_date_usd{" in text
            landing = httpx.get(f"{exporter.url}/").text
            assert "admin_usage" in landing and KEY not in landing
            assert KEY not in text
        assert KEY not in exporter.log.read_text()


def test_changing_actor_labels_does_not_recount(make_app: Callable[..., App], clock: Clock) -> None:
    first = make_app(OTEL_CLAUDE_ADMIN_SOURCES="claude_code")
    first.poller.poll_once()  # type: ignore[union-attr]
    before = sum(samples(first, "anthropic_claude_code_sessions_total").values())
    first.close()
    second = make_app(OTEL_CLAUDE_ADMIN_SOURCES="claude_code", OTEL_CLAUDE_ACTOR_LABELS="hash")
    second.poller.poll_once()  # type: ignore[union-attr]
    assert sum(samples(second, "anthropic_claude_code_sessions_total").values()) == before
