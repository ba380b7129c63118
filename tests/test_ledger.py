"""The ledger against independently computed ground truth: dedup, results, restarts, crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from otel_claude.ledger import (
    CONVERSATIONS,
    COST,
    MESSAGES,
    PRUNED,
    REJECTED,
    STEPS,
    TOKENS,
    UNPRICED,
    WEB_SEARCH,
    Ledger,
)
from otel_claude.pricing import PriceTable
from otel_claude.records import ModelTotals, ResultRecord, StepRecord
from otel_claude.sources.ingest import iter_lines
from tests.streams import Truth, generate


def _apply_lines(ledger: Ledger, lines: list[bytes], batch: int = 50) -> None:
    for start in range(0, len(lines), batch):
        body = b"\n".join(lines[start : start + batch])
        ledger.apply([rec for _, rec in iter_lines(body, "ingest")], source="ingest")


def _family(snapshot: dict[tuple[str, tuple[str, ...]], int], family: str) -> dict:
    return {labels: v for (f, labels), v in snapshot.items() if f == family and v}


def assert_matches_truth(snapshot: dict, truth: Truth, source: str = "ingest") -> None:
    tokens = Counter()
    for (model, tt, src, _project), v in _family(snapshot, TOKENS).items():
        assert src == source
        tokens[(model, tt)] += v
    assert tokens == +truth.tokens
    assert Counter({m: v for (m, _s), v in _family(snapshot, WEB_SEARCH).items()}) == (
        +truth.web_search
    )
    assert Counter({m: v for (m, _s), v in _family(snapshot, STEPS).items()}) == truth.steps
    assert {o: v for (o,), v in _family(snapshot, CONVERSATIONS).items()} == dict(
        truth.conversations
    )
    cost = _family(snapshot, COST)
    assert {m: v for (m, s, _p), v in cost.items() if s == "reported"} == dict(truth.reported_pico)
    assert {m: v for (m, s, _p), v in cost.items() if s == "estimated"} == truth.estimated_pico()
    assert _family(snapshot, UNPRICED) == {}


def test_generated_stream_exact_totals(make_ledger: Callable[..., Ledger]) -> None:
    lines, truth = generate(seed=11, sessions=40)
    ledger = make_ledger()
    _apply_lines(ledger, lines)
    snap = ledger.snapshot()
    assert_matches_truth(snap, truth)
    rejected = {reason: v for (_src, reason), v in _family(snap, REJECTED).items()}
    assert rejected == dict(truth.rejected)
    messages = {o: v for (_s, o), v in _family(snap, MESSAGES).items()}
    assert messages == {"accepted": truth.usage_lines, "ignored": truth.ignored_lines}


def test_reposting_everything_changes_nothing(make_ledger: Callable[..., Ledger]) -> None:
    lines, truth = generate(seed=12, sessions=30)
    ledger = make_ledger()
    _apply_lines(ledger, lines, batch=37)
    first = ledger.snapshot()
    _apply_lines(ledger, lines, batch=1000)  # same lines, different batching
    _apply_lines(ledger, list(reversed(lines)), batch=13)  # and reversed
    second = ledger.snapshot()
    for family in (TOKENS, COST, STEPS, CONVERSATIONS, WEB_SEARCH):
        assert _family(first, family) == _family(second, family)
    assert_matches_truth(second, truth)
    messages = {o: v for (_s, o), v in _family(second, MESSAGES).items()}
    assert messages["duplicate"] == 2 * truth.usage_lines


def test_restart_continues_from_committed_totals(
    make_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    lines, truth = generate(seed=13, sessions=20)
    half = len(lines) // 2
    ledger = make_ledger()
    _apply_lines(ledger, lines[:half])
    ledger.close()
    reopened = make_ledger()
    _apply_lines(reopened, lines)  # overlap with the first half: deduplicated
    assert_matches_truth(reopened.snapshot(), truth)


def test_ids_remembered_by_a_fresh_ledger_match_the_table(
    make_ledger: Callable[..., Ledger], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger that starts empty skips lookups of ids it never stored; the same stream gives
    the same totals with the set, past its size limit (lookups again) and after a restart."""
    import otel_claude.ledger as ledger_module

    lines, truth = generate(seed=14, sessions=30)
    fresh = make_ledger("fresh.sqlite3")
    assert fresh._stored_ids == set()
    _apply_lines(fresh, lines, batch=41)
    _apply_lines(fresh, lines, batch=1000)  # every id again: all found through the set
    assert fresh._stored_ids is not None
    stored = {row[0] for row in fresh._conn.execute("SELECT message_id FROM steps")}
    assert fresh._stored_ids >= stored and stored
    assert_matches_truth(fresh.snapshot(), truth)

    monkeypatch.setattr(ledger_module, "_MAX_REMEMBERED", 5)
    capped = make_ledger("capped.sqlite3")
    _apply_lines(capped, lines, batch=41)
    assert capped._stored_ids is None  # dropped once past the limit
    _apply_lines(capped, lines, batch=1000)
    assert_matches_truth(capped.snapshot(), truth)
    capped.close()
    reopened = make_ledger("capped.sqlite3")
    assert reopened._stored_ids is None  # not empty: every id is looked up
    _apply_lines(reopened, lines, batch=7)
    assert_matches_truth(reopened.snapshot(), truth)


