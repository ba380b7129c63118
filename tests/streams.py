"""Generate realistic stream-json traffic together with its ground truth.

The expected totals are computed here from the generator's own parameters, with a price
table written out by hand below, never by calling the code under test.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

# USD per million tokens, copied by hand from the pricing page (input, output, 5m, 1h, read).
PRICES = {
    "claude-sonnet-4-5": (Decimal(3), Decimal(15), Decimal("3.75"), Decimal(6), Decimal("0.3")),
    "claude-haiku-4-5": (Decimal(1), Decimal(5), Decimal("1.25"), Decimal(2), Decimal("0.1")),
}
TYPES = ("input", "output", "cache_creation_5m", "cache_creation_1h", "cache_read")
SEARCH_USD = Decimal("0.01")

# How each model is spelled by the sources (steps vs. modelUsage keys).
STEP_IDS = {
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5": "claude-haiku-4-5-20251001",
}
RESULT_IDS = {
    "claude-sonnet-4-5": [
        "claude-sonnet-4-5-20250929",
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    ],
    "claude-haiku-4-5": ["claude-haiku-4-5-20251001", "claude-haiku-4-5@20251001"],
}

GARBAGE: list[tuple[bytes, str]] = [
    (b"this is not json", "invalid_json"),
    (b'{"type":"assistant","message":{"id":"msg_torn","model":"claude-sonn', "invalid_json"),
    (b"[1, 2, 3]", "not_an_object"),
    (b'"just a string"', "not_an_object"),
    (b'{"type": 5}', "missing_type"),
    (
        b'{"type":"assistant","message":{"id":"msg_nousage","model":"claude-haiku-4-5"}}',
        "missing_usage",
    ),
    (
        b'{"type":"assistant","message":{"model":"claude-haiku-4-5","usage":'
        b'{"input_tokens":1,"output_tokens":1}}}',
        "missing_message_id",
    ),
    (
        b'{"type":"assistant","message":{"id":"msg_neg","model":"claude-haiku-4-5","usage":'
        b'{"input_tokens":-5,"output_tokens":1}}}',
        "invalid_usage",
    ),
    (
        b'{"type":"result","subtype":"success","uuid":"r-nosession","modelUsage":{}}',
        "missing_session_id",
    ),
    (b'{"type":"assistant","message":{"id":"msg_bad\xff\xfe","model":"x"}}', "invalid_utf8"),
]


@dataclass
class Truth:
    """Expected counter totals for a generated stream (posted once or many times)."""

    tokens: Counter[tuple[str, str]] = field(default_factory=Counter)
    web_search: Counter[str] = field(default_factory=Counter)
    steps: Counter[str] = field(default_factory=Counter)
    reported_pico: Counter[str] = field(default_factory=Counter)
    conversations: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    usage_lines: int = 0  # assistant + result lines (accepted on first post)
    ignored_lines: int = 0

    def estimated_pico(self) -> dict[str, int]:
        """Expected estimated cost per model in picodollars, from the hand-written prices."""
        out: dict[str, int] = {}
        for model, rates in PRICES.items():
            usd = (
                sum(
                    (
                        Decimal(self.tokens[(model, t)]) * rate / Decimal(10**6)
                        for t, rate in zip(TYPES, rates, strict=True)
                    ),
                    Decimal(0),
                )
                + SEARCH_USD * self.web_search[model]
            )
            if usd:
                out[model] = int(usd * 10**12)
        return out


def _usage(inp: int, out: int, read: int, c5: int, c1: int, web: int) -> dict[str, object]:
    usage: dict[str, object] = {
        "input_tokens": inp,
        "output_tokens": out,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": c5 + c1,
        "cache_creation": {"ephemeral_5m_input_tokens": c5, "ephemeral_1h_input_tokens": c1},
        "service_tier": "standard",
    }
    if web:
        usage["server_tool_use"] = {"web_search_requests": web, "web_fetch_requests": 0}
    return usage


def generate(seed: int = 7, sessions: int = 12, garbage: bool = True) -> tuple[list[bytes], Truth]:
    """Return NDJSON lines of ``sessions`` sessions and the totals they must produce."""
    rng = random.Random(seed)
    lines: list[bytes] = []
    truth = Truth()
    msg_counter = 0

    def emit(doc: dict[str, object]) -> None:
        lines.append(json.dumps(doc, separators=(",", ":")).encode())

    for s in range(sessions):
        session = f"sess-{seed}-{s}"
        for c in range(rng.randint(1, 3)):
            # Every query() / `claude -p` run starts with an init line (a resumed session
            # after a crash too): it separates a cut-off call from the next one.
            emit(
                {
                    "type": "system",
                    "subtype": "init",
                    "session_id": session,
                    "model": "x",
                    "uuid": f"init-{session}-{c}",
                    "cwd": "/work",
                    "tools": ["Task"],
                }
            )
            truth.ignored_lines += 1
            emit(
                {
                    "type": "user",
                    "session_id": session,
                    "message": {"role": "user", "content": f"task {c}"},
                }
            )
            truth.ignored_lines += 1
            sums: dict[str, list[int]] = {}
            for _ in range(rng.randint(1, 5)):
                model = "claude-haiku-4-5" if rng.random() < 0.3 else "claude-sonnet-4-5"
                msg_counter += 1
                mid = f"msg_{seed}_{msg_counter:06d}"
                inp = rng.randint(1, 4000)
                read = rng.randint(0, 150_000)
                c1 = rng.randint(0, 9000) if rng.random() < 0.3 else 0
                c5 = rng.randint(0, 12_000)
                web = rng.randint(1, 3) if rng.random() < 0.1 else 0
                final_out = rng.randint(5, 3000)
                parts = rng.randint(1, 3)
                outs = sorted({max(1, final_out * (i + 1) // parts) for i in range(parts)})
                outs[-1] = final_out
                for out in outs:  # content blocks: same id, growing output_tokens
                    emit(
                        {
                            "type": "assistant",
                            "session_id": session,
                            "uuid": f"u-{mid}-{out}",
                            "parent_tool_use_id": "toolu_x"
                            if model.startswith("claude-haiku")
                            else None,
                            "message": {
                                "id": mid,
                                "type": "message",
                                "role": "assistant",
                                "model": STEP_IDS[model],
                                "content": [],
                                "usage": _usage(inp, out, read, c5, c1, web),
                            },
                        }
                    )
                    truth.usage_lines += 1
                acc = sums.setdefault(model, [0] * 6)
                for i, v in enumerate((inp, final_out, read, c5, c1, web)):
                    acc[i] += v
                truth.steps[model] += 1
            if rng.random() < 0.15:  # cut off: no result, steps count as they are
                for model, (inp, out, read, c5, c1, web) in sums.items():
                    _add(truth, model, inp, out, read, c5, c1, web)
                continue
            # Result: cumulative per model, plus subagent usage never seen as steps.
            model_usage: dict[str, object] = {}
            totals: dict[str, list[int]] = {m: list(v) for m, v in sums.items()}
            if rng.random() < 0.5:
                hidden = totals.setdefault("claude-haiku-4-5", [0] * 6)
                for i, top in ((0, 500), (1, 900), (2, 20_000), (3, 3000)):
                    hidden[i] += rng.randint(1, top)
            cost_total = Decimal(0)
            for model, (inp, out, read, c5, c1, web) in totals.items():
                cost = Decimal(rng.randint(1, 9_999_999)) / Decimal(10**7)
                cost_total += cost
                key = rng.choice(RESULT_IDS[model])
                model_usage[key] = {
                    "inputTokens": inp,
                    "outputTokens": out,
                    "cacheReadInputTokens": read,
                    "cacheCreationInputTokens": c5 + c1,
                    "webSearchRequests": web,
                    "costUSD": float(cost),
                    "contextWindow": 200000,
                    "maxOutputTokens": 64000,
                }
                truth.reported_pico[model] += int(cost * 10**12)
                step_1h = sums.get(model, [0] * 6)[4]
                _add(truth, model, inp, out, read, c5 + c1 - step_1h, step_1h, web)
            subtype = rng.choice(["success"] * 6 + ["error_max_turns", "error_during_execution"])
            emit(
                {
                    "type": "result",
                    "subtype": subtype,
                    "is_error": subtype != "success",
                    "session_id": session,
                    "uuid": f"res-{session}-{c}",
                    "num_turns": 3,
                    "duration_ms": 1000,
                    "total_cost_usd": float(cost_total),
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                    "modelUsage": model_usage,
                }
            )
            truth.usage_lines += 1
            truth.conversations[subtype] += 1
        if garbage and s % 3 == 0:
            raw, reason = GARBAGE[(s // 3) % len(GARBAGE)]
            lines.append(raw)
            truth.rejected[reason] += 1
    return lines, truth


def _add(
    truth: Truth, model: str, inp: int, out: int, read: int, c5: int, c1: int, web: int
) -> None:
    for t, v in zip(TYPES, (inp, out, c5, c1, read), strict=True):
        truth.tokens[(model, t)] += v
    truth.web_search[model] += web
