"""Replay a recorded ``claude -p --output-format stream-json --verbose`` run offline.

Shows what the Python API counts without calling any model::

    python examples/replay_stream.py examples/sample-stream.ndjson
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

from opentelemetry.sdk.metrics import MeterProvider

import otel_claude
from otel_claude.ledger import COST, TOKENS


def main(path: str) -> None:
    tracker = otel_claude.UsageTracker(MeterProvider())
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                tracker.observe(json.loads(line))
    tokens: defaultdict[str, dict[str, int]] = defaultdict(dict)
    cost: dict[str, float] = {}
    for (family, labels), value in sorted(tracker.totals().items()):
        if family == TOKENS:
            model, token_type = labels[0], labels[1]
            tokens[model][token_type] = value
        elif family == COST:
            model, cost_source = labels[0], labels[1]
            cost[f"{model} ({cost_source})"] = value / 1e12
    print(json.dumps({"tokens": tokens, "cost_usd": cost}, indent=2, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "examples/sample-stream.ndjson")
