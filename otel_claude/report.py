"""``otel-claude report``: one pass over the transcript history, no daemon and no state.

The counting rules are the ledger's (one step per ``message.id`` across every file, the
largest value of each field, 5m/1h cache writes, no synthetic or error lines); the
aggregation is in memory because a report keeps nothing. A step belongs to the UTC day of
its first timestamp; ``--since``/``--until`` skip whole files by modification time before
reading them and single steps by timestamp.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from otel_claude.pricing import Modifiers, PriceTable
from otel_claude.records import TOKEN_TYPES, StepRecord, merge_steps
from otel_claude.sources.coldscan import PARALLEL_BYTES, TaskQueue, Workers, paused_gc
from otel_claude.sources.transcripts import LineStats, parse_lines, read_file, transcript_entries

LONG_CONTEXT_THRESHOLD = 200_000


@dataclass
class History:
    """Deduplicated steps of a transcript history (one per message id) and what the scan saw."""

    steps: dict[str, StepRecord] = field(default_factory=dict)
    stats: LineStats = field(default_factory=LineStats)
    files: int = 0


def history_files(roots: Iterable[Path], since: datetime | None = None) -> list[tuple[int, Path]]:
    """``(size, path)`` of every transcript below ``roots`` that may hold usage from ``since``.

    A file not modified since ``since`` only holds older lines and is left out unread.
    """
    lo = since.timestamp() if since else None
    files: list[tuple[int, Path]] = []
    for path, entry in transcript_entries(list(roots)):
        try:
            st = entry.stat()
        except OSError:
            continue
        if lo is not None and st.st_mtime < lo:
            continue
        files.append((st.st_size, Path(path)))
    return files


def scan_history(
    roots: Iterable[Path],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
    files: list[tuple[int, Path]] | None = None,
    parallel_bytes: int = PARALLEL_BYTES,
) -> History:
    """Read every transcript below ``roots`` (or the given ``files``) once, one step per id.

    With ``workers`` > 1 this process and ``workers - 1`` forked children take the files
    one at a time from a shared queue, concurrently. Every part deduplicates its own
    files and the parts are merged with the same rule (largest value of each field, earliest
    timestamp), which is order-independent: the result does not depend on the split.
    """
    if files is None:
        files = history_files(roots, since)
    with paused_gc():
        return _scan(files, since, until, workers, progress, parallel_bytes)


def _scan(
    files: list[tuple[int, Path]],
    since: datetime | None,
    until: datetime | None,
    workers: int,
    progress: Callable[[int], None] | None,
    parallel_bytes: int,
) -> History:
    lo = since.timestamp() if since else None
    hi = until.timestamp() if until else None
    count = max(1, min(workers, len(files)))
    if count == 1 or sum(size for size, _ in files) < parallel_bytes:
        return _scan_files([p for _, p in files], lo, hi, progress)
    paths = [path for _, path in sorted(files, key=lambda f: -f[0])]  # large ones first
    taken = TaskQueue(len(paths))
    # Forked children start at once with everything imported. They and this process take
    # files one at a time from a shared queue, so all finish together; each child sends
    # its deduplicated steps back in one message.
    children = Workers(_scan_part, [(paths, taken, lo, hi)] * (count - 1))
    try:
        merged = _scan_files((paths[i] for i in taken), lo, hi, progress)
        parts: list[tuple[int, LineStats, list[tuple[Any, ...]]]] = list(children.messages())
    finally:
        children.stop()
    steps = merged.steps
    for files_seen, stats, rows in parts:
        merged.files += files_seen
        merged.stats.add(stats)
        for row in rows:
            step = StepRecord(*row)
            known = steps.get(step.message_id)
            steps[step.message_id] = step if known is None else merge_steps(known, step)
        if progress is not None:
            progress(0)
    return merged


def _scan_part(
    share: tuple[list[Path], TaskQueue, float | None, float | None],
    send: Callable[[tuple[int, LineStats, list[tuple[Any, ...]]]], None],
) -> None:
    """A child's part: the deduplicated steps of the files it took, as rows (see
    ``StepRecord.row``)."""
    paths, taken, lo, hi = share
    history = _scan_files((paths[i] for i in taken), lo, hi)
    send((history.files, history.stats, [s.row() for s in history.steps.values()]))


def _scan_files(
    paths: Iterable[Path],
    lo: float | None,
    hi: float | None,
    progress: Callable[[int], None] | None = None,
) -> History:
    history = History()
    steps = history.steps
    stats = history.stats
    for path in paths:
        try:
            data = read_file(path)[2]
        except OSError:
            continue
        history.files += 1
        if progress is not None:
            progress(len(data))
        for record in parse_lines(data, stats):
            if type(record) is not StepRecord:
                continue
            ts = record.timestamp
            if ts is not None and ((lo is not None and ts < lo) or (hi is not None and ts >= hi)):
                continue
            known = steps.get(record.message_id)
            steps[record.message_id] = record if known is None else merge_steps(known, record)
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
    # Steps are first summed per (model, modifiers, day): prices are integer picodollars
    # per token, so pricing the sums is exact, and it halves the work on 30k steps.
    groups: dict[tuple[str, bool, bool, bool, bool, int | None], list[int]] = {}
    for step in history.steps.values():
        inp, read, c5m, c1h = step.input, step.cache_read, step.cache_5m, step.cache_1h
        ts = step.timestamp
        key = (
            step.model,
            step.batch,
            step.geo_us,
            step.fast,
            inp + read + c5m + c1h > LONG_CONTEXT_THRESHOLD,
            None if ts is None else int(ts // 86400),
        )
        sums = groups.get(key)
        if sums is None:
            groups[key] = [inp, step.output, read, c5m, c1h, step.web_search]
        else:
            sums[0] += inp
            sums[1] += step.output
            sums[2] += read
            sums[3] += c5m
            sums[4] += c1h
            sums[5] += step.web_search
    for (model, batch, geo_us, fast, long_context, day), v in groups.items():
        rate_key = (model, batch, geo_us, fast, long_context)
        row_rates = rates.get(rate_key)
        if row_rates is None:
            mods = Modifiers(
                batch=batch,
                geo_us=geo_us,
                fast=fast,
                long_context=long_context and prices.long_context_eligible(model),
            )
            row_rates = rates[rate_key] = [
                prices.picousd_per_token(model, t, mods) for t in TOKEN_TYPES
            ]
        cost = v[5] * web
        for i, rate in enumerate(row_rates):
            if v[i]:
                if rate is None:
                    unpriced.add(model)
                else:
                    cost += v[i] * rate
        if day is None:
            period = "unknown"
        else:
            period = labels.get(day) or labels.setdefault(
                day, datetime.fromtimestamp(day * 86400, UTC).strftime(fmt)
            )
        for bucket in (models[model], periods[period][model]):
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
