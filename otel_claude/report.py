"""``otel-claude report``: one pass over the transcript history, no daemon and no state.

The counting rules are the ledger's (one step per ``message.id`` across every file, the
largest value of each field, 5m/1h cache writes, no synthetic or error lines); the
aggregation is in memory because a report keeps nothing. A step belongs to the UTC day of
its first timestamp; ``--since``/``--until`` skip whole files by modification time before
reading them and single steps by timestamp.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from otel_claude.pricing import Modifiers, PriceTable
from otel_claude.records import TOKEN_TYPES, StepRecord
from otel_claude.sources.transcripts import LineStats, parse_lines, transcript_files

LONG_CONTEXT_THRESHOLD = 200_000
_FIELDS = len(TOKEN_TYPES) + 1  # token types + web searches


@dataclass
class _Step:
    model: str
    values: list[int]
    timestamp: float | None
    batch: bool
    geo_us: bool
    fast: bool


@dataclass
class History:
    """Deduplicated steps of a transcript history and what the scan saw."""

    steps: dict[str, _Step] = field(default_factory=dict)
    stats: LineStats = field(default_factory=LineStats)
    files: int = 0


def scan_history(
    roots: Iterable[Path],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> History:
    """Read every transcript below ``roots`` once, keeping one step per message id.

    With ``workers`` > 1 files are shared out to that many processes by size; each
    deduplicates its own files and the parent merges with the same max rule, which is
    order-independent, so the result does not depend on how files were split.
    """
    lo = since.timestamp() if since else None
    hi = until.timestamp() if until else None
    files: list[tuple[int, Path]] = []
    for path in transcript_files(list(roots)):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if lo is not None and st.st_mtime < lo:
            continue  # not written since `since`: every line in it is older
        files.append((st.st_size, path))
    count = max(1, min(workers, len(files)))
    if count == 1 or sum(size for size, _ in files) < _PARALLEL_BYTES:
        return _scan_files([p for _, p in files], lo, hi, progress)
    groups: list[list[Path]] = [[] for _ in range(count)]
    loads = [0] * count
    for size, path in sorted(files, key=lambda f: -f[0]):
        i = loads.index(min(loads))
        groups[i].append(path)
        loads[i] += size
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(count) as pool:
        parts = pool.starmap(_scan_files, [(g, lo, hi) for g in groups])
    merged = parts[0]
    for part in parts[1:]:
        merged.files += part.files
        merged.stats.lines += part.stats.lines
        merged.stats.skipped += part.stats.skipped
        merged.stats.blank += part.stats.blank
        for reason, n in part.stats.rejected.items():
            merged.stats.rejected[reason] = merged.stats.rejected.get(reason, 0) + n
        for mid, step in part.steps.items():
            _merge(merged.steps, mid, step)
    return merged


_PARALLEL_BYTES = 64 << 20  # below this, forking costs more than it saves


def _merge(steps: dict[str, _Step], mid: str, step: _Step) -> None:
    known = steps.get(mid)
    if known is None:
        steps[mid] = step
        return
    known.values = [max(a, b) for a, b in zip(known.values, step.values, strict=True)]
    if known.timestamp is None or (step.timestamp is not None and step.timestamp < known.timestamp):
        known.timestamp = step.timestamp
    known.batch |= step.batch
    known.geo_us |= step.geo_us
    known.fast |= step.fast


def _scan_files(
    paths: list[Path],
    lo: float | None,
    hi: float | None,
    progress: Callable[[int], None] | None = None,
) -> History:
    history = History()
    steps = history.steps
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        history.files += 1
        if progress is not None:
            progress(len(data))
        for record in parse_lines(data, history.stats):
            if not isinstance(record, StepRecord):
                continue
            ts = record.timestamp
            if ts is not None and ((lo is not None and ts < lo) or (hi is not None and ts >= hi)):
                continue
            _merge(
                steps,
                record.message_id,
                _Step(
                    record.model,
                    list(record.fields()),
                    ts,
                    record.batch,
                    record.geo_us,
                    record.fast,
                ),
            )
    return history


def _empty() -> dict[str, Any]:
    return {**{t: 0 for t in TOKEN_TYPES}, "web_search_requests": 0, "cost_pico": 0}


def summarize(history: History, prices: PriceTable, *, by: str = "day") -> dict[str, Any]:
    """Totals per model, per period (day or month, UTC) and overall; cost in USD."""
    models: defaultdict[str, dict[str, Any]] = defaultdict(_empty)
    periods: defaultdict[str, defaultdict[str, dict[str, Any]]] = defaultdict(
        lambda: defaultdict(_empty)
    )
    unpriced: set[str] = set()
    rates: dict[tuple[str, bool, bool, bool, bool], list[int | None]] = {}
    labels: dict[int, str] = {}
    fmt = "%Y-%m" if by == "month" else "%Y-%m-%d"
    web = prices.web_search_picousd_per_request()
    for step in history.steps.values():
        v = step.values
        long_context = (v[0] + v[2] + v[3] + v[4]) > LONG_CONTEXT_THRESHOLD
        key = (step.model, step.batch, step.geo_us, step.fast, long_context)
        row_rates = rates.get(key)
        if row_rates is None:
            mods = Modifiers(
                batch=step.batch,
                geo_us=step.geo_us,
                fast=step.fast,
                long_context=long_context and prices.long_context_eligible(step.model),
            )
            row_rates = rates[key] = [
                prices.picousd_per_token(step.model, t, mods) for t in TOKEN_TYPES
            ]
        cost = v[5] * web
        for i, rate in enumerate(row_rates):
            if v[i]:
                if rate is None:
                    unpriced.add(step.model)
                else:
                    cost += v[i] * rate
        if step.timestamp is None:
            period = "unknown"
        else:
            day = int(step.timestamp // 86400)
            period = labels.get(day) or labels.setdefault(
                day, datetime.fromtimestamp(day * 86400, UTC).strftime(fmt)
            )
        for bucket in (models[step.model], periods[period][step.model]):
            for i, token_type in enumerate(TOKEN_TYPES):
                bucket[token_type] += v[i]
            bucket["web_search_requests"] += v[5]
            bucket["cost_pico"] += cost
    totals = _empty()
    for row in models.values():
        for k in totals:
            totals[k] += row[k]
    return {
        "models": {m: _finish(r) for m, r in sorted(models.items())},
        "totals": _finish(totals),
        **_periods(periods, by),
        "unpriced_models": sorted(unpriced),
        "scan": {
            "files": history.files,
            "lines": history.stats.lines,
            "steps": len(history.steps),
            "rejected": dict(history.stats.rejected),
        },
    }


def _periods(periods: dict[str, defaultdict[str, dict[str, Any]]], by: str) -> dict[str, Any]:
    """``days``/``months`` of the JSON (nothing when grouping by model only)."""
    if by == "model":
        return {}
    return {
        ("days" if by == "day" else "months"): {
            p: {
                **_finish(_sum(rows.values())),
                "models": {m: _finish(r) for m, r in sorted(rows.items())},
            }
            for p, rows in sorted(periods.items())
        }
    }


def _sum(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    out = _empty()
    for row in rows:
        for k in out:
            out[k] += row[k]
    return out


def _finish(row: dict[str, Any]) -> dict[str, Any]:
    """Integers for tokens; USD as a float; the cache hit ratio of input-side tokens."""
    out = {k: v for k, v in row.items() if k != "cost_pico"}
    out["cost_usd"] = row["cost_pico"] / 10**12
    input_side = (
        row["input"] + row["cache_read"] + row["cache_creation_5m"] + row["cache_creation_1h"]
    )
    out["cache_hit_ratio"] = round(row["cache_read"] / input_side, 4) if input_side else 0.0
    return out


def render_table(summary: dict[str, Any]) -> str:
    """A fixed-width table: one row per period and model, then the totals."""
    periods = summary.get("days") or summary.get("months") or {}
    header = [
        "period",
        "model",
        "input",
        "output",
        "cache read",
        "cache 5m",
        "cache 1h",
        "hit %",
        "cost USD",
    ]
    rows = [header]

    def row(period: str, model: str, r: dict[str, Any]) -> list[str]:
        return [
            period,
            model,
            f"{r['input']:,}",
            f"{r['output']:,}",
            f"{r['cache_read']:,}",
            f"{r['cache_creation_5m']:,}",
            f"{r['cache_creation_1h']:,}",
            f"{100 * r['cache_hit_ratio']:.1f}",
            f"{r['cost_usd']:,.2f}",
        ]

    for period, data in periods.items():
        for model, r in data["models"].items():
            rows.append(row(period, model, r))
    if not periods:  # --by model
        rows[0][0] = "scope"
        for model, r in summary["models"].items():
            rows.append(row("all", model, r))
    rows.append(row("total", "", summary["totals"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
    if summary["unpriced_models"]:
        lines.append(f"no price for: {', '.join(summary['unpriced_models'])} (cost not included)")
    return "\n".join(lines)


def rejected_lines(history: History) -> int:
    """How many lines were unusable (for the exit status and a note on stderr)."""
    return sum(history.stats.rejected.values())
