"""Every counter family the ledger keeps, named once for both Prometheus and OpenTelemetry.

OTel names are dotted and unit-free, with curly-brace annotation units, so that an
OpenTelemetry Collector's Prometheus exporter produces exactly the Prometheus names served on
``/metrics`` (dots become underscores, ``{...}`` units add no suffix, monotonic sums get
``_total``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from otel_claude import ledger


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

    def value(self, raw: int) -> int | float:
        """Convert a ledger integer to the exposed number (exact decimal for cost)."""
        if self.divisor == 1:
            return raw
        return float(Decimal(raw) / self.divisor)


FAMILIES: tuple[Family, ...] = (
    Family(
        ledger.TOKENS,
        "claude_agent_tokens",
        "claude.agent.tokens",
        "{token}",
        "Tokens used by Claude agents, counted once per API message (client-side messages).",
        ("model", "token_type", "source"),
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
)

BY_KEY = {family.key: family for family in FAMILIES}
