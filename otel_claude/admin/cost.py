"""Cost report → ``anthropic_api_cost_usd_total`` and the billed-cost gauges.

Amounts arrive as decimal strings in cents; they are converted exactly (``Decimal``) to
integer picodollars for the ledger. Each poll reads the whole current month (at most 31 daily
buckets: one request), which both re-reads the days that can still change and gives
today's and month-to-date cost per workspace straight from the API, so the gauges are right
immediately after a restart.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from otel_claude.admin.client import AdminClient
from otel_claude.admin.usage import floor_time, iso, iter_buckets
from otel_claude.ledger import BucketValue, Ledger
from otel_claude.pricing import normalize_model_id
from otel_claude.timeutil import parse_time

log = logging.getLogger(__name__)

SOURCE = "admin_cost"
ENDPOINT = "cost_report"
API_COST = "api_cost_pico"
LABELS = ("workspace_id", "cost_type", "model", "token_type", "service_tier", "context_window")
NONE_LABEL = "none"  # a dimension that does not apply to this cost (e.g. model of web search)
DEFAULT_WORKSPACE = "default"
SETTLE_DAYS = 2  # days before today that are still re-read after a month boundary
_PICO_PER_CENT = Decimal(10) ** 10


def cents_to_pico(amount: object) -> int:
    """Exact conversion of a cents decimal string to integer picodollars."""
    if not isinstance(amount, str | int) or isinstance(amount, bool):
        raise ValueError("amount is not a decimal string")
    try:
        cents = Decimal(amount)
    except InvalidOperation:
        raise ValueError(f"amount {amount!r} is not a decimal") from None
    if not cents.is_finite():
        raise ValueError("amount is not finite")
    return int((cents * _PICO_PER_CENT).to_integral_value())


class CostReport:
    """Polls the cost report into the ledger and keeps today's / month's billed cost."""

    name = SOURCE

    def __init__(
        self,
        client: AdminClient,
        ledger: Ledger,
        *,
        since: datetime,
        clock: Callable[[], float],
    ) -> None:
        self._client = client
        self._ledger = ledger
        self._since = floor_time(since, "1d")
        self._clock = clock
        self.today_usd: dict[str, Decimal] = {}
        self.month_usd: dict[str, Decimal] = {}
        self.newest_complete: float | None = None
        self.skipped_items = 0

    def poll(self) -> None:
        """Read the month (and unsettled days), count growth, refresh the gauges."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        today = floor_time(now, "1d")
        month_start = today.replace(day=1)
        settle_from = today - timedelta(days=SETTLE_DAYS)
        cursor = self._ledger.cursor(f"{SOURCE}:start")
        start = min(month_start, settle_from, parse_time(cursor) if cursor else self._since)
        values: list[BucketValue] = []
        today_cents: defaultdict[str, Decimal] = defaultdict(Decimal)
        month_cents: defaultdict[str, Decimal] = defaultdict(Decimal)
        newest: datetime | None = None
        for day, ends, labels, group, cents in self.read(start, now=now):
            if ends <= now and (newest is None or ends > newest):
                newest = ends
            workspace = labels[0]
            if day == today:
                today_cents[workspace] += cents
            if day >= month_start:
                month_cents[workspace] += cents
            if day >= self._since:
                values.append(self.value(day, labels, group, cents))
        self._ledger.apply_buckets(values, cursors={f"{SOURCE}:start": iso(settle_from)})
        self._ledger.forget_buckets(SOURCE, before=iso(min(settle_from, month_start)))
        self.today_usd = {ws: c / 100 for ws, c in today_cents.items()}
        self.month_usd = {ws: c / 100 for ws, c in month_cents.items()}
        if newest is not None:
            self.newest_complete = newest.timestamp()

    def read(
        self,
        start: datetime,
        end: datetime | None = None,
        *,
        now: datetime,
        on_page: Callable[[], None] | None = None,
    ) -> list[tuple[datetime, datetime, tuple[str, ...], str, Decimal]]:
        """Read daily buckets: (day start, day end, labels, group, cents) per cost item."""
        params = [
            ("starting_at", iso(start)),
            ("bucket_width", "1d"),
            ("limit", "31"),
            ("group_by[]", "workspace_id"),
            ("group_by[]", "description"),
        ]
        if end is not None:
            params.append(("ending_at", iso(end)))
        out = []
        max_pages = int(((end or now) - start).days // 31) + 3
        for day, ends, results in iter_buckets(
            self._client,
            ENDPOINT,
            params,
            max_pages=max_pages,
            on_page=on_page,
            on_skip=self._skip,
        ):
            for item in results:
                parsed = self._item(item)
                if parsed is not None:
                    out.append((day, ends, *parsed))
        return out

    def _skip(self) -> None:
        self.skipped_items += 1

    @staticmethod
    def value(day: datetime, labels: tuple[str, ...], group: str, cents: Decimal) -> BucketValue:
        """The ledger value of one cost item (exact picodollars)."""
        pico = int((cents * _PICO_PER_CENT).to_integral_value())
        return BucketValue(SOURCE, iso(day), group, API_COST, labels, pico)

    def _item(self, item: object) -> tuple[tuple[str, ...], str, Decimal] | None:
        if not isinstance(item, Mapping):
            self.skipped_items += 1
            return None
        try:
            pico = cents_to_pico(item.get("amount"))
        except ValueError as exc:
            self.skipped_items += 1
            log.warning("cost item skipped", extra={"fields": {"error": str(exc)}})
            return None
        cents = Decimal(pico) / _PICO_PER_CENT
        if item.get("currency", "USD") != "USD":
            self.skipped_items += 1
            log.warning("cost item skipped", extra={"fields": {"error": "currency not USD"}})
            return None
        workspace = item.get("workspace_id") or DEFAULT_WORKSPACE
        model = item.get("model")
        labels = (
            str(workspace),
            str(item.get("cost_type") or NONE_LABEL),
            normalize_model_id(model) if isinstance(model, str) and model else NONE_LABEL,
            str(item.get("token_type") or NONE_LABEL),
            str(item.get("service_tier") or NONE_LABEL),
            str(item.get("context_window") or NONE_LABEL),
        )
        group = "\x1f".join(
            (*labels, str(item.get("description") or ""), str(item.get("inference_geo") or ""))
        )
        return labels, group, cents
