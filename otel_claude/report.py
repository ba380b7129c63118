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
from otel_claude.records import TOKEN_TYPES, StepRecord, merge_into, merge_steps
from otel_claude.sources.coldscan import PARALLEL_BYTES, Channel, TaskQueue, Workers, paused_gc
from otel_claude.sources.messages import Limits
from otel_claude.sources.transcripts import (
    TRANSCRIPT_LIMITS,
    LineStats,
    parse_lines,
    read_file,
    transcript_entries,
)

#: Without file sizes, a history of fewer files than this is scanned by this process alone.
PARALLEL_FILES = 64


#: What ``summarize`` adds steps up by: model, batch, US-only inference, fast mode, long
#: context, UTC day (epoch days).
GroupKey = tuple[str, bool, bool, bool, bool, int | None]
#: A step as a plain tuple (``StepRecord.row``), as worker processes send them.
Row = tuple[Any, ...]


@dataclass(frozen=True)
class ScanRules:
    """What a scan applies to every line, in every process: the time window (epoch
    seconds, either end open), the line limits (``transcript_limits`` of the settings, as
    ``serve`` applies them) and the input-side tokens above which a step is priced as long
    context (the price table's ``long_context_threshold_tokens``)."""

    lo: float | None = None
    hi: float | None = None
    limits: Limits = TRANSCRIPT_LIMITS
    long_context_tokens: int = PriceTable.long_context_threshold_tokens


@dataclass
class History:
    """Deduplicated steps of a transcript history (one per message id) and what the scan saw.

    A scan by one process keeps its steps one by one in ``steps``. A parallel scan keeps
    them as sums per summary group in ``groups`` instead (see ``_absorb``): the totals are
    the same, without sending 15k records from process to process.
    """

    steps: dict[str, StepRecord] = field(default_factory=dict)
    stats: LineStats = field(default_factory=LineStats)
    files: int = 0
    #: Sums of the steps not in ``steps``: input, output, cache read, 5m and 1h cache
    #: writes, web searches, number of steps.
    groups: dict[GroupKey, list[int]] = field(default_factory=dict)
    #: The long-context threshold the ``groups`` keys were made with.
    long_context_tokens: int = PriceTable.long_context_threshold_tokens

    @property
    def step_count(self) -> int:
        """Deduplicated steps in all: those in ``steps`` and those in ``groups``."""
        return len(self.steps) + sum(sums[6] for sums in self.groups.values())


