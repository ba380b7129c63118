"""The series cap: past ``max_series_per_family`` new label sets fold into ``other``, exactly.

Totals stay exact (folding moves an increment to another series, never drops or repeats it),
the decision survives restarts, the revised-down twin follows its family, and memory stays
bounded when 100,000 distinct API keys and projects are thrown at the ledger.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from otel_claude.admin import usage
from otel_claude.exposition.families import FAMILIES, admin_families, core_families
from otel_claude.exposition.prometheus import LedgerCollector
from otel_claude.ledger import (
    COST,
    FOLD_SLACK,
    LABEL_NAMES,
    REVISED_DOWN,
    SERIES_FOLDED,
    STEPS,
    TOKENS,
    BucketValue,
    Ledger,
)
from otel_claude.pricing import load_price_table
from otel_claude.records import StepRecord

ROOT = Path(__file__).resolve().parent.parent
API_TOKENS = usage.API_TOKENS
TWIN = API_TOKENS + REVISED_DOWN


def _family(ledger: Ledger, family: str) -> dict[tuple[str, ...], int]:
    return {labels: v for (f, labels), v in ledger.snapshot().items() if f == family}


def _folded(ledger: Ledger) -> dict[str, int]:
    return {labels[0]: v for labels, v in _family(ledger, SERIES_FOLDED).items()}


def _key_labels(key: str, token_type: str = "output") -> tuple[str, ...]:
    # (token_type, model, workspace_id, api_key_id, service_tier, context_window, inference_geo)
    return (token_type, "claude-opus-4-6", "wrkspc_1", key, "standard", "0-200k", "")


def _tok(key: str, value: int, bucket: str = "2026-01-01T00:00:00Z") -> BucketValue:
    return BucketValue(usage.SOURCE, bucket, key, API_TOKENS, _key_labels(key), value)


FOLDED_KEY = ("output", "other", "other", "other", "standard", "0-200k", "")


def test_label_names_cover_every_family() -> None:
    """The ledger's label names are the families' stored labels (admin modules included)."""
    families = core_families(project_label=True) + admin_families(usage.DIMENSIONS, "hash")
    for family in families:
        assert LABEL_NAMES[family.key.removesuffix(REVISED_DOWN)] == family.labels, family.key
    assert {f.key for f in families} >= {k for k in LABEL_NAMES if k != SERIES_FOLDED}, (
        "a label-name entry without a family"
    )


def test_buckets_fold_with_exact_high_water_arithmetic(
    make_ledger: Callable[..., Ledger], tmp_path: Path
) -> None:
    ledger = make_ledger(max_series_per_family=2)
    # Poll 1: k1, k2 fill the cap; k3, k4 fold into one series.
    delta = ledger.apply_buckets([_tok("k1", 10), _tok("k2", 20), _tok("k3", 30), _tok("k4", 40)])
    assert delta == {
        (API_TOKENS, _key_labels("k1")): 10,
        (API_TOKENS, _key_labels("k2")): 20,
        (API_TOKENS, FOLDED_KEY): 70,
        (SERIES_FOLDED, (API_TOKENS,)): 2,
    }
    # Poll 2 (cumulative values): k1 +5, k3 +5 (folded), k4 revised down 40 -> 38 (no
    # increment; the twin follows the fold), k5 new +5 (folded).
    ledger.apply_buckets([_tok("k1", 15), _tok("k3", 35), _tok("k4", 38), _tok("k5", 5)])
    assert _family(ledger, API_TOKENS) == {
        _key_labels("k1"): 15,
        _key_labels("k2"): 20,
        FOLDED_KEY: 80,
    }
    assert _family(ledger, TWIN) == {FOLDED_KEY: 2}
    assert _folded(ledger) == {API_TOKENS: 4, TWIN: 1}
    # Totals: the sum of high-water marks; minus revisions: the latest served values.
    assert sum(_family(ledger, API_TOKENS).values()) == 15 + 20 + 35 + 40 + 5
    assert sum(_family(ledger, API_TOKENS).values()) - 2 == 15 + 20 + 35 + 38 + 5
    # Re-serving the same values changes nothing.
    before = ledger.snapshot()
    assert ledger.apply_buckets([_tok("k1", 15), _tok("k3", 35), _tok("k4", 38)]) == {}
    assert ledger.snapshot() == before
    ledger.close()

    # Restart: folded label sets stay folded, admitted ones stay admitted; the bucket state
    # (original labels) keeps the arithmetic exact: k4 counts its rise over the last value served.
    again = make_ledger(max_series_per_family=2)
    again.apply_buckets([_tok("k4", 45), _tok("k2", 25), _tok("k6", 1)])
    assert _family(again, API_TOKENS) == {
        _key_labels("k1"): 15,
        _key_labels("k2"): 25,
        FOLDED_KEY: 80 + 7 + 1,  # k4: 38 -> 45 rises 7 over the last value served
    }
    assert _family(again, TWIN) == {FOLDED_KEY: 2}
    assert _folded(again) == {API_TOKENS: 6, TWIN: 1}
    assert again._series == again._count_series()
    # The bucket state keeps each original group and label set.
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as conn:
        stored = dict(conn.execute("SELECT grp, high FROM buckets WHERE family = ?", (API_TOKENS,)))
        stored_labels = {row[0] for row in conn.execute("SELECT labels FROM buckets")}
    assert stored == {"k1": "15", "k2": "25", "k3": "35", "k4": "45", "k5": "5", "k6": "1"}
    assert "\x1f".join(FOLDED_KEY) not in stored_labels


def test_twin_admitted_with_its_family(make_ledger: Callable[..., Ledger]) -> None:
    """A label set counted in the family keeps its own revised-down series past the cap."""
    ledger = make_ledger(max_series_per_family=1)
    ledger.apply_buckets([_tok("k1", 10)])
    ledger.apply_buckets([_tok("k2", 7)])  # folded
    ledger.apply_buckets([_tok("k1", 4), _tok("k2", 3)])  # both revised down
    assert _family(ledger, API_TOKENS) == {_key_labels("k1"): 10, FOLDED_KEY: 7}
    assert _family(ledger, TWIN) == {_key_labels("k1"): 6, FOLDED_KEY: 4}


def test_client_side_folds_projects_exactly(make_ledger: Callable[..., Ledger]) -> None:
    def steps(start: int, stop: int, tag: str) -> list[StepRecord]:
        return [
            StepRecord(
                f"{tag}-{i}", f"s-{tag}", "claude-sonnet-4-5", "sdk", 100, 10, project=f"p{i}"
            )
            for i in range(start, stop)
        ]

    reference = make_ledger("reference.sqlite3", max_series_per_family=10**6)
    ledger = make_ledger(max_series_per_family=4)
    for i in range(5):  # one batch per project
        reference.apply(steps(i, i + 1, "a"), source="sdk")
        ledger.apply(steps(i, i + 1, "a"), source="sdk")
    model = "claude-sonnet-4-5"
    tokens = _family(ledger, TOKENS)
    # Two token types per project: p0 and p1 fill the cap of 4, p2..p4 fold.
    assert tokens == {
        (model, "input", "sdk", "p0"): 100,
        (model, "output", "sdk", "p0"): 10,
        (model, "input", "sdk", "p1"): 100,
        (model, "output", "sdk", "p1"): 10,
        ("other", "input", "sdk", "other"): 300,
        ("other", "output", "sdk", "other"): 30,
    }
    # Cost has one series per project: p0..p3 fit, p4 folds; the total is exact.
    cost = _family(ledger, COST)
    ref_cost = _family(reference, COST)
    assert set(cost) == {*(k for k in ref_cost if k[2] != "p4"), ("other", "estimated", "other")}
    assert sum(cost.values()) == sum(ref_cost.values())
    assert cost[("other", "estimated", "other")] == ref_cost[(model, "estimated", "p4")]
    assert _family(ledger, STEPS) == _family(reference, STEPS) == {(model, "sdk"): 5}
    assert _folded(ledger) == {TOKENS: 6, COST: 1}
    ledger.close()

    again = make_ledger(max_series_per_family=4)
    again.apply(steps(0, 6, "b"), source="sdk")  # p0, p1 known; p2..p5 fold (p5 is new)
    tokens = _family(again, TOKENS)
    assert tokens[(model, "input", "sdk", "p0")] == 200
    assert tokens[("other", "input", "sdk", "other")] == 300 + 400
    assert sum(tokens.values()) == 110 * 11
    assert len(tokens) == 6
    assert _folded(again) == {TOKENS: 6 + 8, COST: 1 + 2}  # per label set and batch


def test_fold_slack_is_a_hard_bound(make_ledger: Callable[..., Ledger]) -> None:
    """Even bounded labels cannot grow a full family past ``cap + FOLD_SLACK + 1`` series."""
    ledger = make_ledger(max_series_per_family=1)
    n = FOLD_SLACK + 50
    values = [
        BucketValue("claude_code", "2026-01-01", f"a{i}", "cc_lines", (f"a{i}", f"t{i}"), 1)
        for i in range(n)
    ]
    ledger.apply_buckets(values)
    lines = _family(ledger, "cc_lines")
    assert len(lines) == 1 + FOLD_SLACK + 1
    assert lines[("other", "other")] == n - 1 - FOLD_SLACK
    assert sum(lines.values()) == n


def test_series_folded_is_exposed(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger(max_series_per_family=1)
    ledger.apply_buckets([_tok("k1", 1), _tok("k2", 2), _tok("k3", 3)])
    registry = CollectorRegistry(auto_describe=False)
    families = FAMILIES + admin_families(usage.DEFAULT_GROUP_BY, "hash")
    registry.register(LedgerCollector(ledger, families=families))
    text = generate_latest(registry).decode()
    assert "# TYPE otel_claude_series_folded_total counter" in text
    assert 'otel_claude_series_folded_total{family="anthropic_api_tokens_total"} 2.0' in text


# --- memory: 100,000 distinct API keys and projects --------------------------------------

KEYS = 100_000
BATCH = 1_000
TOKEN_TYPES = [name for name, _path in usage.TOKEN_FIELDS]


def _workload(path: str, cap: int = 10_000) -> dict[str, int]:
    """Run in a fresh process, so ``ru_maxrss`` (peak RSS) is this workload's own peak."""
    import resource

    ledger = Ledger(path, prices=load_price_table(), max_series_per_family=cap)
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sent = 0
    for start in range(0, KEYS, BATCH):
        bucket = f"2026-01-01T{start // BATCH:04d}"  # 100 buckets of 1,000 keys
        values = [
            BucketValue(
                usage.SOURCE,
                bucket,
                f"key-{i}",
                API_TOKENS,
                (TOKEN_TYPES[i % 5], "m", "w", f"apikey_{i:06d}", "standard", "0-200k", ""),
                i + 1,
            )
            for i in range(start, start + BATCH)
        ]
        sent += sum(v.value for v in values)
        ledger.apply_buckets(values)
        ledger.forget_buckets(usage.SOURCE, before=bucket)
        steps = [
            StepRecord(f"msg-{i}", "session", f"model-{i}", "sdk", 1, 2, project=f"proj-{i}")
            for i in range(start, start + BATCH)
        ]
        ledger.apply(steps, source="sdk")
    snap = ledger.snapshot()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {
        "sent": sent,
        "snapshot": len(snap),
        "rss_growth_kb": peak_kb - base_kb,
        "max_models": 200,
    }
    for fam in (API_TOKENS, TOKENS, "unpriced_tokens", STEPS, SERIES_FOLDED):
        out[f"series:{fam}"] = sum(1 for f, _ in snap if f == fam)
        out[f"sum:{fam}"] = sum(v for (f, _), v in snap.items() if f == fam)
    out["folded:api_tokens"] = snap.get((SERIES_FOLDED, (API_TOKENS,)), 0)
    ledger.close()
    return out


