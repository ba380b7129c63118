"""Usage report → ``anthropic_api_tokens_total`` / ``anthropic_api_web_search_requests_total``.

Each poll re-reads a trailing window of buckets (late data and revisions land there) and hands
the ledger the cumulative value of every (bucket, group, token type); the ledger adds only the
growth over what it already counted. The window start is a cursor committed with the counts,
so after a restart or an outage the poller resumes exactly where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from otel_claude.admin.client import AdminClient, Params
from otel_claude.ledger import BucketValue, Ledger
from otel_claude.pricing import normalize_model_id
from otel_claude.timeutil import parse_time

log = logging.getLogger(__name__)

SOURCE = "admin_usage"
ENDPOINT = "usage_report/messages"
API_TOKENS = "api_tokens"
API_WEB_SEARCH = "api_web_search"

#: Every groupable dimension, in the order labels are stored.
DIMENSIONS = (
    "model",
    "workspace_id",
    "api_key_id",
    "service_tier",
    "context_window",
    "inference_geo",
)
DEFAULT_GROUP_BY = ("model", "workspace_id", "service_tier", "context_window")

#: Label values for ``null`` in a grouped dimension (the API's documented meanings).
NULL_LABELS = {
    "workspace_id": "default",  # the organization's default workspace
    "api_key_id": "console",  # Console / Workbench usage, made without an API key
    "model": "unknown",
    "service_tier": "unknown",
    "context_window": "unknown",
    "inference_geo": "unknown",
}

#: ``token_type`` label → path in a usage result item.
TOKEN_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("input", ("uncached_input_tokens",)),
    ("output", ("output_tokens",)),
    ("cache_read", ("cache_read_input_tokens",)),
    ("cache_creation_5m", ("cache_creation", "ephemeral_5m_input_tokens")),
    ("cache_creation_1h", ("cache_creation", "ephemeral_1h_input_tokens")),
)

WIDTHS = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1), "1d": timedelta(days=1)}
MAX_LIMIT = {"1m": 1440, "1h": 168, "1d": 31}


def first_time(seen: set[datetime], start: datetime, endpoint: str) -> bool:
    """Whether a bucket is new in this read; a bucket served again (a page token leading
    back) would otherwise be added to itself, so the repeat is skipped and logged."""
    if start in seen:
        log.warning(
            "bucket served twice in one read, repeat ignored",
            extra={"fields": {"endpoint": endpoint, "bucket": iso(start)}},
        )
        return False
    seen.add(start)
    return True


def iter_buckets(
    client: AdminClient,
    endpoint: str,
    params: Params,
    *,
    max_pages: int,
    on_page: Callable[[], None] | None = None,
    on_skip: Callable[[], None] | None = None,
) -> Iterator[tuple[datetime, datetime, list[Any]]]:
    """(start, end, results) of every bucket of a report read, each bucket at most once.

    Buckets without readable bounds are skipped through ``on_skip``; a bucket served twice
    in one read (a page token leading back) is skipped as well.
    """
    seen: set[datetime] = set()
    for page in client.pages(endpoint, params, max_pages=max_pages):
        if on_page is not None:
            on_page()
        for bucket in page.get("data") or []:
            try:
                begins = parse_time(bucket.get("starting_at"))
                ends = parse_time(bucket.get("ending_at"))
            except (ValueError, AttributeError):
                if on_skip is not None:
                    on_skip()
                continue
            if first_time(seen, begins, endpoint):
                yield begins, ends, list(bucket.get("results") or [])


def width_for_interval(interval_s: float) -> str:
    """Bucket width for a poll interval: minute buckets only when polling faster than 1/min."""
    if interval_s < 60:
        return "1m"
    if interval_s < 86400:
        return "1h"
    return "1d"


def floor_time(t: datetime, width: str) -> datetime:
    """The start of the bucket of ``width`` containing ``t`` (UTC)."""
    t = t.astimezone(UTC)
    if width == "1m":
        return t.replace(second=0, microsecond=0)
    if width == "1h":
        return t.replace(minute=0, second=0, microsecond=0)
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def iso(t: datetime) -> str:
    """RFC 3339 in UTC with a Z suffix, the form the API uses."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def field_int(item: Mapping[str, Any], path: Sequence[str]) -> int:
    """A non-negative integer field of a report item, ``ValueError`` otherwise."""
    value: Any = item
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{'.'.join(path)} is not a non-negative integer")
    return value


