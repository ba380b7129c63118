"""The normalized shapes every client-side source is turned into before it reaches the ledger.

A step is one API response (one ``message.id``); a result is the end-of-call summary the
Agent SDK / ``claude -p`` emits. Sources never count anything themselves: they only produce
these records, so the counting rules live in exactly one place (``ledger`` + ``accounting``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Token kinds of ``claude_agent_tokens_total{token_type}``, in ledger field order.
TOKEN_TYPES: tuple[str, ...] = (
    "input",
    "output",
    "cache_read",
    "cache_creation_5m",
    "cache_creation_1h",
)

#: Where a record came from; the ``source`` label.
SOURCES: tuple[str, ...] = ("sdk", "ingest", "transcript")


@dataclass(slots=True)
class StepRecord:
    """Usage of one API response, identified globally by its ``message.id``.

    ``cache_5m``/``cache_1h`` are the split cache writes; an unsplit
    ``cache_creation_input_tokens`` arrives here as 5m (DESIGN §3 rule 4).

    Treated as a value but not ``frozen``: a frozen dataclass builds itself through
    ``object.__setattr__``, 1.6 µs per record against 0.2 µs, and one is built for every
    assistant line of a transcript history (a fifth of the time a line took).
    """

    message_id: str
    session_id: str
    model: str
    source: str
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_5m: int = 0
    cache_1h: int = 0
    web_search: int = 0
    batch: bool = False
    geo_us: bool = False
    fast: bool = False
    timestamp: float | None = None
    project: str = ""  # transcript project directory, when the project label is enabled

    def row(self) -> tuple[Any, ...]:
        """Every field as a plain tuple (``StepRecord(*row)`` rebuilds it): what a worker
        process sends back, since tuples pickle several times faster than instances."""
        return (
            self.message_id,
            self.session_id,
            self.model,
            self.source,
            self.input,
            self.output,
            self.cache_read,
            self.cache_5m,
            self.cache_1h,
            self.web_search,
            self.batch,
            self.geo_us,
            self.fast,
            self.timestamp,
            self.project,
        )

    def fields(self) -> tuple[int, int, int, int, int, int]:
        """Return the countable values in ledger field order (token types, then searches)."""
        return (
            self.input,
            self.output,
            self.cache_read,
            self.cache_5m,
            self.cache_1h,
            self.web_search,
        )


def merge_steps(a: StepRecord, b: StepRecord) -> StepRecord:
    """The one step two sightings of a message id make (DESIGN §3 rule 2), as a new record;
    the rule itself is ``merge_into``'s."""
    merged = StepRecord(*a.row())
    merge_into(merged, b)
    return merged


def merge_into(a: StepRecord, b: StepRecord) -> None:
    """Merge sighting ``b`` of a message id into ``a`` (DESIGN §3 rule 2), in place.

    The largest value of each field (streaming lines carry partial output counts), any
    modifier either carries, the earliest timestamp; identity fields stay ``a``'s. Written
    out field by field: a history scan calls it for every streamed copy of a response.
    """
    if b.input > a.input:
        a.input = b.input
    if b.output > a.output:
        a.output = b.output
    if b.cache_read > a.cache_read:
        a.cache_read = b.cache_read
    if b.cache_5m > a.cache_5m:
        a.cache_5m = b.cache_5m
    if b.cache_1h > a.cache_1h:
        a.cache_1h = b.cache_1h
    if b.web_search > a.web_search:
        a.web_search = b.web_search
    if b.batch:
        a.batch = True
    if b.geo_us:
        a.geo_us = True
    if b.fast:
        a.fast = True
    tb = b.timestamp
    if tb is not None and (a.timestamp is None or tb < a.timestamp):
        a.timestamp = tb


def coalesce(records: list[Normalized]) -> list[Normalized]:
    """Merge the steps of one message id within a batch into the first one's place.

    What the ledger would make of them anyway (``merge_steps``), with far fewer updates:
    a response is usually written as several lines in a row.
    """
    out: list[Normalized] = []
    index: dict[str, int] = {}
    for record in records:
        if type(record) is not StepRecord:
            out.append(record)
            continue
        at = index.get(record.message_id)
        if at is None:
            index[record.message_id] = len(out)
            out.append(record)
        else:
            known = out[at]
            assert isinstance(known, StepRecord)
            out[at] = merge_steps(known, record)
    return out


@dataclass(frozen=True, slots=True)
class ModelTotals:
    """One ``modelUsage`` entry of a result: cumulative for the call, subagents included.

    ``cache_creation`` is not split by TTL in results; ``cost_pico`` is the reported
    ``costUSD`` in picodollars (1e-12 USD), or None when absent.
    """

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    web_search: int = 0
    cost_pico: int | None = None

    def fields(self) -> tuple[int, int, int, int, int]:
        """Return result totals in order: input, output, cache_read, cache_creation, searches."""
        return (self.input, self.output, self.cache_read, self.cache_creation, self.web_search)


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """The end of one ``query()`` call: reported cost and authoritative per-model totals.

    ``key`` identifies the message itself (``session_id`` + ``uuid``) so a re-sent result
    changes nothing.
    """

    key: str
    session_id: str
    outcome: str
    source: str
    models: dict[str, ModelTotals] = field(default_factory=dict)
    total_cost_pico: int | None = None
    timestamp: float | None = None


@dataclass(frozen=True, slots=True)
class CallStart:
    """A ``system``/``init`` message: a new ``query()`` call (or ``claude -p`` run) begins.

    Any steps of the session still waiting for a result belong to an earlier call that ended
    without one (crash, interrupt), so they must not be merged into the next result's call.
    ``key`` (session + uuid) makes a re-sent init change nothing.
    """

    key: str
    session_id: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """A valid message that carries no billable usage (user turns, system lines, errors)."""

    kind: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message that cannot be used; ``reason`` is a bounded label value, ``detail`` free text."""

    reason: str
    detail: str = ""


Record = StepRecord | ResultRecord
Normalized = StepRecord | ResultRecord | CallStart | Ignored | Rejected
