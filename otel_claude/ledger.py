"""The ledger: the one place usage is counted, persisted in SQLite (WAL).

Every number any renderer shows is a counter total kept here. ``apply()`` takes a batch of
normalized records, deduplicates them against the keys already stored (step ids, result ids),
computes counter increments with ``accounting``, and commits totals, keys, per-call state
and source cursors in a single transaction: a crash at any instant leaves either all of a
batch or none of it, so a restart neither loses nor repeats a token.

Keys are pruned once older than the dedup horizon (default 60 days, ``dedup_horizon_days``):
a step id seen again after that would count again, which is why the horizon should exceed
the longest time old messages can reappear (Claude Code keeps transcripts 30 days by
default). Nothing is held in memory per key; only the counter totals (one number per
series) live in RAM, and their number is capped.

Series cap: a counter family (together with its ``:revised_down`` twin) holds at most
``max_series_per_family`` distinct label sets. Past it, a new label set is folded: its
unbounded label values (model, project, workspace, API key, actor, ...) become ``other`` while
bounded ones (``BOUNDED_LABELS``: token_type, source, ...) are kept, so the value still counts
in the family total; ``series_folded{family}`` counts the folded updates. The label sets known
are the keys of the totals, which are reloaded from SQLite, and folding is decided before
anything is written, so a label set once folded stays folded across restarts (unless the cap
is raised). Only counter labels are folded: step rows and Admin API bucket state keep the
original values, so the arithmetic behind the increments is unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from otel_claude.accounting import FIELD_COUNT, ModelState
from otel_claude.errors import LedgerError
from otel_claude.pricing import Modifiers, PriceTable
from otel_claude.records import (
    TOKEN_TYPES,
    CallStart,
    Ignored,
    Normalized,
    Rejected,
    ResultRecord,
    StepRecord,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
OTHER_MODEL = "other"
UNKNOWN_MODEL = "unknown"

# Counter families kept by the ledger; ``exposition.families`` gives them names and help.
TOKENS = "tokens"  # (model, token_type, source, project)
WEB_SEARCH = "web_search"  # (model, source)
COST = "cost_pico"  # (model, cost_source, project)
STEPS = "steps"  # (model, source)
CONVERSATIONS = "conversations"  # (outcome,)
UNPRICED = "unpriced_tokens"  # (model,)
MESSAGES = "ingest_messages"  # (source, outcome)
REJECTED = "ingest_rejected"  # (source, reason)
PRUNED = "keys_pruned"  # (kind,)
SERIES_FOLDED = "series_folded"  # (family,)

#: Label names of every counter family, in stored order: the series cap keeps the values of
#: the bounded ones and folds the others. The Admin API modules import this one, so their
#: family keys are spelled out here (tests/test_cardinality.py checks them against the modules).
LABEL_NAMES: dict[str, tuple[str, ...]] = {
    TOKENS: ("model", "token_type", "source", "project"),
    WEB_SEARCH: ("model", "source"),
    COST: ("model", "cost_source", "project"),
    STEPS: ("model", "source"),
    CONVERSATIONS: ("outcome",),
    UNPRICED: ("model",),
    MESSAGES: ("source", "outcome"),
    REJECTED: ("source", "reason"),
    PRUNED: ("kind",),
    SERIES_FOLDED: ("family",),
    "api_tokens": (
        "token_type",
        "model",
        "workspace_id",
        "api_key_id",
        "service_tier",
        "context_window",
        "inference_geo",
    ),
    "api_web_search": (
        "model",
        "workspace_id",
        "api_key_id",
        "service_tier",
        "context_window",
        "inference_geo",
    ),
    "api_cost_pico": (
        "workspace_id",
        "cost_type",
        "model",
        "token_type",
        "service_tier",
        "context_window",
    ),
    "cc_sessions": ("actor",),
    "cc_lines": ("actor", "type"),
    "cc_commits": ("actor",),
    "cc_pull_requests": ("actor",),
    "cc_tool_decisions": ("actor", "tool", "decision"),
    "cc_tokens": ("actor", "model", "token_type"),
    "cc_cost_pico": ("actor", "model"),
}

#: Labels whose values come from a small fixed vocabulary: kept when a label set is folded.
BOUNDED_LABELS = frozenset(
    {
        "token_type",
        "cost_source",
        "cost_type",
        "source",
        "outcome",
        "decision",
        "type",
        "tool",
        "reason",
        "kind",
        "service_tier",
        "context_window",
        "family",
    }
)

#: Label value of folded labels (the same word as the model cap's).
FOLDED = "other"
#: Series a full family may still gain as folded label sets (one per combination of bounded
#: values: a few dozen in practice). Past ``cap + FOLD_SLACK`` every label folds, so a family
#: never holds more than ``max_series_per_family + FOLD_SLACK + 1`` label sets.
FOLD_SLACK = 1000

CounterKey = tuple[str, tuple[str, ...]]
#: Steps whose increments are emitted together: model, source, project, mods, long context.
_PlainKey = tuple[str, str, str, int, bool]

_BATCH, _GEO_US, _FAST = 1, 2, 4
_SQL_CHUNK = 500
#: WAL pages between automatic checkpoints: SQLite's default, and during a cold scan.
_CHECKPOINT_PAGES, _DEFERRED_CHECKPOINT_PAGES = 1000, 10_000
#: Most message ids ``Ledger._remember_ids`` keeps in memory (some 25 MB at the limit).
_MAX_REMEMBERED = 250_000

#: One row per message id counted. A plain (rowid) table with a unique index on the id,
#: not a table keyed by the id: rows are appended and only the narrow index takes inserts
#: in random id order, so a cold scan's commits rewrite half as many pages (11 MB of WAL
#: instead of 23 MB for 30,000 steps; 17 ms less to ready on a 500 MB history).
_STEPS_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    message_id TEXT NOT NULL, session_id TEXT NOT NULL, call_seq INTEGER NOT NULL,
    model TEXT NOT NULL, source TEXT NOT NULL, mods INTEGER NOT NULL,
    project TEXT NOT NULL DEFAULT '',
    f0 INTEGER NOT NULL, f1 INTEGER NOT NULL, f2 INTEGER NOT NULL,
    f3 INTEGER NOT NULL, f4 INTEGER NOT NULL, f5 INTEGER NOT NULL,
    seen_at REAL NOT NULL);
"""
#: A step row as the ledger writes and reads it (``_StepRow`` and the insert tuples).
_STEP_COLUMNS = (
    "message_id, session_id, call_seq, model, source, mods, "
    "f0, f1, f2, f3, f4, f5, seen_at, project"
)
_INSERT_STEP = f"INSERT INTO steps ({_STEP_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
_STEPS_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS steps_message ON steps (message_id)"

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (
    family TEXT NOT NULL, labels TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (family, labels)) WITHOUT ROWID;
