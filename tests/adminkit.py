"""Shared pieces of the Admin API tests: a controllable clock and an independent mapping of
the API's values (nulls, dated model ids, token fields) to the exporter's label values."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from otel_claude.simulator import Simulator

GROUP_BY = ("model", "workspace_id", "service_tier", "context_window")
NULLS = {
    "workspace_id": "default",
    "api_key_id": "console",
    "service_tier": "unknown",
    "context_window": "unknown",
    "inference_geo": "unknown",
}
MODELS = {
    "claude-opus-4-6": "claude-opus-4-6",
    "claude-sonnet-4-5-20250929": "claude-sonnet-4-5",
    "claude-haiku-4-5-20251001": "claude-haiku-4-5",
    "claude-sonnet-4-20250514": "claude-sonnet-4",
}
TOKEN_FIELDS = {
    "uncached_input_tokens": "input",
    "output_tokens": "output",
    "cache_read_input_tokens": "cache_read",
    "cache_creation_5m": "cache_creation_5m",
    "cache_creation_1h": "cache_creation_1h",
}


class Clock:
    """A fake clock shared by the simulator and the exporter (epoch seconds)."""

    def __init__(self, t: datetime) -> None:
        self.t = t.timestamp()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def usage_expected(
    sim: Simulator, since: datetime, end: datetime, at: float
) -> Counter[tuple[str, ...]]:
    """What the usage report serves at ``at`` for ``[since, end)``, as our label tuples
    ``(token_type, *GROUP_BY labels)``."""
    out: Counter[tuple[str, ...]] = Counter()
    for key, fields in sim.usage_truth(since, end, GROUP_BY, at=at).items():
        labels = []
        for dim, value in zip(GROUP_BY, key, strict=True):
            if dim == "model":
                labels.append(MODELS[str(value)])
            else:
                labels.append(NULLS[dim] if value is None else str(value))
        for name, token_type in TOKEN_FIELDS.items():
            if fields[name]:
                out[(token_type, *labels)] += fields[name]
    return +out
