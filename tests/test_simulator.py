"""The Admin API simulator, over real loopback HTTP, against its own ground truth."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import httpx
import pytest

from otel_claude.simulator import USAGE_FIELDS, Simulator

USAGE = "/v1/organizations/usage_report/messages"
COST = "/v1/organizations/cost_report"
CLAUDE_CODE = "/v1/organizations/usage_report/claude_code"
WORKSPACES = "/v1/organizations/workspaces"
API_KEYS = "/v1/organizations/api_keys"

# A Tuesday afternoon; the default history starts 40 days earlier.
NOW = datetime(2026, 3, 10, 15, 27, 30, tzinfo=UTC)
TODAY = datetime(2026, 3, 10, tzinfo=UTC)
YESTERDAY = TODAY - timedelta(days=1)
ALL_DIMS = [
    "api_key_id",
    "workspace_id",
    "model",
    "service_tier",
    "context_window",
    "inference_geo",
]
HOUR = timedelta(hours=1)

Key = tuple[str | None, ...]
Totals = dict[Key, dict[str, int]]


class FakeClock:
    def __init__(self, moment: datetime) -> None:
        self.now = moment.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment.timestamp()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[Simulator]:
    simulator = Simulator(seed=1, clock=clock)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def client(sim: Simulator) -> Iterator[httpx.Client]:
    headers = {"x-api-key": sim.api_key, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=sim.url, headers=headers, timeout=10) as http:
        yield http


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def ok(client: httpx.Client, path: str, **params: Any) -> dict[str, Any]:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def all_pages(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Follow next_page to exhaustion; return all buckets."""
    buckets: list[dict[str, Any]] = []
    page: str | None = None
    while True:
        doc = ok(client, path, **params, **({"page": page} if page else {}))
        buckets += doc["data"]
        if not doc["has_more"]:
            assert doc["next_page"] is None
            return buckets
        page = doc["next_page"]


def fields(item: Mapping[str, Any]) -> dict[str, int]:
    return {
        "uncached_input_tokens": item["uncached_input_tokens"],
        "output_tokens": item["output_tokens"],
        "cache_read_input_tokens": item["cache_read_input_tokens"],
        "cache_creation_5m": item["cache_creation"]["ephemeral_5m_input_tokens"],
        "cache_creation_1h": item["cache_creation"]["ephemeral_1h_input_tokens"],
        "web_search_requests": item["server_tool_use"]["web_search_requests"],
    }


def totals(buckets: Sequence[Mapping[str, Any]], group_by: Sequence[str]) -> Totals:
    """Sum the results of buckets per group key (the layout usage_truth uses)."""
    out: Totals = {}
    for bucket in buckets:
        for item in bucket["results"]:
            key = tuple(item[d] for d in group_by)
            acc = out.setdefault(key, dict.fromkeys(USAGE_FIELDS, 0))
            for name, value in fields(item).items():
                acc[name] += value
    return out


def regroup(fine: Totals, fine_dims: Sequence[str], coarse_dims: Sequence[str]) -> Totals:
    out: Totals = {}
    for key, values in fine.items():
        row = dict(zip(fine_dims, key, strict=True))
        acc = out.setdefault(tuple(row[d] for d in coarse_dims), dict.fromkeys(USAGE_FIELDS, 0))
        for name, value in values.items():
            acc[name] += value
    return out


def grand(t: Totals) -> int:
    return sum(sum(v.values()) for v in t.values())


# --------------------------------------------------------------------------- usage