"""
    + _STEPS_TABLE.format(name="steps")
    + """
-- No index on steps.seen_at: keeping one up to date cost a fifth of the time of committing
-- a cold scan (0.06 s of 0.3 s for 30k steps), while the hourly prune that would use it
-- scans 1M steps in 0.15 s without it. Ledgers that have it lose it here.
DROP INDEX IF EXISTS steps_seen;
CREATE TABLE IF NOT EXISTS calls (
    session_id TEXT NOT NULL, seq INTEGER NOT NULL, closed_at REAL,
    state TEXT NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (session_id, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS calls_updated ON calls (updated_at);
CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, seen_at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS results_seen ON results (seen_at);
CREATE TABLE IF NOT EXISTS cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS buckets (
    source TEXT NOT NULL, bucket TEXT NOT NULL, grp TEXT NOT NULL, family TEXT NOT NULL,
    labels TEXT NOT NULL, high TEXT NOT NULL, last TEXT NOT NULL,
    PRIMARY KEY (source, bucket, grp, family, labels)) WITHOUT ROWID;
"""
)

#: Suffix of the twin family that counts downward revisions of an upstream counter.
REVISED_DOWN = ":revised_down"


@dataclass(frozen=True, slots=True)
class BucketValue:
    """One counter contribution of one (bucket, group), as an upstream report last served it.

    ``group`` identifies the upstream row (it may hold more detail than ``labels``, e.g. a
    hashed actor whose label is dropped); ``value`` is cumulative for the bucket, so only its
    change since the last value served is counted (DESIGN §3 rule 6).
    """

    source: str
    bucket: str
    group: str
    family: str
    labels: tuple[str, ...]
    value: int


@dataclass
class ApplySummary:
    """What one ``apply()`` did, message by message, for the ingest response."""

    accepted: int = 0
    duplicates: int = 0
    ignored: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    new_keys: dict[str, int] = field(default_factory=dict)


@dataclass
class _Call:
    session_id: str
    seq: int
    closed_at: float | None
    models: dict[str, ModelState]
    dirty: bool = False


@dataclass
class _StepRow:
    session_id: str
    call_seq: int
    model: str
    source: str
    mods: int
    fields: list[int]
    seen_at: float
    dirty: bool = False
    new: bool = False
    project: str = ""


class _Calls:
    """Per-batch view of the ``calls`` table, loaded lazily and written back at the end."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._by_key: dict[tuple[str, int], _Call] = {}
        self._sessions: dict[str, list[_Call]] = {}  # loaded calls by session, sorted by seq
        self._max_seq: dict[str, int] = {}
        self.created = 0

    def _load_session(self, session: str, since: float | None) -> list[_Call]:
        calls = self._sessions.get(session)
        if calls is not None:
            return calls
        rows = self._conn.execute(
            "SELECT seq, closed_at, state FROM calls WHERE session_id = ? "
            "AND (closed_at IS NULL OR closed_at >= ?) ORDER BY seq",
            (session, since if since is not None else float("inf")),
        ).fetchall()
        calls = [self._remember(session, seq, closed, state) for seq, closed, state in rows]
        top = self._conn.execute(
            "SELECT MAX(seq) FROM calls WHERE session_id = ?", (session,)
        ).fetchone()[0]
        self._max_seq[session] = top if top is not None else 0
        self._sessions[session] = calls
        return calls

    def only_plain_open_call(self, session: str) -> bool:
        """Whether a step of ``session`` can only go to its open call, which has no result.

        True when the calls loaded for the batch (``preload``) are at most one open call
        whose models carry no result: no closed call can claim a step then.
        """
        loaded = self._sessions.get(session)
        if loaded is None:  # not preloaded: let the general path look
            return False
        return all(
            call.closed_at is None and not any(any(m.result) for m in call.models.values())
            for call in loaded
        )

    def preload(self, since: Mapping[str, float | None]) -> None:
        """Load the calls of many sessions at once, as ``_load_session`` would one by one.

        Two queries per ``_SQL_CHUNK`` sessions instead of two per session: on a cold scan
        of 3,000 transcripts that is 12 queries instead of 6,000 (0.15 s).
        """
        wanted = [s for s in since if s not in self._sessions]
        for start in range(0, len(wanted), _SQL_CHUNK):
            chunk = wanted[start : start + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            pairs = ",".join("(?, ?)" for _ in chunk)
            cutoffs: list[object] = []
            for session in chunk:
                cutoff = since[session]
                cutoffs += [session, cutoff if cutoff is not None else float("inf")]
            found: dict[str, list[_Call]] = {s: [] for s in chunk}
            for session, seq, closed, state in self._conn.execute(
                f"WITH wanted (session_id, cutoff) AS (VALUES {pairs}) "
                "SELECT c.session_id, c.seq, c.closed_at, c.state FROM calls c "
                "JOIN wanted w ON c.session_id = w.session_id "
                "WHERE c.closed_at IS NULL OR c.closed_at >= w.cutoff "
                "ORDER BY c.session_id, c.seq",
                cutoffs,
            ):
                found[session].append(self._remember(session, seq, closed, state))
            top = dict(
                self._conn.execute(
                    f"SELECT session_id, MAX(seq) FROM calls WHERE session_id IN ({marks}) "
                    "GROUP BY session_id",
                    chunk,
                ).fetchall()
            )
            for session, calls in found.items():
                self._sessions[session] = calls
                self._max_seq[session] = top.get(session) or 0

    def _remember(self, session: str, seq: int, closed: float | None, state: str) -> _Call:
        known = self._by_key.get((session, seq))
        if known is not None:
            return known
        models = {m: ModelState.from_list(v) for m, v in json.loads(state).items()}
        call = _Call(session, seq, closed, models)
        self._by_key[(session, seq)] = call
        return call

    def get(self, session: str, seq: int) -> _Call:
        call = self._by_key.get((session, seq))
        if call is None:
            row = self._conn.execute(
                "SELECT closed_at, state FROM calls WHERE session_id = ? AND seq = ?",
                (session, seq),
            ).fetchone()
            if row is None:  # pruned under a younger step: start a fresh, closed call
                call = _Call(session, seq, 0.0, {}, dirty=True)
                self._by_key[(session, seq)] = call
            else:
                call = self._remember(session, seq, row[0], row[1])
        return call

    def for_step(self, session: str, timestamp: float | None, since: float | None) -> _Call:
        """The call a new step belongs to: the first call closed after it, else the open one."""
        calls = self._load_session(session, since)
        if timestamp is not None:
            closed = [c for c in calls if c.closed_at is not None and c.closed_at >= timestamp]
            if closed:
                return min(closed, key=lambda c: (c.closed_at, c.seq))
        return self.open_call(session, since)

    def open_call(self, session: str, since: float | None) -> _Call:
        """The session's call still waiting for its result, created when there is none."""
        calls = self._load_session(session, since)
        for call in calls:
            if call.closed_at is None:
                return call
        seq = self._max_seq[session] + 1
        self._max_seq[session] = seq
        call = _Call(session, seq, None, {}, dirty=True)
        self.created += 1
        calls.append(call)
        self._by_key[(session, seq)] = call
        return call

    def start(self, session: str, since: float | None, now: float) -> None:
        """A new call begins: an open call that already has steps ended without a result."""
        for call in self._load_session(session, since):
            if call.closed_at is None and call.models:
                call.closed_at = now
                call.dirty = True

    def flush(self, now: float) -> None:
        rows = [
            (
                c.session_id,
                c.seq,
                c.closed_at,
                _state_text({m: s.to_list() for m, s in c.models.items()}),
                now,
            )
            for c in self._by_key.values()
            if c.dirty
        ]
        self._conn.executemany(
            "INSERT INTO calls (session_id, seq, closed_at, state, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_id, seq) DO UPDATE SET "
            "closed_at = excluded.closed_at, state = excluded.state, "
            "updated_at = excluded.updated_at",
            rows,
        )


def _state_text(state: dict[str, list[int]]) -> str:
    """A call's model states as compact JSON: orjson, 10 times faster than ``json`` (20 ms
    of a cold scan's 2,500 calls), or ``json`` for a count beyond 64 bits, which orjson
    cannot write (only hostile input gets there; ``json.loads`` reads both back exactly)."""
    try:
        return orjson.dumps(state).decode()
    except TypeError:
        return json.dumps(state, separators=(",", ":"))


class Ledger:
    """Counter totals and the state that makes them exact, in one SQLite database.

    Thread-safe: one lock serializes writers and snapshot copies. ``path`` may be
    ``":memory:"`` for the in-process Python API. ``read_only`` opens an existing ledger for
    reporting while a server keeps writing it.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        prices: PriceTable,
        clock: Callable[[], float] = time.time,
        dedup_horizon_s: float = 60 * 86400,
        synchronous: str = "normal",
        max_models: int = 200,
        max_series_per_family: int = 10_000,
        prune_every_s: float = 3600.0,
        before_commit: Callable[[], None] | None = None,
        read_only: bool = False,
        bulk: bool = True,
    ) -> None:
        self.path = str(path)
        #: Count first-seen steps as sums (``_apply_first_sight``); False forces the
        #: step-by-step path, which the tests compare the bulk path with.
        self._bulk = bulk
        self._prices = prices
        self._clock = clock
        self._horizon = dedup_horizon_s
        self._max_models = max_models
        if max_series_per_family < 1:
            raise LedgerError(
                f"max_series_per_family must be at least 1, not {max_series_per_family}"
            )
        self._max_series = max_series_per_family
        self._prune_every = prune_every_s
        self._read_only = read_only
        self._before_commit = before_commit
        self._lock = threading.RLock()
        self._rates: dict[tuple[str, int, int], int | None] = {}
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                if not read_only and not Path(self.path).exists():
                    # Usage data is private: the database (and the WAL and shared-memory
                    # files SQLite creates with its mode) readable by the owner only.
                    Path(self.path).touch(mode=0o600)
            if read_only:
                self._conn = sqlite3.connect(
                    f"{Path(self.path).resolve().as_uri()}?mode=ro",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                    timeout=30,
                )
            else:
                self._conn = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False, timeout=30
                )
                self._conn.execute("PRAGMA journal_mode=WAL")
                if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
                    raise LedgerError(f"unknown synchronous mode {synchronous!r}")
                self._conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
                tables = {
                    row[0]
                    for row in self._conn.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table'"
                    )
                }
                if tables and "meta" not in tables:
                    raise LedgerError(
                        f"{self.path} is an SQLite database of something else (tables: "
                        f"{', '.join(sorted(tables)[:5])}); refusing to use it as a ledger"
                    )
                self._conn.executescript(_SCHEMA)
            self._check_schema()
            self._totals = self._load_totals()
            self._stored_ids = self._empty_steps_table(read_only)
            #: Message id -> rowid of every step stored while the steps index is dropped
            #: (``deferred_index``); None otherwise.
            self._staged: dict[str, int] | None = None
            self._next_rowid = 1
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open ledger at {self.path}: {exc}") from exc
        self._models = {labels[0] for (fam, labels) in self._totals if fam in (TOKENS, STEPS)}
        self._series = self._count_series()
        self._last_prune = 0.0
        self._version = 0
        self._key_counts: dict[str, int] = {}
        if read_only:
            self._key_counts = self._count_keys()
        else:
            self.prune()

    # --- public API -----------------------------------------------------------------

    def apply(
        self,
        items: Sequence[Normalized],
        *,
        source: str,
        cursors: Mapping[str, str] | None = None,
    ) -> ApplySummary:
        """Count a batch of records and commit it, with ``cursors``, in one transaction."""
        with self._lock:
            now = self._clock()
            summary = ApplySummary()
            delta: defaultdict[CounterKey, int] = defaultdict(int)
            self._commit(
                lambda: self._apply_items(items, source, now, summary, delta), delta, cursors
            )
            for kind, added in summary.new_keys.items():
                self._key_counts[kind] = self._key_counts.get(kind, 0) + added
            if self._staged is not None and len(self._staged) > _MAX_REMEMBERED:
                self._build_steps_index()  # bounds the memory; after the commit, not in it
            if now - self._last_prune >= self._prune_every:
                self.prune()
            return summary

    def apply_buckets(
        self,
        values: Sequence[BucketValue],
        *,
        cursors: Mapping[str, str] | None = None,
        baseline: bool = False,
    ) -> dict[CounterKey, int]:
        """Count the growth of upstream buckets; commit it with ``cursors`` in one transaction.

        For every (source, bucket, group, family, labels) the last value served is kept; a
        counter gets every increase over it. A value lower than the last one served is a
        downward revision: it is added to the ``<family>:revised_down`` twin counter and never
        decrements anything, so counter minus twin is always the latest value served.
        With ``baseline`` the values are recorded without counting (used
        when the grouping changed, so already counted usage is not counted again under new
        group keys). Returns the counter increments.
        """
        with self._lock:
            delta: defaultdict[CounterKey, int] = defaultdict(int)
            self._commit(lambda: self._apply_buckets(values, baseline, delta), delta, cursors)
            return dict(delta)

    def _apply_buckets(
        self,
        values: Sequence[BucketValue],
        baseline: bool,
        delta: defaultdict[CounterKey, int],
    ) -> None:
        conn = self._conn
        known = self._load_buckets(values)
        # Rows repeated within one read are parts of one value: add them up.
        served: dict[tuple[str, str, str, str, str], int] = {}
        label_sets: dict[str, tuple[str, ...]] = {}
        for v in values:
            joined = "\x1f".join(v.labels)
            label_sets[joined] = v.labels
            bkey = (v.source, v.bucket, v.group, v.family, joined)
            served[bkey] = served.get(bkey, 0) + v.value
        rows = []
        for bkey, value in served.items():
            family, labels = bkey[3], label_sets[bkey[4]]
            high, last = known.get(bkey, (0, 0))
            # Every rise over the last value served is counted and every fall goes to the
            # twin, so ``total - revised_down`` always equals the latest value served.
            if not baseline:
                if value > last:
                    delta[(family, labels)] += value - last
                elif value < last:
                    delta[(family + REVISED_DOWN, labels)] += last - value
            high = max(high, value)
            last = value
            known[bkey] = (high, last)
            rows.append((*bkey, str(high), str(last)))
        conn.executemany(
            "INSERT INTO buckets (source, bucket, grp, family, labels, high, last) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, bucket, grp, family, "
            "labels) DO UPDATE SET high = excluded.high, last = excluded.last",
            rows,
        )

    def _commit(
        self,
        work: Callable[[], None],
        delta: defaultdict[CounterKey, int],
        cursors: Mapping[str, str] | None,
    ) -> None:
        """Run ``work`` and commit its counters and ``cursors`` in one transaction.

        Nothing reaches the in-memory totals unless the commit succeeded. ``delta`` is
        replaced by what was counted: the same increments, new label sets past the series cap
        folded, plus their ``series_folded`` count.
        """
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                work()
                counted = self._cap(delta)
                self._write_counters(counted)
                if cursors:
                    conn.executemany(
                        "INSERT INTO cursors (name, value) VALUES (?, ?) "
                        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                        list(cursors.items()),
                    )
                if self._before_commit is not None:
                    self._before_commit()
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite may already have rolled back (disk full)
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot write ledger: {exc}") from exc
        self._add_totals(counted)
        delta.clear()
        delta.update(counted)

    @contextmanager
    def deferred_checkpoints(self) -> Iterator[None]:
        """Checkpoint the WAL every 40 MB instead of every 4 MB while the block runs.

        For a cold scan, which writes some 4 MB of pages per commit: a checkpoint (WAL
        copied into the database, then fsync) after nearly every commit cost 0.05 s of
        waiting on a 500 MB history. Commits stay atomic and as durable as ``synchronous``
        says. Afterwards the next commit checkpoints as usual; only while the block runs may
        the WAL file grow to 40 MB, so this is not for everyday writes (a small disk fills).
        """
        if self._read_only:
            yield
            return
        with self._lock:
            self._conn.execute(f"PRAGMA wal_autocheckpoint={_DEFERRED_CHECKPOINT_PAGES}")
        try:
            yield
        finally:
            with self._lock:
                self._conn.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_PAGES}")

    @contextmanager
    def deferred_index(self) -> Iterator[None]:
        """Build the steps index once, at the end, when the block fills an empty ledger.

        A first start's cold scan stores tens of thousands of steps. Kept up to date, the
        unique index on their message ids takes each one as a random insert, and every
        commit rewrites most of its pages; built once from the finished table it costs a
        sort (30,000 steps: 0.068 s in all instead of 0.089 s, 5 MB of WAL instead of
        11 MB). Meanwhile the steps stored are found by rowid through ``_staged``, which
        holds every id stored since the table was empty. Anything else (a ledger with
        steps, a read-only one) runs the block unchanged. A crash inside the block leaves
        no index; the next open builds it.
        """
        with self._lock:
            defer = (
                not self._read_only
                and self._staged is None
                and self._stored_ids is not None
                and not self._stored_ids
            )
            if defer:
                try:
                    self._conn.execute("DROP INDEX IF EXISTS steps_message")
                except sqlite3.Error as exc:
                    raise LedgerError(f"cannot write ledger: {exc}") from exc
                self._staged, self._next_rowid = {}, 1
        try:
            yield
        finally:
            if defer:
                with self._lock:
                    self._build_steps_index()

    def _build_steps_index(self) -> None:
        self._staged = None
        try:
            self._conn.execute(_STEPS_INDEX)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot index the ledger's steps: {exc}") from exc

    def _insert_staged(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert steps rows (message id first) with the next rowids, noted in ``_staged``.

        A rowid is never handed out twice, so an id noted for a transaction that then
        rolled back points at no row and is simply not found.
        """
        staged = self._staged
        assert staged is not None
        rowid = self._next_rowid
        numbered = []
        for row in rows:
            staged[row[0]] = rowid
            numbered.append((rowid, *row))
            rowid += 1
        self._next_rowid = rowid
        self._conn.executemany(
            f"INSERT INTO steps (rowid, {_STEP_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            numbered,
        )

    def forget_buckets(self, source: str, before: str) -> int:
        """Drop bucket state of ``source`` older than ``before`` (never re-read again)."""
        with self._lock:
            try:
                return int(
                    self._conn.execute(
                        "DELETE FROM buckets WHERE source = ? AND bucket < ?", (source, before)
                    ).rowcount
                )
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot prune bucket state: {exc}") from exc

    def _load_buckets(
        self, values: Sequence[BucketValue]
    ) -> dict[tuple[str, str, str, str, str], tuple[int, int]]:
        found: dict[tuple[str, str, str, str, str], tuple[int, int]] = {}
        for source, bucket in {(v.source, v.bucket) for v in values}:
            for row in self._conn.execute(
                "SELECT grp, family, labels, high, last FROM buckets "
                "WHERE source = ? AND bucket = ?",
                (source, bucket),
            ):
                found[(source, bucket, row[0], row[1], row[2])] = (int(row[3]), int(row[4]))
        return found

    @property
    def version(self) -> int:
        """Grows whenever committed totals change, so renderers can cache per version.

        Read it *before* ``snapshot()``: a commit in between makes the snapshot newer than
        the version, never older, so a cache keyed by it is at worst re-rendered once more.
        """
        return self._version

    def snapshot(self) -> dict[CounterKey, int]:
        """Return a copy of every counter total (cost in picodollars)."""
        with self._lock:
            return dict(self._totals)

    def cursor(self, name: str) -> str | None:
        """Return a source position committed with ``apply(cursors=...)``."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
            return None if row is None else str(row[0])

    def cursors(self, prefix: str) -> dict[str, str]:
        """Every committed cursor whose name starts with ``prefix``."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, value FROM cursors WHERE name >= ? AND name < ?",
                (prefix, prefix + "\U0010ffff"),
            ).fetchall()
            return {str(name): str(value) for name, value in rows}

    def drop_cursors(self, names: Iterable[str]) -> None:
        """Forget cursors of sources that are gone (e.g. deleted files)."""
        with self._lock:
            try:
                self._conn.executemany("DELETE FROM cursors WHERE name = ?", [(n,) for n in names])
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot drop cursors: {exc}") from exc

    def key_counts(self) -> dict[str, int]:
        """Return how many dedup keys of each kind are stored (bounded by the horizon).

        Counted once at start and after each prune, then kept up to date in memory, so a
        scrape never scans the tables.
        """
        with self._lock:
            return dict(self._key_counts)

    def _count_keys(self) -> dict[str, int]:
        return {
            table: int(self._conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            for table in ("steps", "calls", "results")
        }

    def size_bytes(self) -> int:
        """Return the on-disk size of the database and its WAL."""
        if self.path == ":memory:":
            return 0
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.stat(self.path + suffix).st_size
            except FileNotFoundError:
                pass
        return total

    def prune(self) -> int:
        """Drop dedup keys older than the horizon; return how many were dropped."""
        with self._lock:
            now = self._clock()
            cutoff = now - self._horizon
            dropped: dict[str, int] = {}
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                for kind, sql in (
                    ("steps", "DELETE FROM steps WHERE seen_at < ?"),
                    ("results", "DELETE FROM results WHERE seen_at < ?"),
                    ("calls", "DELETE FROM calls WHERE updated_at < ?"),
                ):
                    n = self._conn.execute(sql, (cutoff,)).rowcount
                    if n:
                        dropped[kind] = n
                delta: defaultdict[CounterKey, int] = defaultdict(int)
                for kind, n in dropped.items():
                    delta[(PRUNED, (kind,))] += n
                counted = self._cap(delta)
                self._write_counters(counted)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise LedgerError(f"cannot prune ledger: {exc}") from exc
            self._add_totals(counted)
            self._key_counts = self._count_keys()
            self._last_prune = now
            if dropped:
                log.info("pruned dedup keys", extra={"fields": dropped})
            return sum(dropped.values())

    def close(self) -> None:
        """Close the database (committed data is already durable)."""
        with self._lock:
            self._conn.close()

    # --- internals ------------------------------------------------------------------

    def _check_schema(self) -> None:
        """Record the schema of a new ledger, or bring an older one up to date.

        Each step is its own transaction, so an upgrade cut short resumes at the next open.
        A read-only open accepts schema 2 as it is: only the steps table's layout differs.
        """
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            if self._read_only:
                raise LedgerError("ledger has no schema: not an otel-claude ledger")
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )
            self._conn.execute(_STEPS_INDEX)
            return
        version = int(row[0])
        if self._read_only:
            if version not in (2, SCHEMA_VERSION):
                raise LedgerError(
                    f"ledger schema {version} is not supported (expected {SCHEMA_VERSION})"
                )
            return
        if version == 1:
            # 0.1 development ledgers: steps gain a project column, token and cost series
            # a project label (empty).
            self._conn.executescript(
                "BEGIN IMMEDIATE;"
                "ALTER TABLE steps ADD COLUMN project TEXT NOT NULL DEFAULT '';"
                "UPDATE counters SET labels = labels || char(31) "
                "WHERE family IN ('tokens', 'cost_pico');"
                "UPDATE meta SET value = '2' WHERE key = 'schema';"
                "COMMIT;"
            )
            version = 2
        if version == 2:
            # Steps move from a table keyed by message id to a rowid table with a unique
            # index on it (see _STEPS_TABLE); the rows are copied as they are.
            self._conn.executescript(
                "BEGIN IMMEDIATE;"
                + _STEPS_TABLE.format(name="steps_v3")
                + f"INSERT INTO steps_v3 ({_STEP_COLUMNS}) "
                f"SELECT {_STEP_COLUMNS} FROM steps ORDER BY message_id;"
                "DROP TABLE steps;"
                "ALTER TABLE steps_v3 RENAME TO steps;"
                f"{_STEPS_INDEX};"
                "UPDATE meta SET value = '3' WHERE key = 'schema';"
                "COMMIT;"
            )
            version = 3
        if version != SCHEMA_VERSION:
            raise LedgerError(
                f"ledger schema {version} is not supported (expected {SCHEMA_VERSION})"
            )
        self._conn.execute(_STEPS_INDEX)  # gone only if it was never made: cheap otherwise

    def _load_totals(self) -> dict[CounterKey, int]:
        rows = self._conn.execute("SELECT family, labels, value FROM counters").fetchall()
        return {(fam, tuple(labels.split("\x1f"))): int(value) for fam, labels, value in rows}

    def _write_counters(self, delta: Mapping[CounterKey, int]) -> None:
        rows = [
            (fam, "\x1f".join(labels), str(self._totals.get((fam, labels), 0) + value))
            for (fam, labels), value in delta.items()
            if value
        ]
        self._conn.executemany(
            "INSERT INTO counters (family, labels, value) VALUES (?, ?, ?) "
            "ON CONFLICT (family, labels) DO UPDATE SET value = excluded.value",
            rows,
        )

    def _count_series(self) -> dict[str, int]:
        """Distinct label sets per family group (a family and its revised-down twin)."""
        counts: dict[str, int] = {}
        for fam, labels in self._totals:
            group = fam.removesuffix(REVISED_DOWN)
            if fam != group and (group, labels) in self._totals:
                continue  # already counted with the family itself
            counts[group] = counts.get(group, 0) + 1
        return counts

    def _add_totals(self, counted: Mapping[CounterKey, int]) -> None:
        """Add committed increments to the totals, keeping the series counts up to date."""
        totals = self._totals
        for key, value in counted.items():
            if key in totals:
                if value:
                    totals[key] += value
                    self._version += 1
                continue
            self._version += 1
            fam, labels = key
            if (_twin(fam), labels) not in totals:
                group = fam.removesuffix(REVISED_DOWN)
                self._series[group] = self._series.get(group, 0) + 1
            totals[key] = value

    def _cap(self, delta: Mapping[CounterKey, int]) -> dict[CounterKey, int]:
        """``delta`` with new label sets past the series cap folded (O(1) per increment).

        A label set already counted in a family, or in its revised-down twin, is kept; a new
        one is admitted while the group has fewer than ``max_series_per_family`` label sets,
        else folded. The twin shares the decision, so ``x - x_revised_down`` stays per series.
        Empty increments of new label sets are dropped (they would add series, not counts).
        """
        totals = self._totals
        out: dict[CounterKey, int] = {}
        added: dict[str, int] = {}  # group -> label sets admitted by this batch
        folded: dict[str, int] = {}

        def known(fam: str, labels: tuple[str, ...]) -> bool:
            return any((f, labels) in totals or (f, labels) in out for f in (fam, _twin(fam)))

        for key, value in delta.items():
            fam, labels = key
            if key in totals or key in out or fam == SERIES_FOLDED:
                out[key] = out.get(key, 0) + value
                continue
            if not value:
                continue
            target = labels
            if not known(fam, labels):
                group = fam.removesuffix(REVISED_DOWN)
                used = self._series.get(group, 0) + added.get(group, 0)
                if used >= self._max_series:
                    target = _fold(group, labels, everything=used >= self._max_series + FOLD_SLACK)
                    if not known(fam, target):
                        added[group] = added.get(group, 0) + 1
                    if target != labels:
                        folded[fam] = folded.get(fam, 0) + 1
                else:
                    added[group] = added.get(group, 0) + 1
            out[(fam, target)] = out.get((fam, target), 0) + value
        for fam, count in folded.items():
            key = (SERIES_FOLDED, (fam,))
            out[key] = out.get(key, 0) + count
        return out

    def _label_model(self, model: str) -> str:
        """Keep the model label set bounded: beyond ``max_models`` new names become 'other'."""
        if model in self._models:
            return model
        if len(self._models) >= self._max_models:
            return OTHER_MODEL
        self._models.add(model)
        return model

    def _apply_items(
        self,
        items: Sequence[Normalized],
        source: str,
        now: float,
        summary: ApplySummary,
        delta: defaultdict[CounterKey, int],
    ) -> None:
        conn = self._conn
        # The batch's steps once, by exact type (records are final classes): the passes
        # below run per step of a cold scan, where every attribute or isinstance shows.
        steps = [it for it in items if type(it) is StepRecord]
        step_ids = {it.message_id for it in steps}
        result_keys = {it.key for it in items if type(it) is ResultRecord or type(it) is CallStart}
        rows = self._load_steps(step_ids)
        seen_results = self._existing("SELECT key FROM results WHERE key IN ({})", result_keys)
        since: dict[str, float] = {}
        for it in steps:
            ts = it.timestamp
            if ts is not None:
                known = since.get(it.session_id)
                if known is None or ts < known:
                    since[it.session_id] = ts
        calls = _Calls(conn)
        calls.preload({it.session_id: since.get(it.session_id) for it in steps})
        new_results: list[tuple[str, float]] = []
        models_before = set(self._models)
        models = self._models
        for it in steps:  # new model names in the order the general path would see them
            if it.model not in models and rows.get(it.message_id) is None:
                self._label_model(it.model)
        bulk: set[int] = set()
        try:
            if self._bulk:
                bulk = self._apply_first_sight(
                    items,
                    source,
                    rows,
                    calls,
                    since,
                    now,
                    summary,
                    delta,
                    unique=len(step_ids) == len(steps),
                )
        except BaseException:
            self._models = models_before
            raise
        bulk_steps = summary.new_keys.get("steps", 0)
        plain: dict[_PlainKey, list[int]] = {}
        for index, item in enumerate(items):
            if index in bulk:
                continue
            if isinstance(item, StepRecord):
                changed = self._apply_step(item, rows, calls, since, now, delta, plain)
                if changed:
                    summary.accepted += 1
                    delta[(MESSAGES, (source, "accepted"))] += 1
                else:
                    summary.duplicates += 1
                    delta[(MESSAGES, (source, "duplicate"))] += 1
            elif isinstance(item, ResultRecord):
                if item.key in seen_results:
                    summary.duplicates += 1
                    delta[(MESSAGES, (source, "duplicate"))] += 1
                    continue
                seen_results.add(item.key)
                new_results.append((item.key, now))
                self._apply_result(item, calls, since, now, delta)
                summary.accepted += 1
                delta[(MESSAGES, (source, "accepted"))] += 1
            elif isinstance(item, CallStart):
                summary.ignored += 1
                delta[(MESSAGES, (source, "ignored"))] += 1
                if item.key not in seen_results:
                    seen_results.add(item.key)
                    new_results.append((item.key, now))
                    calls.start(item.session_id, since.get(item.session_id), now)
            elif isinstance(item, Ignored):
                summary.ignored += 1
                delta[(MESSAGES, (source, "ignored"))] += 1
            elif isinstance(item, Rejected):
                summary.rejected.append((index, item.reason))
                delta[(REJECTED, (source, item.reason))] += 1
        self._emit_plain(delta, plain)
        summary.new_keys = {
            "steps": bulk_steps + sum(1 for r in rows.values() if r is not None and r.new),
            "results": len(new_results),
            "calls": calls.created,
        }
        self._remember_ids(mid for mid, r in rows.items() if r is not None and r.new)
        try:
            calls.flush(now)
            written: list[tuple[Any, ...]] = [
                (
                    mid,
                    r.session_id,
                    r.call_seq,
                    r.model,
                    r.source,
                    r.mods,
                    *r.fields,
                    r.seen_at,
                    r.project,
                )
                # In key order: B-tree inserts then mostly append to the same pages.
                for mid, r in sorted(rows.items())
                if r is not None and r.dirty
            ]
            if self._staged is None:
                conn.executemany(
                    _INSERT_STEP + " ON CONFLICT (message_id) DO UPDATE SET mods = excluded.mods, "
                    "f0 = excluded.f0, f1 = excluded.f1, f2 = excluded.f2, "
                    "f3 = excluded.f3, f4 = excluded.f4, f5 = excluded.f5",
                    written,
                )
            else:  # no unique index to resolve the conflict: stored rows by rowid
                # New by what the lookup found, not by ``_staged``: an id noted there
                # for a batch that rolled back is new again.
                new = {mid for mid, r in rows.items() if r is not None and r.new}
                self._insert_staged([w for w in written if w[0] in new])
                staged = self._staged
                assert staged is not None
                conn.executemany(
                    "UPDATE steps SET mods = ?, f0 = ?, f1 = ?, f2 = ?, f3 = ?, f4 = ?, "
                    "f5 = ? WHERE rowid = ?",
                    [(*w[5:12], staged[w[0]]) for w in written if w[0] not in new],
                )
            conn.executemany("INSERT INTO results (key, seen_at) VALUES (?, ?)", new_results)
        except BaseException:
            self._models = models_before
            raise

    def _apply_first_sight(
        self,
        items: Sequence[Normalized],
        source: str,
        rows: Mapping[str, _StepRow | None],
        calls: _Calls,
        since: Mapping[str, float],
        now: float,
        summary: ApplySummary,
        delta: defaultdict[CounterKey, int],
        *,
        unique: bool = False,
    ) -> set[int]:
        """Count in bulk the steps that are plain additions; return their indexes.

        ``unique``: the caller knows that no message id occurs twice among ``items``.

        A step qualifies when its message id is new (not stored, once in the batch) and its
        session has no result or call start in the batch and only an open call, whose
        models have no result: the shape of nearly every step of a transcript scan. The
        general path then comes down to adding the step to that open call (created when
        missing) with increments equal to the step itself (``_apply_step`` via
        ``add_plain_steps``). Additions commute, so doing them as sums per session and
        per price group gives the same state: 0.1 s instead of 0.4 s for 30k steps.
        Steps that do not qualify take the general path, in order, after these.
        """
        excluded: set[str] = set()
        seen_ids: dict[str, int] = {}
        for item in items:
            if type(item) is StepRecord:
                if not unique:
                    seen_ids[item.message_id] = seen_ids.get(item.message_id, 0) + 1
            elif type(item) is ResultRecord or type(item) is CallStart:
                excluded.add(item.session_id)
        plain_sessions: dict[str, bool] = {}
        taken: list[int] = []
        steps: list[StepRecord] = []
        for index, item in enumerate(items):
            if type(item) is not StepRecord or (not unique and seen_ids[item.message_id] != 1):
                continue
            if rows.get(item.message_id) is not None:
                continue
            session = item.session_id
            eligible = plain_sessions.get(session)
            if eligible is None:
                eligible = plain_sessions[session] = (
                    session not in excluded and calls.only_plain_open_call(session)
                )
            if eligible:
                taken.append(index)
                steps.append(item)
        if not steps:
            return set()
        # Values are collected per group and summed column-wise at the end (``sum`` over
        # ``zip``, in C): half the time of adding them up field by field in the loop.
        labels: dict[str, str] = {}
        # One group per session and price group: both the calls' model states and the
        # counters are sums over these (far fewer than steps).
        collected: dict[tuple[str, str, str, str, int, bool], list[tuple[int, ...]]] = {}
        seqs: dict[str, int] = {}
        inserts = []
        eligible_model = self._prices.long_context_eligible
        threshold = self._prices.long_context_threshold_tokens
        for step in steps:
            session = step.session_id
            seq = seqs.get(session)
            if seq is None:
                call = calls.open_call(session, since.get(session))
                call.dirty = True
                seq = seqs[session] = call.seq
            model = labels.get(step.model)
            if model is None:
                model = labels[step.model] = self._label_model(step.model)
            mods = (
                (_BATCH if step.batch else 0)
                | (_GEO_US if step.geo_us else 0)
                | (_FAST if step.fast else 0)
                if step.batch or step.geo_us or step.fast
                else 0
            )
            inp, read, c5m, c1h = step.input, step.cache_read, step.cache_5m, step.cache_1h
            values = (inp, step.output, read, c5m, c1h, step.web_search)
            long_context = inp + read + c5m + c1h > threshold and eligible_model(model)
            key = (session, model, step.source, step.project, mods, long_context)
            group = collected.get(key)
            if group is None:
                collected[key] = [values]
            else:
                group.append(values)
            inserts.append(
                (
                    step.message_id,
                    session,
                    seq,
                    model,
                    step.source,
                    mods,
                    *values,
                    now,
                    step.project,
                )
            )
        per_call: dict[tuple[str, str], list[int]] = {}
        sums: dict[_PlainKey, list[int]] = {}
        for (session, model, step_source, project, mods, long_context), group in collected.items():
            total = [sum(column) for column in zip(*group, strict=True)]
            _add_into(per_call, (session, model), total)
            _add_into(sums, (model, step_source, project, mods, long_context), total)
            delta[(STEPS, (model, step_source))] += len(group)
        for (session, model), total in per_call.items():
            call = calls.get(session, seqs[session])
            state = call.models.get(model)
            if state is None:
                state = call.models[model] = ModelState()
            added = state.add_plain_steps(total)
            assert added, "only calls without a result qualify"
        summary.accepted += len(steps)
        delta[(MESSAGES, (source, "accepted"))] += len(steps)
        self._emit_plain(delta, sums)
        self._remember_ids(step.message_id for step in steps)
        if self._staged is None:
            inserts.sort()  # in key order: index inserts then mostly touch the same pages
            self._conn.executemany(_INSERT_STEP, inserts)
        else:
            self._insert_staged(inserts)
        summary.new_keys["steps"] = len(steps)
        return set(taken)

    def _empty_steps_table(self, read_only: bool) -> set[str] | None:
        """An empty set when this ledger has no step yet (see ``_remember_ids``), else None."""
        if read_only:
            return None
        return (
            set() if self._conn.execute("SELECT 1 FROM steps LIMIT 1").fetchone() is None else None
        )

    def _remember_ids(self, ids: Iterable[str]) -> None:
        """Note message ids about to be stored, while every stored id is known here.

        A ledger that started empty (a first start, whose cold scan brings tens of
        thousands of new ids) then looks up only ids it stored itself: the others cannot
        be in the table. That saves an index probe per step (0.05 s of 30k steps). Noted
        before the commit, so the set is never smaller than the table; past
        ``_MAX_REMEMBERED`` ids it is dropped and every id is looked up again.
        """
        known = self._stored_ids
        if known is not None:
            known.update(ids)
            if len(known) > _MAX_REMEMBERED:
                self._stored_ids = None

    def _load_steps(self, ids: Iterable[str]) -> dict[str, _StepRow | None]:
        found: dict[str, _StepRow | None] = {}
        known, staged = self._stored_ids, self._staged
        keys: list[object]
        if staged is not None:  # no index on message_id: by rowid
            column, keys = "rowid", [staged[i] for i in ids if i in staged]
        else:
            column = "message_id"
            keys = list(ids) if known is None else [i for i in ids if i in known]
        for start in range(0, len(keys), _SQL_CHUNK):
            chunk = keys[start : start + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            for row in self._conn.execute(
                f"SELECT {_STEP_COLUMNS} FROM steps WHERE {column} IN ({marks})",
                chunk,
            ):
                found[row[0]] = _StepRow(
                    row[1],
                    row[2],
                    row[3],
                    row[4],
                    row[5],
                    list(row[6:12]),
                    row[12],
                    project=row[13],
                )
        return found

    def _existing(self, sql: str, keys: set[str]) -> set[str]:
        out: set[str] = set()
        key_list = list(keys)
        for start in range(0, len(key_list), _SQL_CHUNK):
            chunk = key_list[start : start + _SQL_CHUNK]
            query = sql.format(",".join("?" * len(chunk)))
            out.update(row[0] for row in self._conn.execute(query, chunk))
        return out

    def _apply_step(
        self,
        step: StepRecord,
        rows: dict[str, _StepRow | None],
        calls: _Calls,
        since: Mapping[str, float],
        now: float,
        delta: defaultdict[CounterKey, int],
        plain: dict[_PlainKey, list[int]],
    ) -> bool:
        mods = (
            (_BATCH if step.batch else 0)
            | (_GEO_US if step.geo_us else 0)
            | (_FAST if step.fast else 0)
        )
        values = step.fields()
        row = rows.get(step.message_id)
        if row is None:
            model = self._label_model(step.model)
            call = calls.for_step(step.session_id, step.timestamp, since.get(step.session_id))
            row = _StepRow(
                step.session_id,
                call.seq,
                model,
                step.source,
                mods,
                list(values),
                now,
                dirty=True,
                new=True,
                project=step.project,
            )
            rows[step.message_id] = row
            deltas = list(values)
            delta[(STEPS, (model, step.source))] += 1
        else:
            merged = [max(a, b) for a, b in zip(row.fields, values, strict=True)]
            deltas = [m - o for m, o in zip(merged, row.fields, strict=True)]
            if not any(deltas) and (row.mods | mods) == row.mods:
                return False
            row.fields = merged
            row.mods |= mods
            row.dirty = True
            call = calls.get(row.session_id, row.call_seq)
            if not any(deltas):
                return True
        state = call.models.get(row.model)
        if state is None:
            state = call.models[row.model] = ModelState()
        call.dirty = True
        if state.add_plain_steps(deltas):
            # No result in this call: the increments are the deltas themselves. They are
            # summed per model, labels and price modifiers and emitted once per batch
            # (prices are integer picodollars per token, so pricing a sum is exact): on a
            # cold scan of 30k steps this turns 0.4 s of per-step emission into 0.05 s.
            key = (row.model, row.source, row.project, row.mods, self._long_context(row))
            _add_into(plain, key, deltas)
            return True
        increments = state.add_steps(deltas)
        self._emit(delta, row.model, row.source, increments, self._step_modifiers(row), row.project)
        return True

    def _emit_plain(
        self, delta: defaultdict[CounterKey, int], plain: dict[_PlainKey, list[int]]
    ) -> None:
        """Emit the summed increments of steps in calls without a result (``_apply_step``)."""
        for (model, source, project, mods, long_context), sums in plain.items():
            modifiers = Modifiers(
                batch=bool(mods & _BATCH),
                geo_us=bool(mods & _GEO_US),
                fast=bool(mods & _FAST),
                long_context=long_context,
            )
            self._emit(delta, model, source, sums, modifiers, project)
        plain.clear()

    def _long_context(self, row: _StepRow) -> bool:
        f = row.fields
        input_side = f[0] + f[2] + f[3] + f[4]
        return input_side > self._prices.long_context_threshold_tokens and (
            self._prices.long_context_eligible(row.model)
        )

    def _apply_result(
        self,
        result: ResultRecord,
        calls: _Calls,
        since: Mapping[str, float],
        now: float,
        delta: defaultdict[CounterKey, int],
    ) -> None:
        delta[(CONVERSATIONS, (result.outcome,))] += 1
        reported = [(m, t.cost_pico) for m, t in result.models.items() if t.cost_pico]
        if reported:
            for model, pico in reported:
                delta[(COST, (self._label_model(model), "reported", ""))] += pico or 0
        elif result.total_cost_pico:
            delta[(COST, (UNKNOWN_MODEL, "reported", ""))] += result.total_cost_pico
        call = calls.open_call(result.session_id, since.get(result.session_id))
        call.closed_at = result.timestamp if result.timestamp is not None else now
        call.dirty = True
        for raw_model, totals in result.models.items():
            model = self._label_model(raw_model)
            state = call.models.get(model)
            if state is None:
                state = call.models[model] = ModelState()
            increments = state.raise_result(totals.fields())
            self._emit(delta, model, result.source, increments, Modifiers())

    def _step_modifiers(self, row: _StepRow) -> Modifiers:
        return Modifiers(
            batch=bool(row.mods & _BATCH),
            geo_us=bool(row.mods & _GEO_US),
            fast=bool(row.mods & _FAST),
            long_context=self._long_context(row),
        )

    def _rate(self, model: str, index: int, mods: Modifiers) -> int | None:
        bits = (
            (_BATCH if mods.batch else 0)
            | (_GEO_US if mods.geo_us else 0)
            | (_FAST if mods.fast else 0)
            | (8 if mods.long_context else 0)
        )
        key = (model, index, bits)
        if key not in self._rates:
            if index == FIELD_COUNT - 1:  # web searches cost the same on every model
                self._rates[key] = self._prices.web_search_picousd_per_request()
            else:
                self._rates[key] = self._prices.picousd_per_token(model, TOKEN_TYPES[index], mods)
        return self._rates[key]

    def _emit(
        self,
        delta: defaultdict[CounterKey, int],
        model: str,
        source: str,
        increments: list[int],
        mods: Modifiers,
        project: str = "",
    ) -> None:
        for index, amount in enumerate(increments):
            if not amount:
                continue
            if index < len(TOKEN_TYPES):
                delta[(TOKENS, (model, TOKEN_TYPES[index], source, project))] += amount
            else:
                delta[(WEB_SEARCH, (model, source))] += amount
            rate = self._rate(model, index, mods)
            if rate is None:
                if index < len(TOKEN_TYPES):
                    delta[(UNPRICED, (model,))] += amount
            else:
                delta[(COST, (model, "estimated", project))] += amount * rate


_K = TypeVar("_K")


def _add_into(target: dict[_K, list[int]], key: _K, values: Sequence[int]) -> None:
    """``target[key] += values`` field by field (a copy of ``values`` when new)."""
    known = target.get(key)
    if known is None:
        target[key] = list(values)
    else:
        for i, v in enumerate(values):
            known[i] += v


def _twin(family: str) -> str:
    """The other member of a family group: ``x`` <-> ``x:revised_down``."""
    base = family.removesuffix(REVISED_DOWN)
    return base + REVISED_DOWN if family == base else base


def _fold(group: str, labels: tuple[str, ...], *, everything: bool) -> tuple[str, ...]:
    """``labels`` with every unbounded value (or, with ``everything``, every value) folded.

    Empty values stay empty (a dimension that is not grouped carries no cardinality); labels
    of an unknown family all fold.
    """
    names = LABEL_NAMES.get(group)
    if everything or names is None or len(names) != len(labels):
        return tuple(FOLDED if value else value for value in labels)
    return tuple(
        value if not value or name in BOUNDED_LABELS else FOLDED
        for name, value in zip(names, labels, strict=True)
    )
