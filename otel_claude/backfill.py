"""``otel-claude backfill``: past Admin API data as OpenMetrics for ``promtool`` to import.

The output holds cumulative counters sampled at every hour end between ``--since`` and
``--until``, with the same names and labels the live exporter serves, so dashboards show
history from the first day::

    otel-claude backfill --since 2026-10-01T00:00:00Z --out backfill.om
    promtool tsdb create-blocks-from openmetrics backfill.om /var/lib/prometheus/metrics2

Usage comes in 1-hour buckets; cost and Claude Code analytics only exist per day, so their
counters step once per day (at the day's end).
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from typing import TextIO, TypeVar

from otel_claude.admin.claude_code import ClaudeCodeReport
from otel_claude.admin.cost import CostReport
from otel_claude.admin.usage import MAX_LIMIT, UsageReport, floor_time
from otel_claude.exposition.families import Family, family_series
from otel_claude.ledger import BucketValue
from otel_claude.progress import Progress
from otel_claude.timeutil import parse_time

log = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

Samples = list[tuple[datetime, BucketValue]]
T = TypeVar("T")


def hour_ends(since: datetime, until: datetime) -> list[datetime]:
    """Every hour end after ``since`` up to and including ``until``."""
    t = floor_time(since, "1h") + HOUR
    out = []
    while t <= until:
        out.append(t)
        t += HOUR
    return out


def collect(
    *,
    since: datetime,
    until: datetime,
    usage: UsageReport | None,
    cost: CostReport | None,
    claude_code: ClaudeCodeReport | None,
    progress: Progress | None = None,
    concurrency: int = 1,
) -> Samples:
    """Read every report over [since, until): (bucket end, value) pairs.

    The three reports, and the days of Claude Code analytics (one request per day), are
    independent reads; up to ``concurrency`` of them run at once (the pages of one read
    follow one another), so at most ``concurrency`` requests are in flight. The pairs come
    back in the same order whatever the concurrency: usage, cost, then Claude Code day by
    day. When a read fails, reads not yet started are dropped, those under way finish, and
    the error of the first failing read in that order is raised.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    lock = threading.Lock()

    def tick(label: str) -> Callable[[], None] | None:
        if progress is None:
            return None

        def step() -> None:
            with lock:  # reads run on several threads
                progress.step(label)

        return step

    reads: list[Callable[[], Samples]] = []
    if usage is not None:
        reads.append(lambda: _usage_samples(usage, since, until, tick("usage report")))
    if cost is not None:
        reads.append(lambda: _cost_samples(cost, since, until, tick("cost report")))
    if claude_code is not None:
        cc_day = since.astimezone(UTC).date()
        while _midnight(cc_day) < until:
            reads.append(_claude_code_read(claude_code, cc_day, tick(f"claude code {cc_day}")))
            cc_day += DAY
    out: Samples = []
    for part in run_reads(reads, concurrency):
        out += part
    return out


def run_reads(reads: Sequence[Callable[[], T]], concurrency: int) -> list[T]:
    """Every read's result, in order, with at most ``concurrency`` reads running at once.

    On a failure the reads not yet started are cancelled, the running ones finish, and the
    first failure in order is raised (any others are logged).
    """
    if concurrency <= 1 or len(reads) <= 1:
        return [read() for read in reads]
    with ThreadPoolExecutor(
        max_workers=min(concurrency, len(reads)), thread_name_prefix="backfill"
    ) as pool:
        futures = [pool.submit(read) for read in reads]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        finally:
            for future in futures:
                future.cancel()  # only those not started yet; no-op once all are done
    # Leaving the pool waited for the reads under way.
    errors = [exc for f in futures if not f.cancelled() and (exc := f.exception()) is not None]
    if errors:
        for other in errors[1:]:
            log.warning("backfill read also failed", extra={"fields": {"error": str(other)}})
        raise errors[0]
    return [future.result() for future in futures]


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _usage_samples(
    usage: UsageReport, since: datetime, until: datetime, on_page: Callable[[], None] | None
) -> Samples:
    start = floor_time(since, "1h")
    values, _ = usage.fetch(start, until, now=until, width="1h", on_page=on_page)
    ends: dict[str, datetime] = {}  # bucket start -> end, parsed once per bucket
    out: Samples = []
    for v in values:
        end = ends.get(v.bucket)
        if end is None:
            end = ends[v.bucket] = parse_time(v.bucket) + HOUR
        out.append((end, v))
    return out


