"""The synthetic organisation behind the Admin API simulator.

Everything here is a pure function of the seed and of epoch seconds: no random
module state and no per-minute storage.  Each value is derived from a BLAKE2b
digest of ``(seed, kind, stream, hour)``, so any bucket at any time can be
recomputed on demand, the HTTP layer and the ground-truth helpers share one
source of numbers, and two simulators with the same seed agree exactly.

Model of the data
-----------------
* **Streams.**  A stream is one fixed combination of usage dimensions (model,
  workspace, API key, service tier, context window, inference geo).  Its usage
  per hour is deterministic; some hours are empty.  Within an hour, each field
  is split over the 60 minutes by hash weights (integer shares, the remainder
  handed one by one to the earliest minutes with weight), so the minute is the
  atom and 1m/1h/1d buckets are exact sums of each other.
* **Late data.**  Minute ``m`` becomes visible at ``m_end + delay`` with a hash
  delay in [60 s, 600 s] (``late_data=False``: at ``m_end``).
* **Revisions** (``revisions=True``).  About 10% of (stream, hour) pairs get an
  upward correction, placed in one minute and visible from ``hour_end + 2 h``.
  About 3% carry a phantom amount in one minute, served from
  ``hour_end + 10 min`` until ``hour_end + 3 h`` and then withdrawn, so a
  bucket value goes down.  The final value of an hour is base + correction.
* **Cost.**  Per (day, workspace, description) from the *final* hourly usage
  times list prices, visible once ``hour_end + 1 h`` has passed.  Priority tier
  usage has no cost rows.  Web search costs 1 cent per request; code execution
  adds small deterministic amounts per workspace and hour.
* **Claude Code.**  Three users and one API actor with hash-based hourly
  activity; a day record sums the hours with ``hour_end + 1 h <= now``.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final

MINUTE: Final = 60
HOUR: Final = 3600
DAY: Final = 86400

#: Longest late-data delay of a minute; after ``hour_end + MAX_DELAY`` an hour's base is final.
MAX_DELAY: Final = 600
CORRECTION_DELAY: Final = 2 * HOUR
PHANTOM_FROM: Final = 10 * MINUTE
PHANTOM_UNTIL: Final = 3 * HOUR
#: Cost and Claude Code analytics only include hours that ended at least this long ago.
REPORT_LAG: Final = HOUR

Fields = tuple[int, int, int, int, int, int]
ZERO: Final[Fields] = (0, 0, 0, 0, 0, 0)

#: Order of the integers in a :data:`Fields` tuple (the names ``usage_truth`` reports).
USAGE_FIELDS: Final = (
    "uncached_input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_5m",
    "cache_creation_1h",
    "web_search_requests",
)

#: Every value the usage report accepts in ``group_by[]``.
USAGE_DIMENSIONS: Final = (
    "api_key_id",
    "workspace_id",
    "model",
    "service_tier",
    "context_window",
    "inference_geo",
    "speed",
    "account_id",
    "service_account_id",
)

COST_GROUPS: Final = ("workspace_id", "description")

CENT_QUANTUM: Final = Decimal("0.00001")

_ID_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def digest(seed: int, *parts: object) -> bytes:
    """64 pseudo-random bytes that depend only on the seed and the parts."""
    text = "|".join(str(part) for part in (seed, *parts))
    return hashlib.blake2b(text.encode(), digest_size=64).digest()


def make_id(prefix: str, seed: int, *parts: object, length: int = 22) -> str:
    """An id in the style of the API (``wrkspc_01…``), stable for a seed."""
    number = int.from_bytes(digest(seed, "id", prefix, *parts), "big")
    chars = []
    for _ in range(length):
        number, index = divmod(number, len(_ID_ALPHABET))
        chars.append(_ID_ALPHABET[index])
    return f"{prefix}01{''.join(chars)}"


def rfc3339(epoch: int) -> str:
    """``2025-08-01T00:00:00Z`` for an integer epoch."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_epoch(moment: datetime) -> int:
    """Whole epoch seconds of an aware datetime (naive values are rejected)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware, got {moment!r}")
    return int(moment.timestamp() // 1)


def format_cents(amount: Decimal) -> str:
    """Plain decimal text without exponent or trailing zeros (``"1500"``, ``"0.1"``)."""
    text = format(amount.normalize(), "f")
    return "0" if text in ("-0", "0") else text


# --------------------------------------------------------------------------
# Static catalogue: models, prices, organisation layout
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """A model and its list prices in USD per million tokens."""

    id: str
    display: str
    input: Decimal
    output: Decimal
    long_input: Decimal | None = None
    long_output: Decimal | None = None

    def price(self, field: int, *, long_context: bool) -> Decimal:
        """USD per million tokens for one token field (index into :data:`USAGE_FIELDS`)."""
        base_in = self.long_input if long_context and self.long_input else self.input
        base_out = self.long_output if long_context and self.long_output else self.output
        return (
            base_in,
            base_out,
            base_in * Decimal("0.1"),
            base_in * Decimal("1.25"),
            base_in * 2,
        )[field]


OPUS_4_6 = "claude-opus-4-6"
SONNET_4_5 = "claude-sonnet-4-5-20250929"
SONNET_4 = "claude-sonnet-4-20250514"
HAIKU_4_5 = "claude-haiku-4-5-20251001"

MODELS: Final[Mapping[str, Model]] = {
    m.id: m
    for m in (
        Model(OPUS_4_6, "Claude Opus 4.6", Decimal(5), Decimal(25), Decimal(10), Decimal("37.5")),
        Model(
            SONNET_4_5, "Claude Sonnet 4.5", Decimal(3), Decimal(15), Decimal(6), Decimal("22.5")
        ),
        Model(SONNET_4, "Claude Sonnet 4", Decimal(3), Decimal(15), Decimal(6), Decimal("22.5")),
        Model(HAIKU_4_5, "Claude Haiku 4.5", Decimal(1), Decimal(5)),
    )
}

#: (token_type as the cost report names it, label used in the description)
COST_TOKEN_TYPES: Final = (
    ("uncached_input_tokens", "Input Tokens"),
    ("output_tokens", "Output Tokens"),
    ("cache_read_input_tokens", "Cache Read Tokens"),
    ("cache_creation.ephemeral_5m_input_tokens", "Cache Write Tokens (5m)"),
    ("cache_creation.ephemeral_1h_input_tokens", "Cache Write Tokens (1h)"),
)
WEB_SEARCH_DESCRIPTION: Final = "Web Search Usage"
CODE_EXECUTION_DESCRIPTION: Final = "Code Execution Usage"
WEB_SEARCH_CENTS: Final = Decimal(1)

_WORKSPACES = (("Production", "#6C5BB9"), ("Research", "#3B82F6"), ("Internal Tools", "#10B981"))
#: (name, workspace index or None for the default workspace)
_API_KEYS = (
    ("prod-backend", 0),
    ("prod-agents", 0),
    ("research-batch", 1),
    ("tools-ci", 2),
    ("legacy-default", None),
)


@dataclass(frozen=True)
class _StreamSpec:
    model: str
    workspace: int | None
    api_key: int | None
    service_tier: str
    context_window: str
    inference_geo: str
    activity: int  # per mille of hours with usage
    diurnal: bool  # follows office hours (batch traffic does not)
    base: Fields  # hourly volume at full activity


_STREAMS = (
    _StreamSpec(OPUS_4_6, 0, 0, "standard", "0-200k", "global", 950, True,
                (300_000, 90_000, 1_500_000, 120_000, 30_000, 8)),
    _StreamSpec(OPUS_4_6, 1, 2, "priority", "0-200k", "us", 800, True,
                (200_000, 60_000, 900_000, 80_000, 0, 0)),
    _StreamSpec(OPUS_4_6, 0, 0, "standard", "200k-1M", "global", 250, True,
                (900_000, 40_000, 2_500_000, 300_000, 0, 0)),
    _StreamSpec(SONNET_4_5, 0, 1, "standard", "0-200k", "not_available", 950, True,
                (500_000, 150_000, 3_000_000, 200_000, 50_000, 20)),
    _StreamSpec(SONNET_4_5, 1, 2, "batch", "0-200k", "not_available", 300, False,
                (2_000_000, 400_000, 0, 0, 0, 0)),
    _StreamSpec(SONNET_4_5, None, None, "standard", "0-200k", "not_available", 400, True,
                (50_000, 20_000, 10_000, 5_000, 0, 2)),
    _StreamSpec(SONNET_4_5, 2, 3, "standard", "200k-1M", "not_available", 200, True,
                (700_000, 30_000, 1_200_000, 250_000, 0, 0)),
    _StreamSpec(HAIKU_4_5, 1, 2, "standard", "0-200k", "not_available", 900, True,
                (800_000, 200_000, 4_000_000, 300_000, 0, 0)),
    _StreamSpec(HAIKU_4_5, None, 4, "batch", "0-200k", "not_available", 250, False,
                (1_500_000, 300_000, 0, 0, 0, 0)),
    _StreamSpec(SONNET_4, 2, 3, "standard", "0-200k", "not_available", 700, True,
                (150_000, 50_000, 600_000, 40_000, 10_000, 5)),
    _StreamSpec(HAIKU_4_5, 2, None, "standard", "0-200k", "not_available", 300, True,
                (20_000, 8_000, 0, 2_000, 0, 0)),
)  # fmt: skip

# Share of full volume per UTC hour of day, per mille.
_DIURNAL = (250, 250, 250, 250, 250, 300, 500, 700) + (1000,) * 10 + (800, 700, 600, 500, 400, 300)

#: (email or key name, terminal type, models used)
_USER_ACTORS = (
    ("alice@example.com", "vscode", (OPUS_4_6, HAIKU_4_5)),
    ("bob@example.com", "iTerm.app", (SONNET_4_5, HAIKU_4_5)),
    ("carol@example.com", "tmux", (OPUS_4_6,)),
)
_API_ACTOR = ("ci-code-review", "xterm-256color", (SONNET_4_5,))

CLAUDE_CODE_TOOLS: Final = ("edit_tool", "multi_edit_tool", "write_tool", "notebook_edit_tool")


@dataclass(frozen=True)
class Stream:
    """One fixed combination of usage dimensions."""

    index: int
    model: str
    workspace_id: str | None
    api_key_id: str | None
    service_tier: str
    context_window: str
    inference_geo: str
    activity: int
    diurnal: bool
    scale: int  # per mille, from the seed
    base: Fields

    def dimension(self, name: str) -> str | None:
        """The value this stream reports for one ``group_by`` dimension."""
        if name == "speed":
            return "standard"
        if name in ("account_id", "service_account_id"):
            return None  # all simulated traffic authenticates with API keys
        value: str | None = getattr(self, name)
        return value


@dataclass(frozen=True)
class Hour:
    """Usage of one stream in one hour."""

    base: Fields
    correction: Fields | None = None
    correction_minute: int = 0
    phantom: Fields | None = None
    phantom_minute: int = 0


_EMPTY_HOUR = Hour(ZERO)


@dataclass(frozen=True)
class Actor:
    """A Claude Code actor: a user (by email) or an API key (by name)."""

    index: int
    kind: str  # "user_actor" | "api_actor"
    name: str
    terminal_type: str
    models: tuple[str, ...]

    @property
    def sort_key(self) -> tuple[str, str]:
        return (self.kind, self.name)

    def as_json(self) -> dict[str, str]:
        field = "email_address" if self.kind == "user_actor" else "api_key_name"
        return {"type": self.kind, field: self.name}


@dataclass(frozen=True)
class ActorHour:
    """Claude Code activity of one actor in one hour."""

    sessions: int
    lines_added: int
    lines_removed: int
    commits: int
    pull_requests: int
    tools: tuple[tuple[int, int], ...]  # (accepted, rejected) per CLAUDE_CODE_TOOLS
    tokens: tuple[tuple[str, tuple[int, int, int, int]], ...]  # model, (in, out, read, write)


#: Key of one atomic cost row: (workspace_id, description, cost_type, model, token_type,
#: service_tier, context_window, inference_geo).
CostKey = tuple[str | None, str, str, str | None, str | None, str | None, str | None, str | None]


def cost_group_key(key: CostKey, group_by: Sequence[str]) -> tuple[str | None, ...]:
    """Project an atomic cost row onto ``group_by`` (in its order).

    ``workspace_id`` contributes ``(workspace_id,)``; ``description`` contributes
    ``(description, cost_type, model, token_type, service_tier, context_window)``.
    """
    out: tuple[str | None, ...] = ()
    for name in group_by:
        out += (key[0],) if name == "workspace_id" else key[1:7]
    return out


def _add(total: list[int], fields: Fields) -> None:
    for i, value in enumerate(fields):
        total[i] += value


def _fields(values: Sequence[int]) -> Fields:
    a, b, c, d, e, f = values
    return (a, b, c, d, e, f)


def _weekday(epoch: int) -> int:
    return (epoch // DAY + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0


class World:
    """Deterministic usage, cost and Claude Code data of one simulated organisation."""

    def __init__(self, *, seed: int, data_start: int, late_data: bool, revisions: bool) -> None:
        if data_start % HOUR:
            raise ValueError("data_start must be aligned to the hour")
        self.seed = seed
        self.data_start = data_start
        self.late_data = late_data
        self.revisions = revisions
        self.organization_id = str(uuid.UUID(bytes=digest(seed, "organization")[:16], version=4))

        created = data_start - 180 * DAY
        self.workspaces: list[dict[str, Any]] = [
            {
                "id": make_id("wrkspc_", seed, i),
                "type": "workspace",
                "name": name,
                "created_at": rfc3339(created + i * 17 * DAY + 3 * HOUR),
                "archived_at": None,
                "display_color": color,
            }
            for i, (name, color) in enumerate(_WORKSPACES)
        ]
        creator = {"id": make_id("user_", seed, "admin"), "type": "user"}
        self.api_keys: list[dict[str, Any]] = []
        for i, (name, ws) in enumerate(_API_KEYS):
            hint = digest(seed, "key-hint", i).hex()
            self.api_keys.append(
                {
                    "id": make_id("apikey_", seed, i),
                    "type": "api_key",
                    "name": name,
                    "workspace_id": None if ws is None else self.workspaces[ws]["id"],
                    "created_at": rfc3339(created + 60 * DAY + i * 5 * DAY),
                    "created_by": dict(creator),
                    "status": "active",
                    "partial_key_hint": f"sk-ant-api03-{hint[:3]}...{hint[-4:]}",
                }
            )
        self.streams: tuple[Stream, ...] = tuple(
            Stream(
                index=i,
                model=spec.model,
                workspace_id=None
                if spec.workspace is None
                else self.workspaces[spec.workspace]["id"],
                api_key_id=None if spec.api_key is None else self.api_keys[spec.api_key]["id"],
                service_tier=spec.service_tier,
                context_window=spec.context_window,
                inference_geo=spec.inference_geo,
                activity=spec.activity,
                diurnal=spec.diurnal,
                scale=600 + digest(seed, "scale", i)[0] * 800 // 256,
                base=spec.base,
            )
            for i, spec in enumerate(_STREAMS)
        )
        self.cost_workspaces: tuple[str | None, ...] = (
            *(ws["id"] for ws in self.workspaces),
            None,
        )
        actors = [
            Actor(i, "user_actor", email, terminal, models)
            for i, (email, terminal, models) in enumerate(_USER_ACTORS)
        ]
        actors.append(Actor(len(actors), "api_actor", *_API_ACTOR))
        self.actors: tuple[Actor, ...] = tuple(actors)

        self.hour = functools.lru_cache(maxsize=1 << 17)(self._compute_hour)
        self.minutes = functools.lru_cache(maxsize=1 << 10)(self._compute_minutes)
        self.hour_cost = functools.lru_cache(maxsize=1 << 17)(self._compute_hour_cost)
        self.actor_hour = functools.lru_cache(maxsize=1 << 14)(self._compute_actor_hour)

    # ------------------------------------------------------------------ usage

    def _compute_hour(self, stream: int, hour: int) -> Hour:
        if hour < self.data_start:
            return _EMPTY_HOUR
        spec = self.streams[stream]
        d = digest(self.seed, "hour", stream, hour)
        if d[0] * 1000 // 256 >= spec.activity:
            return _EMPTY_HOUR
        diurnal, weekend = 1000, 1000
        if spec.diurnal:
            diurnal = _DIURNAL[hour // HOUR % 24]
            weekend = 500 if _weekday(hour) >= 5 else 1000
        base = _fields(
            [
                spec.base[i]
                * spec.scale
                * diurnal
                * weekend
                * (500 + d[1 + i] * 1000 // 256)
                // 10**12
                for i in range(6)
            ]
        )
        if base == ZERO:
            return _EMPTY_HOUR
        correction: Fields | None = None
        phantom: Fields | None = None
        if self.revisions and d[7] < 26:
            pct = 5 + d[8] % 21
            correction = _fields([v * pct // 100 for v in base])
        if self.revisions and d[10] < 8:
            pct = 10 + d[11] % 31
            phantom = _fields([v * pct // 100 for v in base])
        return Hour(
            base=base,
            correction=correction if correction != ZERO else None,
            correction_minute=d[9] % 60,
            phantom=phantom if phantom != ZERO else None,
            phantom_minute=d[12] % 60,
        )

    def _compute_minutes(
        self, stream: int, hour: int
    ) -> tuple[tuple[Fields, ...], tuple[int, ...]]:
        """Per-minute base usage and per-minute visibility delays of one stream-hour."""
        totals = self.hour(stream, hour).base
        raw = digest(self.seed, "minutes", stream, hour)[:60]
        weights = [b if b >= 64 else 0 for b in raw]
        if not any(weights):
            weights = [1] * 60
        weight_sum = sum(weights)
        weighted = [m for m in range(60) if weights[m]]
        columns = []
        for total in totals:
            shares = [total * w // weight_sum for w in weights]
            for m in weighted[: total - sum(shares)]:
                shares[m] += 1
            columns.append(shares)
        minutes = tuple(_fields([column[m] for column in columns]) for m in range(60))
        if self.late_data:
            raw_delay = digest(self.seed, "delays", stream, hour)[:60]
            delays = tuple(MINUTE + b * (MAX_DELAY - MINUTE + 1) // 256 for b in raw_delay)
        else:
            delays = (0,) * 60
        return minutes, delays

    def stream_usage(self, stream: int, start: int, end: int, at: float | None) -> Fields:
        """Usage of one stream over minute-aligned ``[start, end)`` as served at ``at``.

        ``at=None`` means the final value: all late data arrived, corrections
        applied, phantom amounts withdrawn.
        """
        total = [0] * 6
        hour = start // HOUR * HOUR
        while hour < end:
            self._add_hour(total, stream, hour, max(start, hour), min(end, hour + HOUR), at)
            hour += HOUR
        return _fields(total)

    def _add_hour(
        self, total: list[int], stream: int, hour: int, lo: int, hi: int, at: float | None
    ) -> None:
        info = self.hour(stream, hour)
        if info is _EMPTY_HOUR or (at is not None and at < hour + MINUTE):
            return
        hour_end = hour + HOUR
        m_lo, m_hi = (lo - hour) // MINUTE, (hi - hour) // MINUTE
        settled = hour_end + (MAX_DELAY if self.late_data else 0)
        if m_lo == 0 and m_hi == 60 and (at is None or at >= settled):
            _add(total, info.base)
        else:
            minutes, delays = self.minutes(stream, hour)
            for m in range(m_lo, m_hi):
                if at is None or at >= hour + (m + 1) * MINUTE + delays[m]:
                    _add(total, minutes[m])
        if info.correction is not None and m_lo <= info.correction_minute < m_hi:
            if at is None or at >= hour_end + CORRECTION_DELAY:
                _add(total, info.correction)
        if info.phantom is not None and m_lo <= info.phantom_minute < m_hi:
            if at is not None and hour_end + PHANTOM_FROM <= at < hour_end + PHANTOM_UNTIL:
                _add(total, info.phantom)

    def usage(
        self,
        start: int,
        end: int,
        group_by: Sequence[str],
        at: float | None,
        filters: Mapping[str, Collection[str]] | None = None,
    ) -> dict[tuple[str | None, ...], Fields]:
        """Usage over ``[start, end)`` per group, only groups with some usage."""
        groups: dict[tuple[str | None, ...], list[int]] = {}
        for stream in self.streams:
            if filters and not all(stream.dimension(k) in v for k, v in filters.items()):
                continue
            fields = self.stream_usage(stream.index, start, end, at)
            if fields == ZERO:
                continue
            key = tuple(stream.dimension(name) for name in group_by)
            _add(groups.setdefault(key, [0] * 6), fields)
        return {key: _fields(values) for key, values in groups.items()}

    # ------------------------------------------------------------------- cost

    def _compute_hour_cost(self, stream: int, hour: int) -> tuple[tuple[CostKey, Decimal], ...]:
        """Exact cents of one stream-hour's final usage, per atomic cost row."""
        spec = self.streams[stream]
        if spec.service_tier == "priority":
            return ()  # priority tier is billed outside the cost report
        info = self.hour(stream, hour)
        final = list(info.base)
        if info.correction is not None:
            _add(final, info.correction)
        model = MODELS[spec.model]
        batch = spec.service_tier == "batch"
        long_context = spec.context_window != "0-200k"
        rows: list[tuple[CostKey, Decimal]] = []
        for field, (token_type, label) in enumerate(COST_TOKEN_TYPES):
            if not final[field]:
                continue
            price = model.price(field, long_context=long_context)
            if batch:
                price /= 2
            description = (
                f"{model.display}{' Batch' if batch else ''} Usage - {label}"
                f"{' (Long Context)' if long_context else ''}"
            )
            key: CostKey = (
                spec.workspace_id,
                description,
                "tokens",
                spec.model,
                token_type,
                spec.service_tier,
                spec.context_window,
                spec.inference_geo,
            )
            rows.append((key, final[field] * price / 10_000))
        if final[5]:
            web: CostKey = (
                spec.workspace_id, WEB_SEARCH_DESCRIPTION, "web_search",
                None, None, None, None, None,
            )  # fmt: skip
            rows.append((web, final[5] * WEB_SEARCH_CENTS))
        return tuple(rows)

    def code_execution_cents(self, workspace: int, hour: int) -> Decimal:
        """Container time billed to one workspace in one hour (most hours none)."""
        if hour < self.data_start:
            return Decimal(0)
        d = digest(self.seed, "code-execution", workspace, hour)
        if d[0] >= 64:
            return Decimal(0)
        return Decimal(int.from_bytes(d[1:3], "big") % 5000 + 1) / 1000

    def cost_rows(self, day: int, at: float | None) -> dict[CostKey, Decimal]:
        """The atomic cost rows of one UTC day as served at ``at``, in cents.

        Each row is quantized to 5 decimals; every coarser grouping is a sum
        of these rows, so all groupings agree exactly.
        """
        exact: dict[CostKey, Decimal] = {}
        for hour in range(day, day + DAY, HOUR):
            if at is not None and hour + HOUR + REPORT_LAG > at:
                break
            for stream in self.streams:
                for key, cents in self.hour_cost(stream.index, hour):
                    exact[key] = exact.get(key, Decimal(0)) + cents
            for i, workspace_id in enumerate(self.cost_workspaces):
                cents = self.code_execution_cents(i, hour)
                if cents:
                    code: CostKey = (
                        workspace_id, CODE_EXECUTION_DESCRIPTION, "code_execution",
                        None, None, None, None, None,
                    )  # fmt: skip
                    exact[code] = exact.get(code, Decimal(0)) + cents
        rows = {}
        for key, cents in exact.items():
            rounded = cents.quantize(CENT_QUANTUM, rounding=ROUND_HALF_EVEN)
            if rounded:
                rows[key] = rounded
        return rows

    def cost(
        self, start: int, end: int, group_by: Sequence[str], at: float | None
    ) -> dict[tuple[str | None, ...], Decimal]:
        """Cents over the UTC days in ``[start, end)``, keyed by :func:`cost_group_key`."""
        totals: dict[tuple[str | None, ...], Decimal] = {}
        for day in range(start, end, DAY):
            for key, cents in self.cost_rows(day, at).items():
                group = cost_group_key(key, group_by)
                totals[group] = totals.get(group, Decimal(0)) + cents
        return totals

    # ------------------------------------------------------------ Claude Code

    def _compute_actor_hour(self, actor: int, hour: int) -> ActorHour | None:
        if hour < self.data_start:
            return None
        spec = self.actors[actor]
        d = digest(self.seed, "claude-code", actor, hour)
        if spec.kind == "api_actor":
            chance = 100
        elif _weekday(hour) < 5 and 8 <= hour // HOUR % 24 < 19:
            chance = 180
        else:
            chance = 6
        if d[0] >= chance:
            return None
        tokens = []
        for i, model in enumerate(spec.models):
            off = 17 + 9 * i
            if i and d[off] >= 160:
                continue
            u = [int.from_bytes(d[off + 1 + 2 * k : off + 3 + 2 * k], "big") for k in range(4)]
            tokens.append(
                (model, (1000 + u[0] % 30_000, 400 + u[1] % 12_000, u[2] * 8, u[3] % 40_000))
            )
        notebook = (d[14] % 3, d[15] % 2) if d[16] < 40 else (0, 0)
        return ActorHour(
            sessions=1 + (d[1] >= 200),
            lines_added=d[2] * 3 + d[3] % 40,
            lines_removed=d[4] + d[5] % 20,
            commits=(d[6] < 70) + (d[6] < 10),
            pull_requests=int(d[7] < 16),
            tools=((d[8] % 12, d[9] % 3), (d[10] % 5, d[11] % 2), (d[12] % 4, d[13] % 2), notebook),
            tokens=tuple(tokens),
        )

    def claude_code_records(self, day: date, at: float | None) -> list[dict[str, Any]]:
        """One record per actor active on ``day``, sorted by (actor type, name)."""
        day_start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
        records = []
        for actor in sorted(self.actors, key=lambda a: a.sort_key):
            hours = []
            for hour in range(day_start, day_start + DAY, HOUR):
                if at is not None and hour + HOUR + REPORT_LAG > at:
                    break
                activity = self.actor_hour(actor.index, hour)
                if activity is not None:
                    hours.append(activity)
            if hours:
                records.append(self._record(day, actor, hours))
        return records

    def _record(self, day: date, actor: Actor, hours: list[ActorHour]) -> dict[str, Any]:
        tools = {
            name: {
                "accepted": sum(h.tools[i][0] for h in hours),
                "rejected": sum(h.tools[i][1] for h in hours),
            }
            for i, name in enumerate(CLAUDE_CODE_TOOLS)
        }
        per_model: dict[str, list[int]] = {}
        for h in hours:
            for model, counts in h.tokens:
                totals = per_model.setdefault(model, [0, 0, 0, 0])
                for i, value in enumerate(counts):
                    totals[i] += value
        breakdown = []
        for model_id in sorted(per_model):
            t_in, t_out, t_read, t_write = per_model[model_id]
            prices = MODELS[model_id]
            usd_per_mtok = (
                t_in * prices.input
                + t_out * prices.output
                + t_read * prices.price(2, long_context=False)
                + t_write * prices.price(3, long_context=False)
            )
            cents = (usd_per_mtok / 10_000).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
            breakdown.append(
                {
                    "model": model_id,
                    "tokens": {
                        "input": t_in,
                        "output": t_out,
                        "cache_read": t_read,
                        "cache_creation": t_write,
                    },
                    "estimated_cost": {"currency": "USD", "amount": int(cents)},
                }
            )
        return {
            "date": f"{day.isoformat()}T00:00:00Z",
            "actor": actor.as_json(),
            "organization_id": self.organization_id,
            "customer_type": "api",
            "subscription_type": None,
            "terminal_type": actor.terminal_type,
            "core_metrics": {
                "num_sessions": sum(h.sessions for h in hours),
                "lines_of_code": {
                    "added": sum(h.lines_added for h in hours),
                    "removed": sum(h.lines_removed for h in hours),
                },
                "commits_by_claude_code": sum(h.commits for h in hours),
                "pull_requests_by_claude_code": sum(h.pull_requests for h in hours),
            },
            "tool_actions": tools,
            "model_breakdown": breakdown,
        }
