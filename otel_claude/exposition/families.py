"""Every counter family the ledger keeps, named once for both Prometheus and OpenTelemetry.

OTel names are dotted and unit-free, with curly-brace annotation units, so that an
OpenTelemetry Collector's Prometheus exporter produces exactly the Prometheus names served on
``/metrics`` (dots become underscores, ``{...}`` units add no suffix, monotonic sums get
``_total``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from otel_claude import ledger
from otel_claude.admin import claude_code, cost, usage
from otel_claude.ledger import REVISED_DOWN, CounterKey


@dataclass(frozen=True)
class Family:
    """A ledger counter family and how it is rendered."""

    key: str
    name: str  # Prometheus name without the ``_total`` suffix
    otel_name: str
    unit: str
    help: str
    labels: tuple[str, ...]
    divisor: int = 1  # ledger integer per exposed unit (cost: 10**12 picodollars per USD)
    #: Positions of the stored labels that are exposed (None: all). Series that differ only
    #: in hidden labels are summed, e.g. usage dims not in ``group_by``, a dropped actor.
    select: tuple[int, ...] | None = None
    #: Rewrites exposed label values (after ``select``), e.g. ledger keys into metric names.
    relabel: Callable[[tuple[str, ...]], tuple[str, ...]] | None = None

    def value(self, raw: int) -> int | float:
        """Convert a ledger integer to the exposed number (exact decimal for cost)."""
        if self.divisor == 1:
            return raw
        return float(Decimal(raw) / self.divisor)


def family_series(family: Family, snapshot: Mapping[CounterKey, int]) -> dict[tuple[str, ...], int]:
    """The exposed series of ``family``: stored labels projected by ``select`` and summed."""
    out: dict[tuple[str, ...], int] = {}
    select = family.select
    for (key, labels), value in snapshot.items():
        if key != family.key:
            continue
        shown = labels if select is None else tuple(labels[i] for i in select)
        if family.relabel is not None:
            shown = family.relabel(shown)
        out[shown] = out.get(shown, 0) + value
    return out


def _metric_names(labels: tuple[str, ...]) -> tuple[str, ...]:
    """``series_folded{family}``: the ledger family key as the Prometheus counter name."""
    return tuple(_EXPOSED_NAMES.get(key, key) for key in labels)


FAMILIES: tuple[Family, ...] = (
    Family(
        ledger.TOKENS,
        "claude_agent_tokens",
        "claude.agent.tokens",
        "{token}",
        "Tokens used by Claude agents, counted once per API message (client-side messages).",
        ("model", "token_type", "source"),
        select=(0, 1, 2),
    ),
    Family(
        ledger.COST,
        "claude_agent_cost_usd",
        "claude.agent.cost.usd",
        "{USD}",
        "Cost of Claude agent usage in USD: estimated from the price table or reported by "
        "result messages (client-side estimates, not billing data).",
        ("model", "cost_source"),
        divisor=10**12,
        select=(0, 1),
    ),
    Family(
        ledger.WEB_SEARCH,
        "claude_agent_web_search_requests",
        "claude.agent.web_search.requests",
        "{request}",
        "Server-side web search requests made by Claude agents.",
        ("model", "source"),
    ),
    Family(
        ledger.STEPS,
        "claude_agent_steps",
        "claude.agent.steps",
        "{step}",
        "Distinct API responses (message ids) seen from Claude agents.",
        ("model", "source"),
    ),
    Family(
        ledger.CONVERSATIONS,
        "claude_agent_conversations",
        "claude.agent.conversations",
        "{conversation}",
        "Finished agent calls (result messages), by result subtype.",
        ("outcome",),
    ),
    Family(
        ledger.UNPRICED,
        "claude_agent_unpriced_tokens",
        "claude.agent.unpriced_tokens",
        "{token}",
        "Tokens of models missing from the price table; no cost is estimated for them.",
        ("model",),
    ),
    Family(
        ledger.MESSAGES,
        "otel_claude_ingest_messages",
        "otel_claude.ingest.messages",
        "{message}",
        "Client-side messages taken in, by outcome (accepted, duplicate, ignored).",
        ("source", "outcome"),
    ),
    Family(
        ledger.REJECTED,
        "otel_claude_ingest_rejected",
        "otel_claude.ingest.rejected",
        "{message}",
        "Client-side messages rejected as unusable, by reason.",
        ("source", "reason"),
    ),
    Family(
        ledger.PRUNED,
        "otel_claude_ledger_keys_pruned",
        "otel_claude.ledger.keys_pruned",
        "{key}",
        "Deduplication keys dropped after the dedup horizon, by kind.",
        ("kind",),
    ),
    Family(
        ledger.SERIES_FOLDED,
        "otel_claude_series_folded",
        "otel_claude.series_folded",
        "{update}",
        "Counter updates whose new label set was folded (unbounded label values such as "
        "model, project, API key or actor set to 'other') because the counter already had "
        "max_series_per_family label sets; the value still counts in the counter's total.",
        ("family",),
        relabel=_metric_names,
    ),
)


def admin_families(group_by: Sequence[str], actor_mode: str) -> tuple[Family, ...]:
    """Families of the Admin API sources; their labels depend on configuration.

    Usage labels are ``token_type`` plus the configured ``group_by`` dimensions; each
    upstream counter has a ``*_revised_down`` twin with the same labels that counts downward
    revisions (so ``x_total - x_revised_down_total`` is the latest upstream value).
    """
    dims = [d for d in usage.DIMENSIONS if d in group_by]
    dim_index = tuple(usage.DIMENSIONS.index(d) for d in dims)
    actor = actor_mode != "drop"

    def without_actor(labels: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[int, ...] | None]:
        if actor:
            return labels, None
        return labels[1:], tuple(range(1, len(labels)))

    def counter(
        key: str,
        name: str,
        otel: str,
        unit: str,
        text: str,
        labels: tuple[str, ...],
        select: tuple[int, ...] | None,
        divisor: int = 1,
    ) -> list[Family]:
        shown = labels
        return [
            Family(key, name, otel, unit, text, shown, divisor, select),
            Family(
                key + REVISED_DOWN,
                _revised(name),
                otel + ".revised_down",
                unit,
                "Downward revisions of " + name + "_total by the API (never subtracted from it).",
                shown,
                divisor,
                select,
            ),
        ]

    families: list[Family] = []
    families += counter(
        usage.API_TOKENS,
        "anthropic_api_tokens",
        "anthropic.api.tokens",
        "{token}",
        "Tokens billed to the organization, from the Admin API usage report "
        "(refreshed every poll).",
        ("token_type", *dims),
        (0, *(i + 1 for i in dim_index)),
    )
    families += counter(
        usage.API_WEB_SEARCH,
        "anthropic_api_web_search_requests",
        "anthropic.api.web_search.requests",
        "{request}",
        "Server-side web searches, from the Admin API usage report.",
        tuple(dims),
        dim_index,
    )
    families += counter(
        cost.API_COST,
        "anthropic_api_cost_usd",
        "anthropic.api.cost.usd",
        "{USD}",
        "Billed cost in USD from the Admin API cost report (daily buckets, refreshed every poll).",
        cost.LABELS,
        None,
        divisor=10**12,
    )
    cc_specs: list[tuple[str, str, str, str, str, tuple[str, ...], int]] = [
        (
            claude_code.SESSIONS,
            "anthropic_claude_code_sessions",
            "sessions",
            "{session}",
            "Claude Code sessions, from the Claude Code analytics API.",
            ("actor",),
            1,
        ),
        (
            claude_code.LINES,
            "anthropic_claude_code_lines",
            "lines",
            "{line}",
            "Lines of code added / removed by Claude Code.",
            ("actor", "type"),
            1,
        ),
        (
            claude_code.COMMITS,
            "anthropic_claude_code_commits",
            "commits",
            "{commit}",
            "Git commits created by Claude Code.",
            ("actor",),
            1,
        ),
        (
            claude_code.PULL_REQUESTS,
            "anthropic_claude_code_pull_requests",
            "pull_requests",
            "{pull_request}",
            "Pull requests created by Claude Code.",
            ("actor",),
            1,
        ),
        (
            claude_code.TOOL_DECISIONS,
            "anthropic_claude_code_tool_decisions",
            "tool_decisions",
            "{decision}",
            "Edit tool proposals accepted or rejected by the user.",
            ("actor", "tool", "decision"),
            1,
        ),
        (
            claude_code.TOKENS,
            "anthropic_claude_code_tokens",
            "tokens",
            "{token}",
            "Tokens used by Claude Code, per model and type.",
            ("actor", "model", "token_type"),
            1,
        ),
        (
            claude_code.COST,
            "anthropic_claude_code_estimated_cost_usd",
            "estimated_cost.usd",
            "{USD}",
            "Estimated Claude Code cost in USD, per model (from integer cents).",
            ("actor", "model"),
            10**12,
        ),
    ]
    for key, name, otel, unit, text, labels, divisor in cc_specs:
        shown, select = without_actor(labels)
        families += counter(
            key, name, "anthropic.claude_code." + otel, unit, text, shown, select, divisor
        )
    return tuple(families)


def _revised(name: str) -> str:
    """``anthropic_api_cost_usd`` → ``anthropic_api_cost_revised_down_usd`` (unit stays last)."""
    if name.endswith("_usd"):
        return name[: -len("_usd")] + "_revised_down_usd"
    return name + "_revised_down"


def core_families(project_label: bool) -> tuple[Family, ...]:
    """The client-side families; with ``project_label`` tokens and cost carry ``project``."""
    if not project_label:
        return FAMILIES
    out = []
    for family in FAMILIES:
        if family.key in (ledger.TOKENS, ledger.COST):
            family = replace(family, labels=(*family.labels, "project"), select=None)
        out.append(family)
    return tuple(out)


BY_KEY = {family.key: family for family in FAMILIES}

#: Ledger family key -> Prometheus counter name (names never depend on configuration).
_EXPOSED_NAMES = {
    family.key: family.name + "_total"
    for family in (*FAMILIES, *admin_families(usage.DIMENSIONS, "hash"))
}