class UsageReport:
    """Polls the usage report into the ledger."""

    name = SOURCE

    def __init__(
        self,
        client: AdminClient,
        ledger: Ledger,
        *,
        since: datetime,
        group_by: Sequence[str] = DEFAULT_GROUP_BY,
        interval_s: float = 60.0,
        lookback_s: float = 6 * 3600,
        clock: Callable[[], float],
    ) -> None:
        self._client = client
        self._ledger = ledger
        self.group_by = tuple(d for d in DIMENSIONS if d in group_by)
        self.width = width_for_interval(interval_s)
        self._since = floor_time(since, self.width)
        self._lookback = timedelta(
            seconds=min(lookback_s, MAX_LIMIT[self.width] * WIDTHS[self.width].total_seconds())
        )
        self._clock = clock
        self.newest_complete: float | None = None
        self.skipped_items = 0

    @property
    def signature(self) -> str:
        """Identifies the grouping; a change means old bucket keys no longer apply."""
        return f"{self.width}|{','.join(self.group_by)}"

    def poll(self) -> None:
        """Read the window, count the growth, commit counts and cursor together."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        window = max(self._since, floor_time(now - self._lookback, self.width))
        cursor = self._ledger.cursor(f"{SOURCE}:start")
        start = min(parse_time(cursor), window) if cursor else self._since
        start = max(start, self._since)
        previous = self._ledger.cursor(f"{SOURCE}:signature")
        baseline = previous is not None and previous != self.signature
        if baseline:
            log.warning(
                "usage grouping changed: counting resumes from new usage only",
                extra={"fields": {"was": previous, "now": self.signature}},
            )
        values, newest = self.fetch(start, now=now)
        self._ledger.apply_buckets(
            values,
            cursors={f"{SOURCE}:start": iso(window), f"{SOURCE}:signature": self.signature},
            baseline=baseline,
        )
        self._ledger.forget_buckets(SOURCE, before=iso(window))
        if newest is not None:
            self.newest_complete = newest.timestamp()

    def fetch(
        self,
        start: datetime,
        end: datetime | None = None,
        *,
        now: datetime,
        width: str | None = None,
        on_page: Callable[[], None] | None = None,
    ) -> tuple[list[BucketValue], datetime | None]:
        """Read buckets from ``start`` (to ``end``): their values and the newest complete end."""
        width = width or self.width
        params = [
            ("starting_at", iso(start)),
            ("bucket_width", width),
            ("limit", str(MAX_LIMIT[width])),
        ]
        if end is not None:
            params.append(("ending_at", iso(end)))
        params += [("group_by[]", dim) for dim in self.group_by]
        values: list[BucketValue] = []
        newest: datetime | None = None
        span = ((end or now) - start).total_seconds() / WIDTHS[width].total_seconds()
        max_pages = int(span // MAX_LIMIT[width]) + 3  # what the window needs, plus slack
        for begins, ends, results in iter_buckets(
            self._client,
            ENDPOINT,
            params,
            max_pages=max_pages,
            on_page=on_page,
            on_skip=self._skip,
        ):
            if ends <= now and (newest is None or ends > newest):
                newest = ends
            for item in results:
                self._item(values, iso(begins), item)
        return values, newest

    def _skip(self) -> None:
        self.skipped_items += 1

    def _item(self, out: list[BucketValue], bucket: str, item: object) -> None:
        if not isinstance(item, Mapping):
            self.skipped_items += 1
            return
        try:
            counts = [(tt, field_int(item, path)) for tt, path in TOKEN_FIELDS]
            searches = field_int(item, ("server_tool_use", "web_search_requests"))
        except ValueError as exc:
            self.skipped_items += 1
            log.warning(
                "usage item skipped", extra={"fields": {"bucket": bucket, "error": str(exc)}}
            )
            return
        raw = [item.get(dim) for dim in self.group_by]
        group = "\x1f".join("\x00" if v is None else str(v) for v in raw)
        labels = tuple(
            self._label(dim, item.get(dim)) if dim in self.group_by else "" for dim in DIMENSIONS
        )
        for token_type, value in counts:
            out.append(BucketValue(SOURCE, bucket, group, API_TOKENS, (token_type, *labels), value))
        out.append(BucketValue(SOURCE, bucket, group, API_WEB_SEARCH, labels, searches))

    @staticmethod
    def _label(dim: str, value: object) -> str:
        if value is None or value == "":
            return NULL_LABELS[dim]
        text = str(value)
        return normalize_model_id(text) if dim == "model" else text
