"""Claude Code analytics → ``anthropic_claude_code_*`` counters, per actor.

The endpoint serves one UTC day per request. Today and every earlier day that may still
change (until ``settle_s`` after its end; the API lags up to an hour) are re-read each poll;
the first day that is not final is a cursor committed with the counts.

Actors are people (e-mail) or API keys (key name). E-mail addresses are personal data, so
the ``actor`` label is hashed by default (``plain`` or ``drop`` by config); the dedup key
stored in the ledger is always the hash.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from otel_claude.admin.client import AdminClient
from otel_claude.admin.usage import field_int
from otel_claude.ledger import BucketValue, Ledger
from otel_claude.pricing import normalize_model_id

log = logging.getLogger(__name__)

SOURCE = "claude_code"
ENDPOINT = "usage_report/claude_code"

SESSIONS = "cc_sessions"  # (actor,)
LINES = "cc_lines"  # (actor, type)
COMMITS = "cc_commits"  # (actor,)
PULL_REQUESTS = "cc_pull_requests"  # (actor,)
TOOL_DECISIONS = "cc_tool_decisions"  # (actor, tool, decision)
TOKENS = "cc_tokens"  # (actor, model, token_type)
COST = "cc_cost_pico"  # (actor, model)

ACTOR_MODES = ("hash", "plain", "drop")
TOKEN_TYPES = ("input", "output", "cache_read", "cache_creation")
_PICO_PER_CENT = 10**10
DAY = timedelta(days=1)


class ClaudeCodeReport:
    """Polls Claude Code analytics into the ledger."""

    name = SOURCE

    def __init__(
        self,
        client: AdminClient,
        ledger: Ledger,
        *,
        since: datetime,
        clock: Callable[[], float],
        actor_mode: str = "hash",
        actor_salt: str = "",
        settle_s: float = 3 * 3600,
    ) -> None:
        if actor_mode not in ACTOR_MODES:
            raise ValueError(f"actor mode must be one of {ACTOR_MODES}")
        self._client = client
        self._ledger = ledger
        self._since = since.astimezone(UTC).date()
        self._clock = clock
        self._actor_mode = actor_mode
        self._salt = actor_salt.encode()
        self._settle = timedelta(seconds=settle_s)
        self.newest_complete: float | None = None
        self.skipped_items = 0

    @property
    def signature(self) -> str:
        """Identifies how actors are labelled (mode and salt, the salt only as a digest)."""
        return f"{self._actor_mode}|{hashlib.sha256(self._salt).hexdigest()[:12]}"

    def poll(self) -> None:
        """Read every day that can still change; count growth; advance the cursor."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        today = now.date()
        cursor = self._ledger.cursor(f"{SOURCE}:day")
        first = date.fromisoformat(cursor) if cursor else self._since
        values: list[BucketValue] = []
        next_cursor = today
        day = first
        while day <= today:
            values += self.day_values(day)
            day_end = datetime(day.year, day.month, day.day, tzinfo=UTC) + DAY
            if now < day_end + self._settle:
                next_cursor = min(next_cursor, day)
            elif self.newest_complete is None or day_end.timestamp() > self.newest_complete:
                self.newest_complete = day_end.timestamp()
            day += DAY
        # Another actor mode or salt relabels the same records: record their current values
        # without counting them again under the new labels.
        previous = self._ledger.cursor(f"{SOURCE}:signature")
        baseline = previous is not None and previous != self.signature
        if baseline:
            log.warning("actor labelling changed: counting resumes from new activity only")
        self._ledger.apply_buckets(
            values,
            cursors={
                f"{SOURCE}:day": next_cursor.isoformat(),
                f"{SOURCE}:signature": self.signature,
            },
            baseline=baseline,
        )
        self._ledger.forget_buckets(SOURCE, before=next_cursor.isoformat())

    def day_values(self, day: date, on_page: Callable[[], None] | None = None) -> list[BucketValue]:
        """Read every record of one UTC day (all pages) as ledger values."""
        values: list[BucketValue] = []
        params = [("starting_at", day.isoformat()), ("limit", "1000")]
        for page in self._client.pages(ENDPOINT, params):
            if on_page is not None:
                on_page()
            for record in page.get("data") or []:
                if isinstance(record, dict):
                    self._record(values, day, record)
                else:
                    self.skipped_items += 1
        return values

    def actor(self, record: Mapping[str, Any]) -> tuple[str, str] | None:
        """(dedup key, label value) of a record's actor; None when it has no actor."""
        actor = record.get("actor")
        if not isinstance(actor, Mapping):
            return None
        raw = (
            actor.get("email_address")
            if actor.get("type") == "user_actor"
            else actor.get("api_key_name")
        )
        if not isinstance(raw, str) or not raw:
            return None
        kind = "user" if actor.get("type") == "user_actor" else "api"
        digest = hmac.new(self._salt, f"{kind}:{raw}".encode(), hashlib.sha256).hexdigest()[:16]
        label = {"hash": f"{kind}-{digest}", "plain": raw, "drop": ""}[self._actor_mode]
        return digest, label

    def _record(self, out: list[BucketValue], day: date, record: Mapping[str, Any]) -> None:
        who = self.actor(record)
        if who is None:
            self.skipped_items += 1
            log.warning(
                "claude code record skipped",
                extra={"fields": {"day": day.isoformat(), "error": "no actor"}},
            )
            return
        key, actor = who
        group = "\x1f".join(
            (key, str(record.get("terminal_type") or ""), str(record.get("customer_type") or ""))
        )
        bucket = day.isoformat()

        def add(family: str, labels: tuple[str, ...], value: int) -> None:
            out.append(BucketValue(SOURCE, bucket, group, family, labels, value))

        try:
            core = record.get("core_metrics") or {}
            add(SESSIONS, (actor,), field_int(core, ("num_sessions",)))
            add(LINES, (actor, "added"), field_int(core, ("lines_of_code", "added")))
            add(LINES, (actor, "removed"), field_int(core, ("lines_of_code", "removed")))
            add(COMMITS, (actor,), field_int(core, ("commits_by_claude_code",)))
            add(PULL_REQUESTS, (actor,), field_int(core, ("pull_requests_by_claude_code",)))
            tools = record.get("tool_actions") or {}
            for tool, decisions in tools.items() if isinstance(tools, Mapping) else ():
                for decision in ("accepted", "rejected"):
                    add(
                        TOOL_DECISIONS,
                        (actor, str(tool), decision),
                        field_int(decisions, (decision,)),
                    )
            for entry in record.get("model_breakdown") or []:
                model = entry.get("model") if isinstance(entry, Mapping) else None
                if not isinstance(model, str) or not model:
                    raise ValueError("model_breakdown entry without model")
                name = normalize_model_id(model)
                for token_type in TOKEN_TYPES:
                    add(TOKENS, (actor, name, token_type), field_int(entry, ("tokens", token_type)))
                cents = field_int(entry, ("estimated_cost", "amount"))
                add(COST, (actor, name), cents * _PICO_PER_CENT)
        except (ValueError, AttributeError) as exc:
            self.skipped_items += 1
            log.warning(
                "claude code record skipped", extra={"fields": {"day": bucket, "error": str(exc)}}
            )