def _cost_samples(
    cost: CostReport, since: datetime, until: datetime, on_page: Callable[[], None] | None
) -> Samples:
    start = floor_time(since, "1d")
    return [
        (ends, CostReport.value(day, labels, group, cents))
        for day, ends, labels, group, cents in cost.read(start, until, now=until, on_page=on_page)
    ]


def _claude_code_read(
    claude_code: ClaudeCodeReport, day: date, on_page: Callable[[], None] | None
) -> Callable[[], Samples]:
    def read() -> Samples:
        ends = _midnight(day) + DAY
        return [(ends, v) for v in claude_code.day_values(day, on_page=on_page)]

    return read


def estimate_requests(
    since: datetime, until: datetime, *, usage: bool, cost: bool, claude_code: bool
) -> int:
    """The fewest requests a backfill can take (one page per report window/day)."""
    hours = max(1, int((until - floor_time(since, "1h")) / HOUR))
    days = max(1, (until.date() - since.astimezone(UTC).date()).days + 1)
    return (
        ((-(-hours // MAX_LIMIT["1h"])) if usage else 0)
        + ((-(-days // 31)) if cost else 0)
        + (days if claude_code else 0)
    )


def write_openmetrics(
    out: TextIO,
    samples: Iterable[tuple[datetime, BucketValue]],
    families: Sequence[Family],
    *,
    since: datetime,
    until: datetime,
    extra_labels: dict[str, str] | None = None,
) -> int:
    """Write cumulative counters at every hour end; return the number of samples.

    A series starts at its first bucket end and then has a sample at every later hour end;
    increments at bucket ends off the hour grid are not written.
    """
    grid = hour_ends(since, until)
    position = {t: i for i, t in enumerate(grid)}
    stamps = [f" {int(t.timestamp())}\n" for t in grid]
    # family key -> (stored labels, bucket end) -> value (summed over groups)
    per_family: defaultdict[str, dict[tuple[tuple[str, ...], datetime], int]] = defaultdict(dict)
    for ends, v in samples:
        slot = per_family[v.family]
        key = (v.labels, ends)
        slot[key] = slot.get(key, 0) + v.value
    extra = sorted((extra_labels or {}).items())
    written = 0
    for family in families:
        stored = per_family.get(family.key)
        if not stored:
            continue
        shown_of = _projection(family)
        # Projected increments per series and bucket end.
        increments: defaultdict[tuple[str, ...], dict[datetime, int]] = defaultdict(dict)
        for (labels, ends), value in stored.items():
            steps = increments[shown_of(labels)]
            steps[ends] = steps.get(ends, 0) + value
        out.write(f"# HELP {family.name} {family.help}\n")
        out.write(f"# TYPE {family.name} counter\n")
        number = _numbers(family)
        for shown in sorted(increments):
            steps = increments[shown]
            first = bisect_left(grid, min(steps))
            deltas = [0] * (len(grid) - first)
            for t, value in steps.items():
                at = position.get(t)
                if at is not None:
                    deltas[at - first] += value
            names = [*zip(family.labels, shown, strict=True), *extra]
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in names if v != "")
            prefix = f"{family.name}_total{{{label_text}}} "
            out.write(
                "".join(
                    [
                        prefix + number(total) + stamp
                        for total, stamp in zip(accumulate(deltas), stamps[first:], strict=True)
                    ]
                )
            )
            written += len(deltas)
    out.write("# EOF\n")
    return written


def _projection(family: Family) -> Callable[[tuple[str, ...]], tuple[str, ...]]:
    """Stored labels -> exposed labels of ``family`` (as ``family_series`` projects them)."""
    cache: dict[tuple[str, ...], tuple[str, ...]] = {}

    def shown(labels: tuple[str, ...]) -> tuple[str, ...]:
        got = cache.get(labels)
        if got is None:
            (got,) = family_series(family, {(family.key, labels): 0})
            cache[labels] = got
        return got

    return shown


def _numbers(family: Family) -> Callable[[int], str]:
    """Exposed text of a ledger integer of ``family`` (memoized: totals repeat every hour)."""
    if family.divisor == 1:
        return str
    cache: dict[int, str] = {}

    def text(raw: int) -> str:
        got = cache.get(raw)
        if got is None:
            got = cache[raw] = _number(family, raw)
        return got

    return text


def _number(family: Family, raw: int) -> str:
    value = family.value(raw)
    return repr(value) if isinstance(value, float) else str(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