def test_bucket_widths_agree_with_each_other_and_with_truth(
    sim: Simulator, client: httpx.Client
) -> None:
    # Minutes and hours from 12:00 up to now (15:27:30): the last buckets are partial.
    noon = TODAY + 12 * HOUR
    group = {"group_by[]": ALL_DIMS}
    minutes = ok(client, USAGE, starting_at=iso(noon), bucket_width="1m", limit=1440, **group)
    hours = ok(client, USAGE, starting_at=iso(noon), bucket_width="1h", **group)
    assert len(minutes["data"]) == 3 * 60 + 28  # 12:00 … 15:27, the minute containing now
    assert [b["starting_at"] for b in hours["data"]] == [
        "2026-03-10T12:00:00Z",
        "2026-03-10T13:00:00Z",
        "2026-03-10T14:00:00Z",
        "2026-03-10T15:00:00Z",
    ]
    assert not minutes["has_more"] and not hours["has_more"]
    for i, bucket in enumerate(hours["data"]):
        start = noon + i * HOUR
        in_hour = minutes["data"][60 * i : 60 * (i + 1)]
        truth = sim.usage_truth(start, start + HOUR, ALL_DIMS, at=NOW.timestamp())
        assert truth and totals([bucket], ALL_DIMS) == truth
        assert totals(in_hour, ALL_DIMS) == truth

    # A closed day: one 1d bucket == 24 1h buckets == the final truth.
    day = ok(client, USAGE, starting_at=iso(YESTERDAY), ending_at=iso(TODAY), **group)
    assert [b["starting_at"] for b in day["data"]] == ["2026-03-09T00:00:00Z"]
    day_hours = ok(client, USAGE, starting_at=iso(YESTERDAY), bucket_width="1h", **group)
    assert len(day_hours["data"]) == 24 and day_hours["has_more"]
    final = sim.usage_truth(YESTERDAY, TODAY, ALL_DIMS)
    assert totals(day["data"], ALL_DIMS) == totals(day_hours["data"], ALL_DIMS) == final
    assert sim.usage_truth(YESTERDAY, TODAY, ALL_DIMS, at=NOW.timestamp()) == final

    # Today so far: the partial 1d bucket is the sum of today's hours.
    today = ok(client, USAGE, starting_at=iso(TODAY), **group)
    today_hours = ok(client, USAGE, starting_at=iso(TODAY), bucket_width="1h", **group)
    assert len(today["data"]) == 1 and len(today_hours["data"]) == 16
    assert totals(today["data"], ALL_DIMS) == totals(today_hours["data"], ALL_DIMS)

    # Pinned numbers for seed 1, so an accidental change of the data model is a reviewed diff.
    assert regroup(final, ALL_DIMS, [])[()] == {
        "uncached_input_tokens": 48_780_509,
        "output_tokens": 10_489_687,
        "cache_read_input_tokens": 155_203_438,
        "cache_creation_5m": 12_287_173,
        "cache_creation_1h": 1_192_364,
        "web_search_requests": 410,
    }


def test_grouping_by_a_subset_sums_the_finer_groups(sim: Simulator, client: httpx.Client) -> None:
    start = iso(YESTERDAY + 6 * HOUR)
    fine = ok(
        client, USAGE, starting_at=start, bucket_width="1h", limit=12, **{"group_by[]": ALL_DIMS}
    )
    for dims in (["model"], ["workspace_id", "service_tier"], ["api_key_id"], []):
        coarse = ok(
            client, USAGE, starting_at=start, bucket_width="1h", limit=12, **{"group_by[]": dims}
        )
        for fine_bucket, coarse_bucket in zip(fine["data"], coarse["data"], strict=True):
            assert fine_bucket["starting_at"] == coarse_bucket["starting_at"]
            expected = regroup(totals([fine_bucket], ALL_DIMS), ALL_DIMS, dims)
            assert totals([coarse_bucket], dims) == expected
            for item in coarse_bucket["results"]:
                # every dimension key is present; the ungrouped ones are null
                for dim in (*ALL_DIMS, "account_id", "service_account_id"):
                    assert dim in item
                    if dim not in dims:
                        assert item[dim] is None
    keys = totals(fine["data"], ALL_DIMS)
    workspaces = {k[1] for k in keys}
    api_keys = {k[0] for k in keys}
    assert None in workspaces and None in api_keys  # default workspace and Console usage
    assert {k[3] for k in keys} == {"standard", "batch", "priority"}
    assert {k[4] for k in keys} == {"0-200k", "200k-1M"}
    assert {k[5] for k in keys} == {"global", "us", "not_available"}


def test_filters_restrict_the_streams(sim: Simulator, client: httpx.Client) -> None:
    haiku = "claude-haiku-4-5-20251001"
    ws = sim.workspaces[1]["id"]
    params = {
        "starting_at": iso(YESTERDAY),
        "ending_at": iso(TODAY),
        "group_by[]": ALL_DIMS,
        "models[]": [haiku],
        "workspace_ids[]": [ws],
    }
    got = totals(ok(client, USAGE, **params)["data"], ALL_DIMS)
    truth = sim.usage_truth(
        YESTERDAY, TODAY, ALL_DIMS, filters={"model": {haiku}, "workspace_id": {ws}}
    )
    assert got == truth and got
    assert {(k[1], k[2]) for k in got} == {(ws, haiku)}
    us = ok(
        client,
        USAGE,
        starting_at=iso(YESTERDAY),
        **{"inference_geos[]": "us", "group_by[]": "service_tier"},
    )
    assert [r["service_tier"] for b in us["data"] for r in b["results"]] == ["priority"] * 2