def test_memory_bounded_with_100k_distinct_label_sets(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from tests.test_cardinality import _workload\n"
        "print(json.dumps(_workload(sys.argv[1])))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "ledger.sqlite3")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    cap = 10_000
    # Admin API: 10,000 keys keep their series, the rest fold into one series per token type.
    assert got["series:api_tokens"] == cap + len(TOKEN_TYPES)
    assert got["sum:api_tokens"] == got["sent"] == KEYS * (KEYS + 1) // 2
    assert got["folded:api_tokens"] == KEYS - cap  # one update per folded label set
    # Client side: models fold at max_models (200 + other), projects at the series cap.
    assert got["series:tokens"] == cap + 2  # + (other, input|output, sdk, other)
    assert got["sum:tokens"] == 3 * KEYS
    assert got["sum:unpriced_tokens"] == 3 * KEYS
    assert got["series:unpriced_tokens"] == got["max_models"] + 1
    assert got["series:steps"] == got["max_models"] + 1
    assert got["sum:steps"] == KEYS
    # Everything else is a handful of series: the ledger holds ~20,000 numbers, not 300,000.
    assert got["snapshot"] <= 2 * cap + 1_000
    # Peak RSS growth in the worker, from opening the ledger to the end: ~20,400 series
    # (~0.45 KB each with their label tuples) plus one batch of records and SQLite's page
    # cache measured 9 MB; uncapped, the same workload holds 300,400 series and grows by
    # 81 MB. 40 MB leaves 4x headroom and still fails without the cap.
    assert got["rss_growth_kb"] < 40 * 1024, got