def step(
    mid: str, model: str = "claude-sonnet-4-5", session: str = "s", **fields: int
) -> StepRecord:
    return StepRecord(message_id=mid, session_id=session, model=model, source="sdk", **fields)


def result(key: str, session: str = "s", **models: ModelTotals) -> ResultRecord:
    return ResultRecord(
        key=key, session_id=session, outcome="success", source="sdk", models=dict(models)
    )


def _tokens(ledger: Ledger) -> dict[tuple[str, str], int]:
    out: Counter[tuple[str, str]] = Counter()
    for (model, tt, _src, _p), v in _family(ledger.snapshot(), TOKENS).items():
        out[(model, tt)] += v
    return dict(out)


def test_result_before_steps_and_after(make_ledger: Callable[..., Ledger]) -> None:
    """max(result, steps) per call: order of arrival does not matter (rule 3)."""
    sonnet = "claude-sonnet-4-5"
    totals = ModelTotals(input=30, output=500, cache_read=1000, cache_creation=300)
    steps = [
        step("m1", input=10, output=200, cache_read=400, cache_5m=50, cache_1h=100),
        step("m2", input=5, output=100, cache_read=300, cache_5m=0, cache_1h=20),
    ]
    expected = {
        (sonnet, "input"): 30,
        (sonnet, "output"): 500,
        (sonnet, "cache_read"): 1000,
        (sonnet, "cache_creation_5m"): 180,
        (sonnet, "cache_creation_1h"): 120,
    }
    forward = make_ledger("a.sqlite3")
    forward.apply([*steps, result("r1", **{sonnet: totals})], source="sdk")
    assert _tokens(forward) == expected
    # Result first, then steps whose timestamps fall before it (a subagent file tailed late).
    backward = make_ledger("b.sqlite3", clock=lambda: 1000.0)
    backward.apply([result("r1", **{sonnet: totals})], source="sdk")
    late = [
        StepRecord(**{**{f: getattr(s, f) for f in s.__slots__}, "timestamp": 999.0}) for s in steps
    ]
    backward.apply(late, source="sdk")
    got = _tokens(backward)
    assert sum(v for (m, t), v in got.items() if t.startswith("cache_creation")) == 300
    assert {k: v for k, v in got.items() if not k[1].startswith("cache_creation")} == {
        k: v for k, v in expected.items() if not k[1].startswith("cache_creation")
    }