def test_pagination_returns_exactly_the_buckets_of_one_big_request(client: httpx.Client) -> None:
    params = {
        "starting_at": iso(YESTERDAY - 2 * timedelta(days=1)),
        "group_by[]": ["model", "workspace_id"],
    }
    big = ok(client, USAGE, bucket_width="1h", limit=168, **params)
    assert not big["has_more"] and big["next_page"] is None
    assert len(big["data"]) == 3 * 24 + 16
    paged = all_pages(client, USAGE, bucket_width="1h", limit=7, **params)
    assert paged == big["data"]

    first = ok(client, USAGE, bucket_width="1h", limit=7, **params)
    assert first["has_more"] and re.fullmatch(r"page_[A-Za-z0-9_=-]+", first["next_page"])

    # 1d from the start of the history (default limit 7) against limit 31 pages.
    since = {"starting_at": "2026-01-20T00:00:00Z"}
    by_seven = all_pages(client, USAGE, **since)
    assert len(by_seven) == 50 and by_seven[-1]["starting_at"] == "2026-03-10T00:00:00Z"
    assert all_pages(client, USAGE, limit=31, **since) == by_seven
    # the history starts 40 days before now, floored to the hour
    empty = [b for b in by_seven if not b["results"]]
    assert [b["starting_at"] for b in empty] == [f"2026-01-{d}T00:00:00Z" for d in range(20, 29)]


def test_starting_and_ending_at_snap_to_buckets(client: httpx.Client) -> None:
    doc = ok(
        client,
        USAGE,
        starting_at="2026-03-09T10:17:42Z",
        ending_at="2026-03-09T12:30:00Z",
        bucket_width="1h",
    )
    # snapped down to 10:00; the bucket straddling ending_at is not returned
    assert [b["starting_at"] for b in doc["data"]] == [
        "2026-03-09T10:00:00Z",
        "2026-03-09T11:00:00Z",
    ]
    assert [b["ending_at"] for b in doc["data"]] == ["2026-03-09T11:00:00Z", "2026-03-09T12:00:00Z"]
    offset = ok(client, USAGE, starting_at="2026-03-09T12:00:00+02:00", bucket_width="1h", limit=1)
    assert offset["data"][0]["starting_at"] == "2026-03-09T10:00:00Z"
    future = ok(client, USAGE, starting_at="2026-03-11T00:00:00Z")
    assert future == {"data": [], "has_more": False, "next_page": None}


def test_late_data_grows_a_bucket_as_predicted(
    sim: Simulator, client: httpx.Client, clock: FakeClock
) -> None:
    hour = TODAY + 14 * HOUR
    reads = []
    for moment in (hour + HOUR + timedelta(minutes=2), hour + HOUR + timedelta(minutes=11)):
        clock.set(moment)
        doc = ok(
            client,
            USAGE,
            starting_at=iso(hour),
            bucket_width="1h",
            limit=1,
            **{"group_by[]": ALL_DIMS},
        )
        got = totals(doc["data"], ALL_DIMS)
        assert got == sim.usage_truth(hour, hour + HOUR, ALL_DIMS, at=moment.timestamp())
        reads.append(got)
    early, late = reads
    assert grand(late) > grand(early)
    for key, values in early.items():
        for name, value in values.items():
            assert late[key][name] >= value

    # A single minute: nothing before its end, partly late, all there 10 minutes on.
    minute = hour + timedelta(minutes=30)
    at = [minute + timedelta(seconds=s) for s in (59, 60, 600, 660)]
    seen = [
        grand(sim.usage_truth(minute, minute + timedelta(minutes=1), [], at=t.timestamp()))
        for t in at
    ]
    assert seen[0] == 0 and seen[1] == 0 < seen[2] == seen[3]

    punctual = Simulator(seed=1, clock=clock, late_data=False, revisions=False)
    end = (minute + timedelta(minutes=1)).timestamp()
    assert grand(punctual.usage_truth(minute, minute + timedelta(minutes=1), [], at=end - 1)) == 0
    assert punctual.usage_truth(minute, minute + timedelta(minutes=1), [], at=end) == (
        punctual.usage_truth(minute, minute + timedelta(minutes=1), [])
    )
    assert grand(punctual.usage_truth(minute, minute + timedelta(minutes=1), [])) == seen[3]


def _find_revision(sim: Simulator, before: timedelta, after: timedelta, down: bool) -> datetime:
    """First hour of the history whose value moves (down or up) between two ages."""
    hour = YESTERDAY - timedelta(days=5)
    while hour < YESTERDAY:
        end = hour + HOUR
        a = sim.usage_truth(hour, end, ALL_DIMS, at=(end + before).timestamp())
        b = sim.usage_truth(hour, end, ALL_DIMS, at=(end + after).timestamp())
        if (grand(b) < grand(a)) if down else (grand(b) > grand(a)):
            return hour
        hour = end
    raise AssertionError("no revision found")


