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

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TextIO

from otel_claude.admin.claude_code import ClaudeCodeReport
from otel_claude.admin.cost import CostReport
from otel_claude.admin.usage import MAX_LIMIT, UsageReport, floor_time
from otel_claude.exposition.families import Family, family_series
from otel_claude.ledger import BucketValue
from otel_claude.progress import Progress
from otel_claude.timeutil import parse_time

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


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
) -> list[tuple[datetime, BucketValue]]:
    """Read every report over [since, until): (bucket end, value) pairs."""
    out: list[tuple[datetime, BucketValue]] = []
    now = until

    def tick(label: str) -> Callable[[], None]:
        return lambda: progress.step(label) if progress else None

    if usage is not None:
        start = floor_time(since, "1h")
        values, _ = usage.fetch(start, until, now=now, width="1h", on_page=tick("usage report"))
        out += [(parse_time(v.bucket) + HOUR, v) for v in values]
    if cost is not None:
        start = floor_time(since, "1d")
        for day, ends, labels, group, cents in cost.read(
            start, until, now=now, on_page=tick("cost report")
        ):
            out.append((ends, CostReport.value(day, labels, group, cents)))
    if claude_code is not None:
        cc_day = since.astimezone(UTC).date()
        while datetime(cc_day.year, cc_day.month, cc_day.day, tzinfo=UTC) < until:
            ends = datetime(cc_day.year, cc_day.month, cc_day.day, tzinfo=UTC) + DAY
            for v in claude_code.day_values(cc_day, on_page=tick(f"claude code {cc_day}")):
                out.append((ends, v))
            cc_day += DAY
    return out


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
    """Write cumulative counters at every hour end; return the number of samples."""
    grid = hour_ends(since, until)
    # (family key) -> bucket end -> stored labels -> value (summed over groups)
    per_family: defaultdict[str, defaultdict[datetime, dict[tuple[str, ...], int]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for ends, v in samples:
        slot = per_family[v.family][ends]
        slot[v.labels] = slot.get(v.labels, 0) + v.value
    extra = sorted((extra_labels or {}).items())
    written = 0
    for family in families:
        by_end = per_family.get(family.key)
        if not by_end:
            continue
        # Projected increments per series and bucket end.
        increments: defaultdict[tuple[str, ...], dict[datetime, int]] = defaultdict(dict)
        for ends, stored in by_end.items():
            snap = {(family.key, labels): value for labels, value in stored.items()}
            for shown, value in family_series(family, snap).items():
                increments[shown][ends] = increments[shown].get(ends, 0) + value
        out.write(f"# HELP {family.name} {family.help}\n")
        out.write(f"# TYPE {family.name} counter\n")
        for shown in sorted(increments):
            steps = increments[shown]
            first = min(steps)
            total = 0
            names = [*zip(family.labels, shown, strict=True), *extra]
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in names if v != "")
            for t in grid:
                if t < first:
                    continue
                total += steps.get(t, 0)
                out.write(
                    f"{family.name}_total{{{label_text}}} "
                    f"{_number(family, total)} {int(t.timestamp())}\n"
                )
                written += 1
    out.write("# EOF\n")
    return written


def _number(family: Family, raw: int) -> str:
    value = family.value(raw)
    return repr(value) if isinstance(value, float) else str(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