def test_steps_larger_than_result_win(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger()
    ledger.apply(
        [
            step("m1", input=100, output=50),
            result("r1", **{"claude-sonnet-4-5": ModelTotals(input=60, output=80)}),
        ],
        source="sdk",
    )
    assert _tokens(ledger) == {
        ("claude-sonnet-4-5", "input"): 100,
        ("claude-sonnet-4-5", "output"): 80,
    }


def test_calls_are_separate_per_result(make_ledger: Callable[..., Ledger]) -> None:
    """Two query() calls in one session: each result covers only its own steps."""
    m = "claude-sonnet-4-5"
    ledger = make_ledger()
    ledger.apply(
        [
            step("a1", output=10),
            result("r1", **{m: ModelTotals(output=15)}),
            step("b1", output=7),
            result("r2", **{m: ModelTotals(output=7)}),
            step("c1", output=3),
        ],
        source="sdk",
    )  # third call still running
    assert _tokens(ledger) == {(m, "output"): 15 + 7 + 3}


def test_streamed_step_takes_max_per_field(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger()
    ledger.apply([step("m1", input=3, output=1, cache_read=10)], source="sdk")
    ledger.apply([step("m1", input=3, output=120, cache_read=10)], source="sdk")
    ledger.apply([step("m1", input=3, output=60, cache_read=10)], source="sdk")  # late partial
    assert _tokens(ledger) == {
        ("claude-sonnet-4-5", "input"): 3,
        ("claude-sonnet-4-5", "output"): 120,
        ("claude-sonnet-4-5", "cache_read"): 10,
    }
    assert _family(ledger.snapshot(), STEPS) == {("claude-sonnet-4-5", "sdk"): 1}


def test_estimated_cost_with_modifiers(make_ledger: Callable[..., Ledger]) -> None:
    """Batch halves the price; >200k input incl. cache switches Sonnet 4 to premium rates."""
    ledger = make_ledger()
    ledger.apply(
        [
            StepRecord(
                message_id="b",
                session_id="s",
                model="claude-sonnet-4-5",
                source="sdk",
                input=100_000,
                output=1_000_000,
                batch=True,
            ),
            StepRecord(
                message_id="lc",
                session_id="t",
                model="claude-sonnet-4",
                source="sdk",
                input=1000,
                cache_read=250_000,
                output=2000,
            ),
        ],
        source="sdk",
    )
    cost = _family(ledger.snapshot(), COST)
    # batch: (0.1 M x $3 + 1 M x $15) / 2 = $7.65
    assert cost[("claude-sonnet-4-5", "estimated", "")] == 7_650_000_000_000
    # long context: input $6, cache read 0.1 x $6, output $22.50 per MTok
    lc_usd_pico = 1000 * 6_000_000 + 250_000 * 600_000 + 2000 * 22_500_000
    assert cost[("claude-sonnet-4", "estimated", "")] == lc_usd_pico


def test_unpriced_model_counts_tokens_not_cost(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger()
    ledger.apply(
        [step("m1", model="claude-future-9", input=10, output=5, web_search=2)], source="sdk"
    )
    snap = ledger.snapshot()
    assert _family(snap, UNPRICED) == {("claude-future-9",): 15}
    # Web searches have a flat price whatever the model.
    assert _family(snap, COST) == {("claude-future-9", "estimated", ""): 2 * 10**10}


def test_model_label_cap(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger(max_models=2)
    ledger.apply([step(f"m{i}", model=f"model-{i}", input=1) for i in range(5)], source="sdk")
    models = {m for (m, _t, _s, _p) in _family(ledger.snapshot(), TOKENS)}
    assert models == {"model-0", "model-1", "other"}
    assert _tokens(ledger)[("other", "input")] == 3


def test_keys_pruned_after_horizon(make_ledger: Callable[..., Ledger]) -> None:
    now = [1_000_000.0]
    ledger = make_ledger(clock=lambda: now[0], dedup_horizon_s=100.0)
    ledger.apply(
        [step("m1", input=5), result("r1", **{"claude-sonnet-4-5": ModelTotals(input=5)})],
        source="sdk",
    )
    assert ledger.key_counts() == {"steps": 1, "calls": 1, "results": 1}
    now[0] += 50
    ledger.apply([step("m2", session="t", input=1)], source="sdk")
    now[0] += 60  # m1/r1 are now 110 s old, m2 60 s
    assert ledger.prune() == 3
    assert ledger.key_counts() == {"steps": 1, "calls": 1, "results": 0}
    assert _family(ledger.snapshot(), PRUNED) == {("steps",): 1, ("calls",): 1, ("results",): 1}
    assert _tokens(ledger) == {("claude-sonnet-4-5", "input"): 6}  # totals never shrink


def test_cursors_commit_with_batch(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger()
    ledger.apply([step("m1", input=1)], source="sdk", cursors={"file:/a": "123:456"})
    assert ledger.cursor("file:/a") == "123:456"
    assert ledger.cursor("file:/b") is None


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from otel_claude.ledger import Ledger
    from otel_claude.pricing import load_price_table
    from otel_claude.sources.ingest import iter_lines
    body = open({body!r}, "rb").read()
    records = [r for _, r in iter_lines(body, "ingest")]
    kill = lambda: os.kill(os.getpid(), signal.SIGKILL)
    ledger = Ledger({db!r}, prices=load_price_table(), before_commit=kill)
    ledger.apply(records, source="ingest")
    print("not reached")
    """
)


def test_kill_between_apply_and_commit_loses_and_repeats_nothing(
    make_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    lines, truth = generate(seed=14, sessions=20)
    half = len(lines) // 2
    db = tmp_path / "ledger.sqlite3"
    first = make_ledger()
    _apply_lines(first, lines[:half])
    committed = first.snapshot()
    first.close()
    body = tmp_path / "rest.ndjson"
    body.write_bytes(b"\n".join(lines[half:]))
    root = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT.format(root=root, body=str(body), db=str(db))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "not reached" not in proc.stdout
    reopened = make_ledger()
    assert reopened.snapshot() == committed  # the killed batch left no trace
    _apply_lines(reopened, lines)  # the client retries everything
    assert_matches_truth(reopened.snapshot(), truth)
    assert os.path.exists(db)


def test_state_files_are_private(tmp_path: Path) -> None:
    from otel_claude.pricing import load_price_table

    state = tmp_path / "fresh" / "state"
    ledger = Ledger(state / "ledger.sqlite3", prices=load_price_table())
    ledger.apply([step("m1", input=1)], source="sdk")
    assert (state.stat().st_mode & 0o777) == 0o700
    for name in ("ledger.sqlite3", "ledger.sqlite3-wal"):
        assert ((state / name).stat().st_mode & 0o777) == 0o600, name
    ledger.close()


def test_foreign_or_corrupt_state_is_refused(tmp_path: Path) -> None:
    import sqlite3

    import pytest

    from otel_claude.errors import LedgerError
    from otel_claude.pricing import load_price_table

    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database, just some bytes" * 100)
    with pytest.raises(LedgerError, match="cannot open ledger"):
        Ledger(garbage, prices=load_price_table())
    foreign = tmp_path / "foreign.sqlite3"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(LedgerError, match="something else"):
        Ledger(foreign, prices=load_price_table())
    with sqlite3.connect(foreign) as db:  # untouched
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["invoices"]


def _state(ledger: Ledger) -> tuple[object, ...]:
    """Everything a batch leaves behind: totals, step rows, calls and key counts."""
    conn = ledger._conn  # the tables themselves, not a view of them
    calls = [
        (*row[:3], json.loads(row[3]), *row[4:])  # model order in the JSON is immaterial
        for row in conn.execute("SELECT * FROM calls ORDER BY session_id, seq")
    ]
    return (
        ledger.snapshot(),
        conn.execute("SELECT * FROM steps ORDER BY message_id").fetchall(),
        calls,
        ledger.key_counts(),
    )


def test_first_sight_bulk_path_equals_the_general_path(
    make_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    """Steps counted in bulk leave exactly what the step-by-step path leaves: a cold
    transcript history, with modifiers, long context, projects, rejects and an unpriced
    model mixed in, in one batch against small batches without the bulk path."""
    from otel_claude.records import Rejected, coalesce
    from otel_claude.sources.transcripts import LineStats, parse_lines
    from tests.history import generate_history

    generate_history(tmp_path / "h", seed=4, target_bytes=12_000_000)
    records: list = []
    for path in sorted((tmp_path / "h").rglob("*.jsonl")):
        records += parse_lines(path.read_bytes(), LineStats(), source="transcript")
    extra = [
        StepRecord("bulk-a", "s-x", "claude-opus-4-6", "transcript", 250_000, 3),
        StepRecord("bulk-b", "s-x", "claude-future-9", "transcript", 5, 5),
        StepRecord(
            "bulk-c",
            "s-y",
            "claude-haiku-4-5",
            "transcript",
            1,
            2,
            batch=True,
            geo_us=True,
            fast=True,
            project="acme",
        ),
        Rejected("invalid_json", "x"),
    ]
    records = coalesce(records + extra)
    steps = [r for r in records if isinstance(r, StepRecord)]
    assert len(steps) > 300
    bulk = make_ledger("bulk.sqlite3", clock=lambda: 1_000.0)
    bulk.apply(records, source="transcript")
    one_by_one = make_ledger("one.sqlite3", clock=lambda: 1_000.0, bulk=False)
    for start in range(0, len(records), 97):  # batches that split sessions
        one_by_one.apply(records[start : start + 97], source="transcript")
    got, want = _state(bulk), _state(one_by_one)
    assert isinstance(got[0], dict) and isinstance(want[0], dict)
    assert {k: v for k, v in got[0].items() if want[0].get(k) != v} == {}
    assert {k: v for k, v in want[0].items() if got[0].get(k) != v} == {}
    assert got[1:] == want[1:]
    # And a second pass over the same records changes nothing in either.
    before = _state(bulk)
    bulk.apply(records, source="transcript")
    after = _state(bulk)
    assert after[1:3] == before[1:3]


def test_bulk_path_with_results_and_call_starts_equals_the_general_path(
    make_ledger: Callable[..., Ledger],
) -> None:
    """SDK streams (results, init lines, resumed sessions, duplicates) in batches of every
    size: wherever the bulk path takes steps, the stored state is the general path's."""
    lines, _truth = generate(seed=21, sessions=40)
    for size in (1, 7, 50, len(lines)):
        bulk = make_ledger(f"bulk{size}.sqlite3", clock=lambda: 1_000.0)
        general = make_ledger(f"general{size}.sqlite3", clock=lambda: 1_000.0, bulk=False)
        _apply_lines(bulk, lines, batch=size)
        _apply_lines(general, lines, batch=size)
        assert _state(bulk) == _state(general), size


def test_deferred_checkpoints_restore_the_usual_interval(
    make_ledger: Callable[..., Ledger],
) -> None:
    """A cold scan checkpoints the WAL less often; afterwards, and after an error inside,
    the usual interval is back (a WAL that keeps growing would fill a small disk)."""
    ledger = make_ledger()

    def interval() -> int:
        return int(ledger._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])

    assert interval() == 1000
    with ledger.deferred_checkpoints():
        assert interval() == 10_000
        ledger.apply([step("m1", output=5)], source="transcript")
    assert interval() == 1000 and _tokens(ledger)[("claude-sonnet-4-5", "output")] == 5
    with pytest.raises(RuntimeError), ledger.deferred_checkpoints():
        raise RuntimeError("scan failed")
    assert interval() == 1000


def test_call_state_beyond_64_bits_is_stored_exactly(make_ledger: Callable[..., Ledger]) -> None:
    """Call states are written by orjson, which cannot write integers beyond 64 bits; hostile
    counts that sum past that are written by ``json`` instead and read back exactly."""
    big = (1 << 63) - 1
    ledger = make_ledger()
    ledger.apply([step("a", output=big), step("b", output=big)], source="sdk")
    ledger.apply([step("c", output=big)], source="sdk")  # the call's sum passes 2**64
    ledger.close()
    again = make_ledger()
    again.apply([step("d", output=1)], source="sdk")
    assert _tokens(again)[("claude-sonnet-4-5", "output")] == 3 * big + 1


def test_long_context_threshold_comes_from_the_price_table(
    make_ledger: Callable[..., Ledger], prices: PriceTable
) -> None:
    """``long_context_threshold_tokens`` of the price table decides long-context pricing,
    for a step counted in bulk and for its later, larger sighting counted step by step."""
    from dataclasses import replace

    first = StepRecord("lc-1", "s", "claude-opus-4-6", "transcript", 1500, 100)
    again = StepRecord("lc-1", "s", "claude-opus-4-6", "transcript", 1500, 200)
    usual = make_ledger("usual.sqlite3")
    usual.apply([first], source="transcript")
    # 1,500 input tokens are far below 200k: $5 in, $25 out per million tokens
    assert _family(usual.snapshot(), COST) == {
        ("claude-opus-4-6", "estimated", ""): 1500 * 5_000_000 + 100 * 25_000_000
    }
    low = make_ledger("low.sqlite3", prices=replace(prices, long_context_threshold_tokens=1000))
    low.apply([first], source="transcript")
    # above 1,000: the long-context rates, $10 in and $37.50 out per million tokens
    assert _family(low.snapshot(), COST) == {
        ("claude-opus-4-6", "estimated", ""): 1500 * 10_000_000 + 100 * 37_500_000
    }
    low.apply([again], source="transcript")  # 100 more output tokens, at the same rate
    assert _family(low.snapshot(), COST) == {
        ("claude-opus-4-6", "estimated", ""): 1500 * 10_000_000 + 200 * 37_500_000
    }


# --- schema upgrades ----------------------------------------------------------------------

_V2_STEPS = """
CREATE TABLE steps_v2 (
    message_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, call_seq INTEGER NOT NULL,
    model TEXT NOT NULL, source TEXT NOT NULL, mods INTEGER NOT NULL,
    project TEXT NOT NULL DEFAULT '',
    f0 INTEGER NOT NULL, f1 INTEGER NOT NULL, f2 INTEGER NOT NULL,
    f3 INTEGER NOT NULL, f4 INTEGER NOT NULL, f5 INTEGER NOT NULL,
    seen_at REAL NOT NULL) WITHOUT ROWID;
INSERT INTO steps_v2 SELECT message_id, session_id, call_seq, model, source, mods, project,
    f0, f1, f2, f3, f4, f5, seen_at FROM steps;
DROP TABLE steps;
ALTER TABLE steps_v2 RENAME TO steps;
UPDATE meta SET value = '2' WHERE key = 'schema';
"""


def _steps_rows(path: Path) -> list[tuple[object, ...]]:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT message_id, session_id, call_seq, model, source, mods, project, "
            "f0, f1, f2, f3, f4, f5, seen_at FROM steps ORDER BY message_id"
        ).fetchall()
    finally:
        conn.close()


def _downgrade(path: Path, to: int) -> None:
    """Turn a current ledger back into the layout an older release wrote."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript("BEGIN;" + _V2_STEPS + "COMMIT;")
        if to == 1:  # no project column, no project label on token and cost series
            conn.executescript(
                "BEGIN;"
                "ALTER TABLE steps DROP COLUMN project;"
                "UPDATE counters SET labels = substr(labels, 1, length(labels) - 1) "
                "WHERE family IN ('tokens', 'cost_pico');"
                "UPDATE meta SET value = '1' WHERE key = 'schema';"
                "COMMIT;"
            )
    finally:
        conn.close()


@pytest.mark.parametrize("old", [1, 2])
def test_older_ledgers_are_upgraded_without_losing_a_count(
    make_ledger: Callable[..., Ledger], tmp_path: Path, old: int
) -> None:
    lines, truth = generate(seed=31, sessions=10)
    first = make_ledger()
    _apply_lines(first, lines)
    before = first.snapshot()
    rows = _steps_rows(first.path)
    first.close()
    assert len(rows) > 20
    _downgrade(first.path, old)
    if old == 1:  # really the old layout: no project column
        import sqlite3

        conn = sqlite3.connect(first.path)
        columns = [r[1] for r in conn.execute("PRAGMA table_info(steps)")]
        conn.close()
        assert "project" not in columns

    upgraded = make_ledger()
    assert upgraded.snapshot() == before
    assert_matches_truth(upgraded.snapshot(), truth)
    assert _steps_rows(upgraded.path) == rows
    import sqlite3

    conn = sqlite3.connect(upgraded.path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("3",)
    indexes = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'steps'"
    ).fetchall()
    conn.close()
    assert ("steps_message",) in indexes
    # The upgraded steps still deduplicate: the same stream again adds no token.
    _apply_lines(upgraded, lines)
    assert_matches_truth(upgraded.snapshot(), truth)
    duplicates = upgraded.snapshot()[(MESSAGES, ("ingest", "duplicate"))]
    assert duplicates - before.get((MESSAGES, ("ingest", "duplicate")), 0) == truth.usage_lines


def test_a_read_only_open_accepts_the_previous_layout(
    make_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    lines, truth = generate(seed=32, sessions=4)
    ledger = make_ledger()
    _apply_lines(ledger, lines)
    before = ledger.snapshot()
    ledger.close()
    _downgrade(ledger.path, 2)
    reader = make_ledger(read_only=True)
    assert reader.snapshot() == before
    assert_matches_truth(reader.snapshot(), truth)


# --- the steps index built at the end of a first cold scan ---------------------------------


def _index_exists(path: str | Path) -> bool:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return (
            conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'steps_message'"
            ).fetchone()
            is not None
        )
    finally:
        conn.close()


def test_deferred_index_counts_exactly_what_the_indexed_path_counts(
    make_ledger: Callable[..., Ledger],
) -> None:
    """Same stream, small batches (ids repeat across batches, streamed copies grow), with
    and without the index: the same totals and the same stored rows; the index is back."""
    lines, truth = generate(seed=41, sessions=25)
    plain = make_ledger("plain.sqlite3")
    _apply_lines(plain, lines, batch=7)
    deferred = make_ledger("deferred.sqlite3")
    with deferred.deferred_index():
        assert not _index_exists(deferred.path)
        _apply_lines(deferred, lines, batch=7)
        assert deferred._staged is not None and len(deferred._staged) > 20
    assert _index_exists(deferred.path) and deferred._staged is None
    assert deferred.snapshot() == plain.snapshot()
    assert_matches_truth(deferred.snapshot(), truth)
    without_time = [row[:-1] for row in _steps_rows(plain.path)]  # seen_at: the clock
    assert [row[:-1] for row in _steps_rows(deferred.path)] == without_time
    # After the block the usual path deduplicates against what the block stored.
    before = deferred.snapshot()
    _apply_lines(deferred, lines)
    assert_matches_truth(deferred.snapshot(), truth)
    assert deferred.snapshot()[(MESSAGES, ("ingest", "duplicate"))] > before.get(
        (MESSAGES, ("ingest", "duplicate")), 0
    )


def test_deferred_index_only_for_an_empty_ledger(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger()
    ledger.apply([step("m1", input=1)], source="sdk")
    with ledger.deferred_index():
        assert ledger._staged is None and _index_exists(ledger.path)
        ledger.apply([step("m1", input=5)], source="sdk")  # a larger sighting
    assert ledger.snapshot()[(TOKENS, ("claude-sonnet-4-5", "input", "sdk", ""))] == 5


def test_a_rolled_back_batch_inside_the_deferral_is_counted_once_later(
    make_ledger: Callable[..., Ledger],
) -> None:
    calls = []

    def fail_once() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk gone")

    ledger = make_ledger(before_commit=fail_once)
    with ledger.deferred_index():
        ledger.apply([step("m1", input=1)], source="sdk")
        with pytest.raises(OSError):
            ledger.apply([step("m2", input=10), step("m1", input=3)], source="sdk")
        # m2's noted rowid points at no row; m1's row still holds 1
        ledger.apply([step("m2", input=10), step("m1", input=3)], source="sdk")
    tokens = _family(ledger.snapshot(), TOKENS)
    assert tokens[("claude-sonnet-4-5", "input", "sdk", "")] == 13
    assert [r[0] for r in _steps_rows(ledger.path)] == ["m1", "m2"]


def test_a_rolled_back_id_taken_by_the_general_path_is_stored_and_counted_once(
    make_ledger: Callable[..., Ledger],
) -> None:
    """The same id twice in a batch takes the step-by-step path (not the bulk one): an id
    whose noted rowid was rolled back must still be inserted there, so that a later
    sighting is a duplicate and not counted again."""
    calls = []

    def fail_once() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk gone")

    ledger = make_ledger(before_commit=fail_once)
    with ledger.deferred_index():
        with pytest.raises(OSError):
            ledger.apply([step("m2", input=10)], source="sdk")
        ledger.apply([step("m2", input=10), step("m2", input=12)], source="sdk")
        assert [r[0] for r in _steps_rows(ledger.path)] == ["m2"]
    ledger.apply([step("m2", input=12)], source="sdk")
    assert _family(ledger.snapshot(), TOKENS)[("claude-sonnet-4-5", "input", "sdk", "")] == 12
    assert [r[0] for r in _steps_rows(ledger.path)] == ["m2"]


def test_a_crash_inside_the_deferral_leaves_a_ledger_that_indexes_itself(
    make_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    lines, truth = generate(seed=42, sessions=10)
    body = tmp_path / "all.ndjson"
    body.write_bytes(b"\n".join(lines))
    db = tmp_path / "ledger.sqlite3"
    root = str(Path(__file__).resolve().parent.parent)
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {root!r})
        from otel_claude.ledger import Ledger
        from otel_claude.pricing import load_price_table
        from otel_claude.sources.ingest import iter_lines
        records = [r for _, r in iter_lines(open({str(body)!r}, "rb").read(), "ingest")]
        ledger = Ledger({str(db)!r}, prices=load_price_table())
        with ledger.deferred_index():
            ledger.apply(records, source="ingest")
            os.kill(os.getpid(), signal.SIGKILL)
        print("not reached")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not _index_exists(db)
    reopened = make_ledger()
    assert _index_exists(db)
    assert_matches_truth(reopened.snapshot(), truth)
    _apply_lines(reopened, lines)  # all duplicates now
    assert_matches_truth(reopened.snapshot(), truth)