def test_downward_and_upward_revisions_are_served(
    sim: Simulator, client: httpx.Client, clock: FakeClock
) -> None:
    for down, before, after in (
        (True, timedelta(hours=1), timedelta(hours=4)),  # phantom withdrawn after 3 h
        (False, timedelta(hours=1), timedelta(hours=2, seconds=1)),  # correction after 2 h
    ):
        hour = _find_revision(sim, before, after, down)
        values = []
        for age in (before, after):
            clock.set(hour + HOUR + age)
            doc = ok(
                client,
                USAGE,
                starting_at=iso(hour),
                bucket_width="1h",
                limit=1,
                **{"group_by[]": ALL_DIMS},
            )
            got = totals(doc["data"], ALL_DIMS)
            assert got == sim.usage_truth(hour, hour + HOUR, ALL_DIMS, at=clock.now)
            values.append(grand(got))
        assert (values[1] < values[0]) if down else (values[1] > values[0])
        final = sim.usage_truth(hour, hour + HOUR, ALL_DIMS)
        assert final == sim.usage_truth(
            hour, hour + HOUR, ALL_DIMS, at=(hour + 4 * HOUR).timestamp()
        )


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "starting_at"),
        ({"starting_at": "2026-03-09T00:00:00"}, "time zone"),
        ({"starting_at": "yesterday"}, "starting_at"),
        ({"starting_at": "2026-03-09T00:00:00Z", "ending_at": "2026-03-08T00:00:00Z"}, "ending_at"),
        ({"starting_at": "2026-03-09T00:00:00Z", "bucket_width": "5m"}, "bucket_width"),
        ({"starting_at": "2026-03-09T00:00:00Z", "limit": "32"}, "limit"),
        ({"starting_at": "2026-03-09T00:00:00Z", "limit": "0"}, "limit"),
        ({"starting_at": "2026-03-09T00:00:00Z", "limit": "ten"}, "limit"),
        ({"starting_at": "2026-03-09T00:00:00Z", "bucket_width": "1h", "limit": "169"}, "limit"),
        ({"starting_at": "2026-03-09T00:00:00Z", "bucket_width": "1m", "limit": "1441"}, "limit"),
        ({"starting_at": "2026-03-09T00:00:00Z", "group_by[]": "project"}, "group_by"),
        ({"starting_at": "2026-03-09T00:00:00Z", "group_by": "model"}, "group_by[]"),
        ({"starting_at": "2026-03-09T00:00:00Z", "group_by[]": "speed"}, "beta"),
        ({"starting_at": "2026-03-09T00:00:00Z", "service_tiers[]": "gold"}, "service_tiers"),
        ({"starting_at": "2026-03-09T00:00:00Z", "page": "garbage"}, "page"),
        ({"starting_at": "2026-03-09T00:00:00Z", "page": "page_!!!"}, "page"),
        ({"starting_at": "2026-03-09T00:00:00Z", "colour": "blue"}, "colour"),
    ],
)
def test_invalid_usage_requests_get_400(
    client: httpx.Client, params: dict[str, str], message: str
) -> None:
    response = client.get(USAGE, params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert message in body["error"]["message"]
    assert body["request_id"] == response.headers["request-id"]
    assert body["request_id"].startswith("req_")


def test_limits_at_the_maximum_are_accepted(client: httpx.Client) -> None:
    start = {"starting_at": "2026-01-01T00:00:00Z"}
    assert len(ok(client, USAGE, limit=31, **start)["data"]) == 31
    assert len(ok(client, USAGE, bucket_width="1h", limit=168, **start)["data"]) == 168
    assert len(ok(client, USAGE, bucket_width="1m", limit=1440, **start)["data"]) == 1440
    assert len(ok(client, USAGE, bucket_width="1m", **start)["data"]) == 60
    assert len(ok(client, USAGE, bucket_width="1h", **start)["data"]) == 24


def test_speed_needs_the_fast_mode_beta(client: httpx.Client) -> None:
    params: dict[str, Any] = {"starting_at": iso(YESTERDAY), "limit": 1}
    params["group_by[]"] = ["speed", "model"]
    beta = {"anthropic-beta": "fast-mode-2026-02-01"}
    doc = client.get(USAGE, params=params, headers=beta).json()
    assert {r["speed"] for r in doc["data"][0]["results"]} == {"standard"}
    plain = ok(client, USAGE, starting_at=iso(YESTERDAY), limit=1)
    assert "speed" not in plain["data"][0]["results"][0]
    fast = client.get(USAGE, params={**params, "speeds[]": "fast"}, headers=beta).json()
    assert fast["data"][0]["results"] == []


def test_auth_version_and_routing_errors(sim: Simulator) -> None:
    def call(path: str, headers: dict[str, str], method: str = "GET") -> httpx.Response:
        return httpx.request(
            method, sim.url + path, params={"starting_at": iso(YESTERDAY)}, headers=headers
        )

    good = {"x-api-key": sim.api_key, "anthropic-version": "2023-06-01"}
    cases = [
        (call(USAGE, {"anthropic-version": "2023-06-01"}), 401, "authentication_error"),
        (call(USAGE, {**good, "x-api-key": "sk-ant-admin01-wrong"}), 401, "authentication_error"),
        (call(USAGE, {"x-api-key": sim.api_key}), 400, "invalid_request_error"),
        (call("/v1/organizations/usage_report/nothing", good), 404, "not_found_error"),
        (call("/v1/messages", good), 404, "not_found_error"),
        (call(USAGE, good, method="POST"), 405, "invalid_request_error"),
    ]
    for response, status, kind in cases:
        assert response.status_code == status
        body = response.json()
        assert set(body) == {"type", "error", "request_id"}
        assert body["error"]["type"] == kind and body["error"]["message"]
        assert response.headers["request-id"] == body["request_id"]
    ok_response = call(USAGE, good)
    assert ok_response.status_code == 200 and ok_response.headers["request-id"].startswith("req_")
    assert ok_response.headers["date"] == "Tue, 10 Mar 2026 15:27:30 GMT"  # the fake clock
    assert [r.status for r in sim.requests] == [401, 401, 400, 404, 404, 405, 200]


# --------------------------------------------------------------------------- faults


def test_injected_faults(sim: Simulator, client: httpx.Client, clock: FakeClock) -> None:
    usage: dict[str, Any] = {"starting_at": iso(YESTERDAY), "limit": 1}
    sim.inject(429, retry_after=7, endpoint="usage_report/messages")
    assert client.get(COST, params=usage).status_code == 200  # other endpoint: untouched
    limited = client.get(USAGE, params=usage)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "7"
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert client.get(USAGE, params=usage).status_code == 200

    sim.inject(spend_limit=True)
    spent = client.get(USAGE, params=usage)
    assert spent.status_code == 429 and "retry-after" not in spent.headers
    assert spent.json()["error"]["details"] == {"error_code": "enforced_spend_limit_reached"}

    sim.inject(500, count=2)
    sim.inject(529, retry_after=0.5)
    sim.inject(503)
    seen = [client.get(USAGE, params=usage) for _ in range(5)]
    assert [r.status_code for r in seen] == [500, 500, 529, 503, 200]
    assert [r.json()["error"]["type"] for r in seen[:4]] == [
        "api_error",
        "api_error",
        "overloaded_error",
        "api_error",
    ]
    assert seen[2].headers["retry-after"] == "0.5"

    sim.inject(delay_s=0.4, endpoint="cost_report")
    with pytest.raises(httpx.ReadTimeout):
        client.get(COST, params=usage, timeout=0.1)
    sim.inject(delay_s=0.2)
    began = time.perf_counter()
    assert client.get(USAGE, params=usage).status_code == 200
    assert time.perf_counter() - began >= 0.2

    statuses = [(r.path.rsplit("/", 1)[1], r.status) for r in sim.requests]
    assert statuses[:4] == [
        ("cost_report", 200),
        ("messages", 429),
        ("messages", 200),
        ("messages", 429),
    ]
    assert all(r.at == clock.now for r in sim.requests)
    assert sim.requests[1].query == {"starting_at": [iso(YESTERDAY)], "limit": ["1"]}

    with pytest.raises(ValueError):
        sim.inject()
    with pytest.raises(ValueError):
        sim.inject(500, spend_limit=True)
    with pytest.raises(ValueError):
        sim.inject(spend_limit=True, retry_after=3)


def test_latency_is_added_to_every_response(clock: FakeClock) -> None:
    with Simulator(clock=clock, latency_s=0.05) as slow:
        began = time.perf_counter()
        response = httpx.get(slow.url + WORKSPACES, headers={"x-api-key": slow.api_key})
        assert response.status_code == 400  # no anthropic-version, but still delayed
        assert time.perf_counter() - began >= 0.05


# --------------------------------------------------------------------------- cost

PRICES: dict[
    str, tuple[tuple[Decimal | int, Decimal | int], ...]
] = {  # USD per MTok: input, output (standard context, long context)
    "claude-opus-4-6": ((5, 25), (10, Decimal("37.5"))),
    "claude-sonnet-4-5-20250929": ((3, 15), (6, Decimal("22.5"))),
    "claude-sonnet-4-20250514": ((3, 15), (6, Decimal("22.5"))),
    "claude-haiku-4-5-20251001": ((1, 5), (1, 5)),
}
TOKEN_PRICE = {  # token_type -> (usage field, multiple of input price or None = output price)
    "uncached_input_tokens": ("uncached_input_tokens", Decimal(1)),
    "output_tokens": ("output_tokens", None),
    "cache_read_input_tokens": ("cache_read_input_tokens", Decimal("0.1")),
    "cache_creation.ephemeral_5m_input_tokens": ("cache_creation_5m", Decimal("1.25")),
    "cache_creation.ephemeral_1h_input_tokens": ("cache_creation_1h", Decimal(2)),
}
COST_KEY = ("description", "cost_type", "model", "token_type", "service_tier", "context_window")


def test_cost_amounts_equal_cost_truth(
    sim: Simulator, client: httpx.Client, clock: FakeClock
) -> None:
    group = ["workspace_id", "description"]
    start = datetime(2026, 3, 1, tzinfo=UTC)
    doc = ok(client, COST, starting_at=iso(start), limit=31, **{"group_by[]": group})
    assert len(doc["data"]) == 10 and not doc["has_more"]
    for i, bucket in enumerate(doc["data"]):
        day = start + timedelta(days=i)
        truth = sim.cost_truth(day, day + timedelta(days=1), group, at=clock.now)
        served = {}
        for item in bucket["results"]:
            assert item["currency"] == "USD"
            assert re.fullmatch(r"\d+(\.\d{1,5})?", item["amount"]), item["amount"]
            assert item["service_tier"] in ("standard", "batch", None)  # never priority
            served[(item["workspace_id"], *(item[k] for k in COST_KEY))] = Decimal(item["amount"])
        assert served == truth
    kinds = {item["cost_type"] for b in doc["data"] for item in b["results"]}
    assert kinds == {"tokens", "web_search", "code_execution"}

    # Coarser groupings are exact sums of the finer rows.
    day_range = (start, TODAY + timedelta(days=1))
    fine = sim.cost_truth(*day_range, group, at=clock.now)
    per_workspace: dict[Key, Decimal] = {}
    for key, cents in fine.items():
        per_workspace[key[:1]] = per_workspace.get(key[:1], Decimal(0)) + cents
    by_ws = all_pages(client, COST, starting_at=iso(start), **{"group_by[]": "workspace_id"})
    served_ws: dict[Key, Decimal] = {}
    for bucket in by_ws:
        for item in bucket["results"]:
            assert item["description"] is None and item["model"] is None
            served_ws[(item["workspace_id"],)] = served_ws.get(
                (item["workspace_id"],), 0
            ) + Decimal(item["amount"])
    assert served_ws == per_workspace == sim.cost_truth(*day_range, ["workspace_id"], at=clock.now)
    flat = all_pages(client, COST, starting_at=iso(start))
    assert sum(Decimal(b["results"][0]["amount"]) for b in flat) == sum(fine.values())


def test_cost_is_final_usage_times_list_prices(sim: Simulator) -> None:
    day, end = YESTERDAY, TODAY
    dims = ["workspace_id", "model", "service_tier", "context_window"]
    usage = sim.usage_truth(day, end, dims)
    expected: dict[Key, Decimal] = {}
    for (ws, model, tier, window), values in usage.items():
        if tier == "priority":
            continue  # priority tier is not in the cost report
        assert model is not None
        in_price, out_price = PRICES[model][window == "200k-1M"]
        for token_type, (name, multiple) in TOKEN_PRICE.items():
            price = Decimal(out_price) if multiple is None else in_price * multiple
            if tier == "batch":
                price /= 2
            if values[name]:
                cents = values[name] * price / 10_000
                key = (ws, model, token_type, tier, window)
                expected[key] = cents.quantize(Decimal("0.00001"), rounding=ROUND_HALF_EVEN)
        if values["web_search_requests"]:
            web = (ws, None, "web_search", None, None)
            expected[web] = expected.get(web, Decimal(0)) + values["web_search_requests"]
    served = {
        (k[0], k[3], k[4] if k[2] == "tokens" else k[2], k[5], k[6]): v
        for k, v in sim.cost_truth(day, end, ["workspace_id", "description"]).items()
        if k[2] != "code_execution"
    }
    assert served == expected


def test_cost_lags_usage_by_an_hour(sim: Simulator, client: httpx.Client, clock: FakeClock) -> None:
    amounts = []
    for moment in (NOW, NOW + HOUR):
        clock.set(moment)
        doc = ok(client, COST, starting_at=iso(TODAY))
        amount = Decimal(doc["data"][0]["results"][0]["amount"])
        assert (
            amount
            == sim.cost_truth(TODAY, TODAY + timedelta(days=1), [], at=moment.timestamp())[()]
        )
        amounts.append(amount)
    assert amounts[1] > amounts[0]
    # at 15:27 the hours 00:00-13:00 are in (each counted once its end + 1 h has passed)
    clock.set(NOW)
    up_to_14 = sim.cost_truth(
        TODAY, TODAY + timedelta(days=1), [], at=(TODAY + 15 * HOUR).timestamp()
    )
    assert up_to_14[()] == amounts[0]


@pytest.mark.parametrize(
    "params",
    [
        {"bucket_width": "1h"},
        {"group_by[]": "model"},
        {"limit": "32"},
        {"starting_at": "2026-03-09"},
    ],
)
def test_invalid_cost_requests_get_400(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.get(COST, params={"starting_at": iso(YESTERDAY), **params})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


# --------------------------------------------------------------------------- Claude Code


def test_claude_code_records_and_pagination(sim: Simulator, client: httpx.Client) -> None:
    day = date(2026, 3, 9)
    whole = ok(client, CLAUDE_CODE, starting_at="2026-03-09", limit=1000)
    assert not whole["has_more"] and whole["next_page"] is None
    assert (
        whole["data"]
        == sim.claude_code_truth(day, at=NOW.timestamp())
        == sim.claude_code_truth(day)
    )
    actors = [r["actor"].get("email_address") or r["actor"]["api_key_name"] for r in whole["data"]]
    assert actors == ["ci-code-review", "alice@example.com", "bob@example.com", "carol@example.com"]

    pages, page = [], None
    while True:
        doc = ok(
            client,
            CLAUDE_CODE,
            starting_at="2026-03-09",
            limit=1,
            **({"page": page} if page else {}),
        )
        pages.append(doc)
        if not doc["has_more"]:
            break
        page = doc["next_page"]
    assert [len(p["data"]) for p in pages] == [1, 1, 1, 1]
    assert [r for p in pages for r in p["data"]] == whole["data"]
    assert len(ok(client, CLAUDE_CODE, starting_at="2026-03-09")["data"]) == 4  # default 20

    record = whole["data"][1]
    assert record["date"] == "2026-03-09T00:00:00Z"
    assert record["actor"] == {"type": "user_actor", "email_address": "alice@example.com"}
    assert (
        record["customer_type"] == "api" and record["organization_id"] == sim.world.organization_id
    )
    assert set(record["tool_actions"]) == {
        "edit_tool",
        "multi_edit_tool",
        "write_tool",
        "notebook_edit_tool",
    }
    assert set(record["core_metrics"]) == {
        "num_sessions",
        "lines_of_code",
        "commits_by_claude_code",
        "pull_requests_by_claude_code",
    }
    for entry in record["model_breakdown"]:
        assert set(entry["tokens"]) == {"input", "output", "cache_read", "cache_creation"}
        assert isinstance(entry["estimated_cost"]["amount"], int)
        assert entry["estimated_cost"]["currency"] == "USD"


def test_claude_code_grows_through_the_day_and_skips_idle_actors(
    sim: Simulator, client: httpx.Client, clock: FakeClock
) -> None:
    sessions = []
    for moment in (NOW, NOW + 3 * HOUR):
        clock.set(moment)
        doc = ok(client, CLAUDE_CODE, starting_at="2026-03-10")
        assert doc["data"] == sim.claude_code_truth(TODAY.date(), at=moment.timestamp())
        sessions.append(sum(r["core_metrics"]["num_sessions"] for r in doc["data"]))
    assert sessions[1] > sessions[0] > 0
    # Saturday: users rarely work; an actor without any hour of activity is absent.
    saturday = date(2026, 3, 7)
    present = {
        r["actor"].get("email_address") or r["actor"]["api_key_name"]
        for r in sim.claude_code_truth(saturday)
    }
    start = int(datetime(2026, 3, 7, tzinfo=UTC).timestamp())
    for actor in sim.world.actors:
        active = any(sim.world.actor_hour(actor.index, start + 3600 * h) for h in range(24))
        assert active == (actor.name in present)
    assert 0 < len(present) < 4


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"starting_at": "2026-03-09T00:00:00Z"},
        {"starting_at": "2026-3-9"},
        {"starting_at": "2026-03-09", "limit": "1001"},
        {"starting_at": "2026-03-09", "page": "nonsense"},
    ],
)
def test_invalid_claude_code_requests_get_400(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.get(CLAUDE_CODE, params=params)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_claude_code_cursor_belongs_to_its_day(client: httpx.Client) -> None:
    token = ok(client, CLAUDE_CODE, starting_at="2026-03-09", limit=1)["next_page"]
    response = client.get(CLAUDE_CODE, params={"starting_at": "2026-03-08", "page": token})
    assert response.status_code == 400


# --------------------------------------------------------------------------- lists


def test_list_endpoints(sim: Simulator, client: httpx.Client) -> None:
    workspaces = ok(client, WORKSPACES)
    assert workspaces["data"] == sim.workspaces and len(sim.workspaces) == 3
    assert workspaces["has_more"] is False
    assert workspaces["first_id"] == sim.workspaces[0]["id"]
    assert workspaces["last_id"] == sim.workspaces[-1]["id"]
    for ws in sim.workspaces:
        assert ws["id"].startswith("wrkspc_") and ws["type"] == "workspace"
        assert ws["archived_at"] is None and ws["display_color"].startswith("#")
        assert ok(client, f"{WORKSPACES}/{ws['id']}") == ws

    first = ok(client, API_KEYS, limit=2)
    assert first["has_more"] is True and len(first["data"]) == 2
    keys, after = list(first["data"]), first["last_id"]
    while after:
        doc = ok(client, API_KEYS, limit=2, after_id=after)
        keys += doc["data"]
        after = doc["last_id"] if doc["has_more"] else None
    assert keys == sim.api_keys and len(keys) == 5
    for key in keys:
        assert key["id"].startswith("apikey_") and key["type"] == "api_key"
        assert key["status"] == "active" and key["partial_key_hint"].startswith("sk-ant-api03-")
    before = ok(client, API_KEYS, limit=2, before_id=keys[3]["id"])
    assert before["data"] == keys[1:3] and before["has_more"] is True
    in_ws = ok(client, API_KEYS, workspace_id=sim.workspaces[0]["id"])
    assert [k["name"] for k in in_ws["data"]] == ["prod-backend", "prod-agents"]
    # every key used in the usage report is listed
    usage = totals(
        ok(client, USAGE, starting_at=iso(YESTERDAY), **{"group_by[]": ALL_DIMS})["data"], ALL_DIMS
    )
    assert {k[0] for k in usage} - {None} <= {k["id"] for k in keys}
    assert {k[1] for k in usage} - {None} == {w["id"] for w in sim.workspaces}

    for path, params, status in [
        (API_KEYS, {"limit": "101"}, 400),
        (API_KEYS, {"status": "lost"}, 400),
        (API_KEYS, {"after_id": "apikey_nope"}, 400),
        (WORKSPACES, {"limit": "0"}, 400),
        (f"{WORKSPACES}/wrkspc_unknown", {}, 404),
    ]:
        assert client.get(path, params=params).status_code == status


# --------------------------------------------------------------------------- determinism, CLI


def test_seed_determines_the_data(sim: Simulator, clock: FakeClock) -> None:
    twin = Simulator(seed=1, clock=clock)
    other = Simulator(seed=2, clock=clock)
    truth = sim.usage_truth(YESTERDAY, TODAY, ALL_DIMS)
    assert twin.usage_truth(YESTERDAY, TODAY, ALL_DIMS) == truth
    assert twin.workspaces == sim.workspaces and twin.api_keys == sim.api_keys
    assert other.usage_truth(YESTERDAY, TODAY, ["model"]) != sim.usage_truth(
        YESTERDAY, TODAY, ["model"]
    )
    assert other.workspaces[0]["id"] != sim.workspaces[0]["id"]
    with pytest.raises(ValueError):
        sim.usage_truth(YESTERDAY, TODAY + timedelta(seconds=30), [])
    with pytest.raises(ValueError):
        sim.cost_truth(YESTERDAY, TODAY + HOUR, [])
    with pytest.raises(ValueError):
        sim.usage_truth(YESTERDAY, TODAY, ["project"])


def test_module_runs_in_the_foreground() -> None:
    command = [sys.executable, "-m", "otel_claude.simulator", "--port", "0", "--seed", "3"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(3)]
            url = re.search(r"http://127\.0\.0\.1:\d+", lines[0])
            assert url, lines
            key = lines[2].strip().split("=", 1)[1]
            response = httpx.get(
                url.group(0) + WORKSPACES,
                headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
            )
            assert response.status_code == 200 and len(response.json()["data"]) == 3
        finally:
            proc.terminate()
            proc.wait(timeout=10)