def add_to_groups(
    groups: dict[GroupKey, list[int]],
    steps: Iterable[StepRecord],
    long_context_tokens: int,
    sign: int = 1,
) -> None:
    """Add (``sign`` -1: take away) steps to the sums per summary group; a step whose
    input side is above ``long_context_tokens`` goes to a long-context group.

    Fields read straight from the records, and adding and taking away written out
    separately: this runs for every step of a history, where building a row tuple and
    multiplying each value by the sign took twice the time (0.05 s of 30k steps).
    """
    for step in steps:
        inp, read, c5m, c1h = step.input, step.cache_read, step.cache_5m, step.cache_1h
        ts = step.timestamp
        key = (
            step.model,
            step.batch,
            step.geo_us,
            step.fast,
            inp + read + c5m + c1h > long_context_tokens,
            None if ts is None else int(ts // 86400),
        )
        sums = groups.get(key)
        if sums is None:
            sums = groups[key] = [0, 0, 0, 0, 0, 0, 0]
        if sign > 0:
            sums[0] += inp
            sums[1] += step.output
            sums[2] += read
            sums[3] += c5m
            sums[4] += c1h
            sums[5] += step.web_search
            sums[6] += 1
        else:
            sums[0] -= inp
            sums[1] -= step.output
            sums[2] -= read
            sums[3] -= c5m
            sums[4] -= c1h
            sums[5] -= step.web_search
            sums[6] -= 1


def history_files(
    roots: Iterable[Path], since: datetime | None = None, *, sizes: bool = True
) -> list[tuple[int, str]]:
    """``(size, path)`` of every transcript below ``roots`` that may hold usage from ``since``.

    A file not modified since ``since`` only holds older lines and is left out unread.
    Without ``sizes`` (and ``since``) nothing is stat'ed and every size is -1: a third of
    the listing's time (12 ms for 3,000 files) when no progress bar needs the total. Paths
    are plain strings: ``Path`` objects took another 9 ms.
    """
    lo = since.timestamp() if since else None
    if not sizes and lo is None:
        return [(-1, path) for path, _ in transcript_entries(list(roots))]
    files: list[tuple[int, str]] = []
    for path, entry in transcript_entries(list(roots)):
        try:
            st = entry.stat()
        except OSError:
            continue
        if lo is not None and st.st_mtime < lo:
            continue
        files.append((st.st_size, path))
    return files


def scan_history(
    roots: Iterable[Path],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
    files: list[tuple[int, str]] | None = None,
    parallel_bytes: int = PARALLEL_BYTES,
    keep_steps: bool = False,
    limits: Limits = TRANSCRIPT_LIMITS,
    long_context_tokens: int = PriceTable.long_context_threshold_tokens,
) -> History:
    """Read every transcript below ``roots`` (or the given ``files``) once, one step per id.

    With ``workers`` > 1 this process and ``workers - 1`` forked children take the files
    one at a time from a shared queue, concurrently. Every part deduplicates its own
    files and the parts are merged with the same rule (largest value of each field, earliest
    timestamp), which is order-independent: the result does not depend on the split.
    Their steps then end up as group sums (``History.groups``), or one by one in
    ``History.steps`` with ``keep_steps``. ``limits`` and ``long_context_tokens``: see
    ``ScanRules``; ``summarize`` needs the price table with that threshold.
    """
    if files is None:
        files = history_files(roots, since)
    rules = ScanRules(
        since.timestamp() if since else None,
        until.timestamp() if until else None,
        limits,
        long_context_tokens,
    )
    with paused_gc():
        return _scan(files, rules, workers, progress, parallel_bytes, keep_steps)


def _scan(
    files: list[tuple[int, str]],
    rules: ScanRules,
    workers: int,
    progress: Callable[[int], None] | None,
    parallel_bytes: int,
    keep_steps: bool,
) -> History:
    count = max(1, min(workers, len(files)))
    sized = all(size >= 0 for size, _ in files)
    if (
        count == 1
        or (sized and sum(size for size, _ in files) < parallel_bytes)
        or (not sized and len(files) < PARALLEL_FILES and parallel_bytes > 0)
    ):
        return _scan_files([p for _, p in files], rules, progress)
    # Large ones first: one taken last would finish last. Sizes not known: as listed.
    paths = (
        [path for _, path in sorted(files, key=lambda f: -f[0])] if sized else [p for _, p in files]
    )
    taken = TaskQueue(len(paths))
    # Forked children start at once with everything imported. They and this process take
    # files one at a time from a shared queue, so all finish together. Each child sends
    # the ids of its deduplicated steps and their sums per summary group, then the steps
    # of the ids asked for: those another part has too (or all, to keep steps).
    try:
        children = Workers(_scan_part, [(paths, taken, rules, not keep_steps)] * (count - 1))
    except BaseException:
        taken.close()
        raise
    try:
        merged = _scan_files((paths[i] for i in taken), rules, progress, grouped=not keep_steps)
        own = merged.steps
        if not keep_steps:
            merged.steps = {}  # every one of them is in merged.groups
        parts = _collect(children, count - 1, own, keep_steps)
    finally:
        children.stop()
        taken.close()
    _absorb(merged, own, parts, keep_steps)
    if progress is not None:
        progress(0)
    return merged


#: A child's part: files read, line statistics, sums per group of all its steps, the rows of
#: the steps asked for (see ``_collect``).
_Part = tuple[int, LineStats, dict[GroupKey, list[int]], list[Row]]


def _scan_part(share: tuple[list[str], TaskQueue, ScanRules, bool], channel: Channel) -> None:
    """A child's part: its files' deduplicated steps summed per group (when ``grouped``),
    sent with their ids; then the rows (``StepRecord.row``) of the ids the parent asks for."""
    paths, taken, rules, grouped = share
    history = _scan_files((paths[i] for i in taken), rules, grouped=grouped)
    steps = history.steps
    channel.send((history.files, history.stats, history.groups, list(steps)))
    wanted: list[str] = channel.recv()
    channel.send([steps[mid].row() for mid in wanted])


def _collect(children: Workers, count: int, own: dict[str, StepRecord], keep: bool) -> list[_Part]:
    """Every child's part, with the rows of the steps that must be merged one by one.

    Those are the ids that another part also has (a resumed session copied into files that
    two processes read), a few hundred in 30k: only their rows cross the pipe, not 15k.
    With ``keep`` every row is asked for.
    """
    first: dict[int, tuple[int, LineStats, dict[GroupKey, list[int]], list[str]]] = {}
    rows: dict[int, list[Row]] = {}
    for index, message in children.messages():
        if index not in first:
            first[index] = message
            if len(first) == count:  # every child waits for its question now
                for i, wanted in _shared_ids(first, own, keep).items():
                    children.reply(i, wanted)
        else:
            rows[index] = message
    return [(*first[i][:3], rows[i]) for i in sorted(first)]


def _shared_ids(
    first: dict[int, tuple[int, LineStats, dict[GroupKey, list[int]], list[str]]],
    own: dict[str, StepRecord],
    keep: bool,
) -> dict[int, list[str]]:
    """Per child, its ids that this process or another child has too (all, with ``keep``)."""
    if keep:
        return {i: part[3] for i, part in first.items()}
    others: set[str] = set()
    repeated: set[str] = set()
    if len(first) > 1:  # ids in more than one child
        for part in first.values():
            ids = set(part[3])
            repeated |= others & ids
            others |= ids
    wanted: dict[int, list[str]] = {}
    for i, part in first.items():
        ids = set(part[3])
        wanted[i] = list((ids & own.keys()) | (ids & repeated))  # set operations: in C
    return wanted


def _absorb(merged: History, own: dict[str, StepRecord], parts: list[_Part], keep: bool) -> None:
    """Merge the children's parts into ``merged``, this process's part (its steps ``own``).

    With ``keep`` every child sent all its rows and they are merged into ``merged.steps``
    one by one. Otherwise every step is counted through group sums (``merged.groups``):
    this process's own, summed while the children finished, and each child's, summed in
    the child. A step that several parts have is taken out of the sums of each and its
    merged value (the usual rule) counted once instead; nothing else is done per step.
    """
    if keep:
        for files_seen, stats, _groups, rows in parts:
            merged.files += files_seen
            merged.stats.add(stats)
            for row in rows:
                step = StepRecord(*row)
                known = own.get(step.message_id)
                own[step.message_id] = step if known is None else merge_steps(known, step)
        return
    total = merged.groups
    threshold = merged.long_context_tokens
    shared: dict[str, StepRecord] = {}
    for files_seen, stats, groups, rows in parts:
        merged.files += files_seen
        merged.stats.add(stats)
        add_to_groups(groups, (StepRecord(*row) for row in rows), threshold, -1)  # merged below
        for key, sums in groups.items():
            into = total.get(key)
            if into is None:
                total[key] = sums
            else:
                for i, value in enumerate(sums):
                    into[i] += value
        for row in rows:
            step = StepRecord(*row)
            known = shared.get(step.message_id)
            shared[step.message_id] = step if known is None else merge_steps(known, step)
    for mid, step in shared.items():
        known = own.get(mid)
        if known is not None:
            add_to_groups(total, [known], threshold, -1)
            step = merge_steps(known, step)
        own[mid] = step
        add_to_groups(total, [step], threshold)


def _scan_files(
    paths: Iterable[str],
    rules: ScanRules,
    progress: Callable[[int], None] | None = None,
    *,
    grouped: bool = False,
) -> History:
    """Every step of ``paths``, deduplicated. With ``grouped`` they are also summed per
    summary group as the files are read: ``groups`` then counts the very steps in
    ``steps`` (a part of a parallel scan, for ``_absorb``; not a History to summarize)."""
    history = History(
        stats=LineStats(limits=rules.limits), long_context_tokens=rules.long_context_tokens
    )
    steps = history.steps
    stats = history.stats
    groups = history.groups
    lo, hi, threshold = rules.lo, rules.hi, rules.long_context_tokens
    for path in paths:
        try:
            data = read_file(path)[2]
        except OSError:
            continue
        history.files += 1
        if progress is not None:
            progress(len(data))
        fresh: dict[str, StepRecord] = {}  # first seen in this file
        before: dict[str, StepRecord] = {}  # seen in an earlier file: a copy of it then
        for record in parse_lines(data, stats):
            if type(record) is not StepRecord:
                continue
            ts = record.timestamp
            if ts is not None and ((lo is not None and ts < lo) or (hi is not None and ts >= hi)):
                continue
            mid = record.message_id
            known = steps.get(mid)
            if known is None:
                steps[mid] = record
                if grouped:
                    fresh[mid] = record
            else:
                if grouped and mid not in fresh and mid not in before:
                    before[mid] = StepRecord(*known.row())
                merge_into(known, record)  # the records are this scan's own
        if grouped:
            # Summed file by file, while the other processes still parse: at the end of
            # the scan nothing is left to sum (12 ms of 15k steps in the serial tail).
            add_to_groups(groups, fresh.values(), threshold)
            if before:
                add_to_groups(groups, before.values(), threshold, -1)
                add_to_groups(groups, (steps[mid] for mid in before), threshold)
    return history


def _empty() -> dict[str, Any]:
    return {**{t: 0 for t in TOKEN_TYPES}, "web_search_requests": 0, "cost_pico": 0}


def summarize(history: History, prices: PriceTable, *, by: str = "day") -> dict[str, Any]:
    """Totals per model, per period (day or month, UTC) and overall; cost in USD.

    ``prices`` must have the long-context threshold the history was scanned with.
    """
    if history.groups and history.long_context_tokens != prices.long_context_threshold_tokens:
        raise ValueError(
            f"history scanned with a long-context threshold of {history.long_context_tokens} "
            f"tokens, prices have {prices.long_context_threshold_tokens}"
        )
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
    groups = {key: list(sums) for key, sums in history.groups.items()}
    add_to_groups(groups, history.steps.values(), prices.long_context_threshold_tokens)
    for (model, batch, geo_us, fast, long_context, day), v in groups.items():
        if not v[6]:
            continue  # every step of the group moved to another one when parts were merged
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
            "steps": history.step_count,
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
