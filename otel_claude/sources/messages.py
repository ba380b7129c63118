"""Normalize Agent SDK messages, in object or JSON form, into ledger records.

Accepted forms, all mapped to the same ``StepRecord``/``ResultRecord``:

* ``claude_agent_sdk`` objects (``AssistantMessage``, ``ResultMessage``; other message classes
  are valid but carry no usage), recognised by class name so the SDK stays an optional import;
* their JSON forms: ``claude -p --output-format stream-json`` lines and TypeScript SDK
  messages (``{"type": "assistant", "message": {...}}`` / ``{"type": "result", ...}``), plus the
  camelCase keys of Claude Code transcript lines (``sessionId``, ``isApiErrorMessage``).

Anything that cannot be counted without guessing (no ``message.id``, no usage, a negative,
fractional or out-of-range token count) becomes ``Rejected`` with one of ``REJECT_REASONS``.
Lines read from the wire are also bounded before and after decoding (``Limits``): an
over-long line is rejected without being decoded, and one nested deeper than allowed is
rejected before any field of it is used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from otel_claude.pricing import normalize_model_id
from otel_claude.records import (
    CallStart,
    Ignored,
    ModelTotals,
    Normalized,
    Rejected,
    ResultRecord,
    StepRecord,
)

SYNTHETIC_MODEL = "<synthetic>"
MAX_ID_LENGTH = 256
MAX_MODEL_LENGTH = 128
#: The largest count kept: the ledger stores counts as SQLite INTEGER (signed 64-bit).
MAX_COUNT = (1 << 63) - 1
#: The largest cost kept, in USD: ``MAX_COUNT`` picodollars (about 9.2 million USD).
MAX_COST_USD = Decimal(MAX_COUNT) / Decimal(10) ** 12
#: A cost given as a string longer than this is not read as a number.
_MAX_NUMBER_TEXT = 64

DEFAULT_MAX_LINE_BYTES = 4 << 20
DEFAULT_MAX_JSON_DEPTH = 64
#: Nesting the JSON parser itself refuses beyond (orjson), whatever the limits say.
PARSER_MAX_DEPTH = 1024
DEFAULT_MAX_BATCH_MESSAGES = 100_000

#: Every ``Rejected.reason`` this package produces: the values of the ``reason`` label.
REJECT_REASONS: tuple[str, ...] = (
    "invalid_json",
    "invalid_utf8",
    "not_an_object",
    "line_too_long",
    "too_deep",
    "missing_type",
    "invalid_message",
    "missing_model",
    "missing_message_id",
    "missing_usage",
    "invalid_usage",
    "missing_session_id",
    "invalid_field",
    "invalid_cost",
)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on untrusted input (``[ingest]`` settings); the defaults suit real traffic.

    ``max_line_bytes``: longest line (surrounding whitespace aside), checked before decoding.
    ``max_json_depth``: deepest nesting of one message (an object is depth 1); orjson itself
    refuses anything deeper than 1024. ``max_batch_messages``: most messages in one body.
    """

    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    max_batch_messages: int = DEFAULT_MAX_BATCH_MESSAGES


DEFAULT_LIMITS = Limits()

#: Result subtypes kept as ``outcome`` label values; anything else is ``other``.
OUTCOMES = frozenset(
    {
        "success",
        "error_during_execution",
        "error_max_turns",
        "error_max_budget_usd",
        "error_max_structured_output_retries",
    }
)

#: Message types that are valid but never carry billable usage.
_NO_USAGE_TYPES = frozenset(
    {
        "user",
        "system",
        "stream_event",
        "rate_limit_event",
        "summary",
        "file-history-snapshot",
        "queue-operation",
        "progress",
        "tool_progress",
        "auth_status",
        "keep_alive",
        "control_request",
        "control_response",
    }
)

_SDK_NO_USAGE_CLASSES = frozenset(
    {
        "UserMessage",
        "SystemMessage",
        "StreamEvent",
        "RateLimitEvent",
        "TaskStartedMessage",
        "TaskProgressMessage",
        "TaskNotificationMessage",
    }
)

_PICO = Decimal(10) ** 12
# ``dict`` first: an exact-type hit skips the slow ABC check on the hot path.
_MAPPING = (dict, Mapping)


class _Bad(Exception):
    """Internal: a field is unusable; becomes a ``Rejected`` at the boundary."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(detail)


def normalize(message: object, source: str) -> Normalized:
    """Turn one SDK message object or JSON dict into a record, ``Ignored`` or ``Rejected``."""
    try:
        if isinstance(message, _MAPPING):
            return _from_json(message, source)
        kind = type(message).__name__
        if kind == "AssistantMessage":
            return _from_sdk_assistant(message, source)
        if kind == "ResultMessage":
            return _from_sdk_result(message, source)
        if kind == "SystemMessage" and getattr(message, "subtype", None) == "init":
            data = getattr(message, "data", None)
            if isinstance(data, _MAPPING):
                return _call_start(data.get("session_id"), data.get("uuid"))
        if kind in _SDK_NO_USAGE_CLASSES:
            return Ignored(kind)
        return Rejected("not_an_object", f"unsupported message type {kind}")
    except _Bad as bad:
        return Rejected(bad.reason, bad.detail)


def _first_loads(line: str | bytes) -> Any:
    """``orjson.loads``, imported on first use.

    Loading orjson takes 10 ms, on the way to the first parse of ``report`` and of
    ``serve``'s cold scan, which need it only for lines the typed path passes on.
    """
    global _loads
    import orjson

    _loads = orjson.loads
    return _loads(line)


_loads: Callable[[str | bytes], Any] = _first_loads


def normalize_line(line: str | bytes, source: str, limits: Limits = DEFAULT_LIMITS) -> Normalized:
    """Parse one JSON text (an NDJSON line) and normalize it, within ``limits``.

    The length limit counts bytes, or characters when ``line`` is a ``str``.
    """
    if len(line) > limits.max_line_bytes:
        return too_long(len(line), limits)
    try:
        value = _loads(line)
    except json.JSONDecodeError as exc:  # orjson's error is one
        text = str(exc)
        if "UTF-8" in text or "surrogate" in text:
            return Rejected("invalid_utf8", "line is not valid UTF-8")
        if "depth" in text or "recursion" in text:  # orjson stops at 1024 levels
            return Rejected("too_deep", "JSON nesting is deeper than 1024 levels")
        return Rejected("invalid_json", text[:200])
    if not isinstance(value, dict):
        return Rejected("not_an_object", f"expected a JSON object, got {type(value).__name__}")
    limit = limits.max_json_depth
    # Each level needs an opening bracket, so few brackets prove the line shallow without
    # looking at it again; only a line with many (rare) has its decoded value walked.
    brackets = (
        line.count(b"{") + line.count(b"[")
        if isinstance(line, bytes)
        else line.count("{") + line.count("[")
    )
    if brackets > limit and deeper_than(value, limit):
        return too_deep(limit)
    return normalize(value, source)


def too_long(size: int, limits: Limits) -> Rejected:
    """The rejection of a line of ``size`` bytes beyond ``limits.max_line_bytes``."""
    return Rejected(
        "line_too_long",
        f"line of {size} bytes exceeds the limit of {limits.max_line_bytes} bytes",
    )


def too_deep(limit: int) -> Rejected:
    """The rejection of a message nested deeper than ``limit`` levels."""
    return Rejected("too_deep", f"JSON nesting is deeper than {limit} levels")


def deeper_than(value: object, limit: int) -> bool:
    """Whether decoded JSON ``value`` nests more than ``limit`` containers deep.

    Iterative (a deep value cannot exhaust the stack) and stops at the first container
    beyond the limit. A scalar has depth 0, ``{}`` and ``[]`` depth 1.
    """
    if type(value) is not dict and type(value) is not list:
        return False
    if limit < 1:
        return True
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        for child in node.values() if type(node) is dict else node:
            kind = type(child)
            if kind is dict or kind is list:
                if depth >= limit:
                    return True
                push((child, depth + 1))
    return False


# --- JSON forms -------------------------------------------------------------------------


def _from_json(data: Mapping[str, Any], source: str) -> Normalized:
    kind = data.get("type")
    if not isinstance(kind, str):
        raise _Bad("missing_type", "message has no string 'type'")
    if kind == "assistant":
        message = data.get("message")
        if not isinstance(message, _MAPPING):
            raise _Bad("invalid_message", "assistant line has no 'message' object")
        if data.get("error") or data.get("isApiErrorMessage") is True:
            return Ignored("api_error")
        fast = _plain_step(data, message, source) if type(message) is dict else None
        if fast is not None:
            return fast
        return _step(
            message_id=message.get("id"),
            model=message.get("model"),
            usage=message.get("usage"),
            session_id=_first(data, "session_id", "sessionId"),
            timestamp=data.get("timestamp"),
            source=source,
        )
    if kind == "result":
        return _result(
            session_id=_first(data, "session_id", "sessionId"),
            uuid=data.get("uuid"),
            subtype=data.get("subtype"),
            total_cost=data.get("total_cost_usd"),
            model_usage=_first(data, "modelUsage", "model_usage"),
            timestamp=data.get("timestamp"),
            identity=data,
            source=source,
        )
    if kind == "system" and data.get("subtype") == "init":
        return _call_start(_first(data, "session_id", "sessionId"), data.get("uuid"))
    return Ignored(kind if kind in _NO_USAGE_TYPES else "other")


# --- SDK objects ------------------------------------------------------------------------


def _from_sdk_assistant(msg: object, source: str) -> Normalized:
    if getattr(msg, "error", None):
        return Ignored("api_error")
    return _step(
        message_id=getattr(msg, "message_id", None),
        model=getattr(msg, "model", None),
        usage=getattr(msg, "usage", None),
        session_id=getattr(msg, "session_id", None),
        timestamp=None,
        source=source,
    )


def _from_sdk_result(msg: object, source: str) -> Normalized:
    identity = {
        name: getattr(msg, name, None)
        for name in ("session_id", "subtype", "num_turns", "duration_ms", "total_cost_usd")
    }
    return _result(
        session_id=getattr(msg, "session_id", None),
        uuid=getattr(msg, "uuid", None),
        subtype=getattr(msg, "subtype", None),
        total_cost=getattr(msg, "total_cost_usd", None),
        model_usage=getattr(msg, "model_usage", None),
        timestamp=None,
        identity=identity,
        source=source,
    )


# --- shared field rules -----------------------------------------------------------------


def _call_start(session_id: object, uuid: object) -> Normalized:
    """An init line marks a call boundary only when it can be deduplicated (has a uuid)."""
    if (
        isinstance(session_id, str)
        and session_id
        and len(session_id) <= MAX_ID_LENGTH
        and isinstance(uuid, str)
        and uuid
        and len(uuid) <= MAX_ID_LENGTH
    ):
        return CallStart(key=f"init\x1f{session_id}\x1f{uuid}", session_id=session_id)
    return Ignored("system")


def _plain_step(data: Mapping[str, Any], message: dict[str, Any], source: str) -> StepRecord | None:
    """The common, well-formed assistant message in a few dictionary lookups.

    Returns None for anything unusual (a missing or oddly typed field, the synthetic model,
    a malformed id or model), which then takes the careful path in ``_step``; for what it
    accepts the result is identical (a test compares both on every generated line).
    """
    usage = message.get("usage")
    mid = message.get("id")
    model = message.get("model")
    if type(usage) is not dict or type(mid) is not str or type(model) is not str:
        return None
    if not mid or len(mid) > MAX_ID_LENGTH or model == SYNTHETIC_MODEL:
        return None
    inp = usage.get("input_tokens")
    out = usage.get("output_tokens")
    read = usage.get("cache_read_input_tokens")
    unsplit = usage.get("cache_creation_input_tokens")
    read = 0 if read is None else read
    unsplit = 0 if unsplit is None else unsplit
    if not (
        type(inp) is int
        and type(out) is int
        and type(read) is int
        and type(unsplit) is int
        and 0 <= inp <= MAX_COUNT
        and 0 <= out <= MAX_COUNT
        and 0 <= read <= MAX_COUNT
        and 0 <= unsplit <= MAX_COUNT
    ):
        return None
    split = usage.get("cache_creation")
    c5m: Any
    c1h: Any
    if split is None:
        c5m, c1h = unsplit, 0
    elif type(split) is dict:
        c5m = split.get("ephemeral_5m_input_tokens")
        c1h = split.get("ephemeral_1h_input_tokens")
        c5m = 0 if c5m is None else c5m
        c1h = 0 if c1h is None else c1h
        if not (
            type(c5m) is int
            and type(c1h) is int
            and 0 <= c5m <= MAX_COUNT
            and 0 <= c1h <= MAX_COUNT
        ):
            return None
        c5m = max(c5m, unsplit - c1h)
    else:
        return None
    searches: Any = 0
    tools = usage.get("server_tool_use")
    if type(tools) is dict:
        searches = tools.get("web_search_requests")
        searches = 0 if searches is None else searches
        if type(searches) is not int or not 0 <= searches <= MAX_COUNT:
            return None
    session = data.get("session_id")
    if session is None:
        session = data.get("sessionId")
    if session is None:
        session = ""
    if type(session) is not str or len(session) > MAX_ID_LENGTH or len(model) > MAX_MODEL_LENGTH:
        return None
    name = canonical_model(model)
    if not name:
        return None
    geo = usage.get("inference_geo")
    return StepRecord(
        mid,
        session,
        name,
        source,
        inp,
        out,
        read,
        c5m,
        c1h,
        searches,
        usage.get("service_tier") == "batch",
        geo == "us" or (isinstance(geo, str) and geo.lower() == "us"),
        usage.get("speed") == "fast",
        epoch_seconds(data.get("timestamp")),
    )


#: Canonical names of the raw model strings seen so far ("" when unusable): a history holds
#: a handful, and normalizing one costs four regex substitutions (about 2 µs of the ~8 µs an
#: assistant line takes) that would otherwise be paid on every line.
_MODEL_NAMES: dict[str, str] = {}
_MODEL_NAMES_MAX = 4096


def canonical_model(model: str) -> str:
    """``normalize_model_id`` of ``model``, or "" when the result is empty or unprintable."""
    name = _MODEL_NAMES.get(model)
    if name is not None:
        return name
    name = normalize_model_id(model)
    if not name or not name.isprintable():
        name = ""
    if len(_MODEL_NAMES) >= _MODEL_NAMES_MAX:
        _MODEL_NAMES.clear()
    _MODEL_NAMES[model] = name
    return name


def _step(
    *,
    message_id: object,
    model: object,
    usage: object,
    session_id: object,
    timestamp: object,
    source: str,
) -> Normalized:
    if not isinstance(model, str) or not model:
        raise _Bad("missing_model", "assistant message has no model")
    if model == SYNTHETIC_MODEL:
        return Ignored("synthetic")
    if not isinstance(message_id, str) or not message_id:
        raise _Bad("missing_message_id", "assistant message has no message id to deduplicate by")
    if len(message_id) > MAX_ID_LENGTH:
        raise _Bad("invalid_field", "message id is too long")
    if not isinstance(usage, _MAPPING):
        raise _Bad("missing_usage", "assistant message has no usage object")
    inp = _count(usage, "input_tokens", required=True)
    out = _count(usage, "output_tokens", required=True)
    read = _count(usage, "cache_read_input_tokens")
    unsplit = _count(usage, "cache_creation_input_tokens")
    split = usage.get("cache_creation")
    if isinstance(split, _MAPPING):
        c5m = _count(split, "ephemeral_5m_input_tokens")
        c1h = _count(split, "ephemeral_1h_input_tokens")
        # A split that sums to less than the unsplit total leaves the rest as 5m writes.
        c5m = max(c5m, unsplit - c1h)
    elif split is None:
        c5m, c1h = unsplit, 0
    else:
        raise _Bad("invalid_usage", "usage.cache_creation is not an object")
    searches = 0
    server_tools = usage.get("server_tool_use")
    if isinstance(server_tools, _MAPPING):
        searches = _count(server_tools, "web_search_requests")
    if type(session_id) is not str or len(session_id) > MAX_ID_LENGTH:
        session_id = _session(session_id, required=False)
    geo = usage.get("inference_geo")
    return StepRecord(
        message_id,
        session_id,
        _model(model),
        source,
        inp,
        out,
        read,
        c5m,
        c1h,
        searches,
        usage.get("service_tier") == "batch",
        geo == "us" or (isinstance(geo, str) and geo.lower() == "us"),
        usage.get("speed") == "fast",
        epoch_seconds(timestamp),
    )


def _result(
    *,
    session_id: object,
    uuid: object,
    subtype: object,
    total_cost: object,
    model_usage: object,
    timestamp: object,
    identity: Mapping[str, Any],
    source: str,
) -> Normalized:
    session = _session(session_id, required=True)
    if uuid is not None and (not isinstance(uuid, str) or not uuid or len(uuid) > MAX_ID_LENGTH):
        raise _Bad("invalid_field", "result uuid is not a string")
    if uuid:
        key = f"{session}\x1f{uuid}"
    else:
        # Older SDKs send no uuid: identify the message by its own content, so the same
        # result re-sent is still recognised, while two different results stay distinct.
        try:
            text = json.dumps(identity, sort_keys=True, default=str)
        except RecursionError:  # only SDK objects get here this deep: lines are bounded
            raise _Bad("too_deep", "result message is nested too deeply to identify") from None
        except (TypeError, ValueError):  # keys of mixed types, a circular reference
            raise _Bad("invalid_field", "result message cannot be identified") from None
        import hashlib  # only results without a uuid (old SDKs) need it

        digest = hashlib.sha256(text.encode(errors="surrogatepass")).hexdigest()[:32]
        key = f"{session}\x1f#{digest}"
    models: dict[str, ModelTotals] = {}
    if model_usage is not None:
        if not isinstance(model_usage, _MAPPING):
            raise _Bad("invalid_usage", "modelUsage is not an object")
        for raw_model, entry in model_usage.items():
            if not isinstance(entry, _MAPPING):
                raise _Bad("invalid_usage", "modelUsage entry is not an object")
            name = _model(raw_model)
            totals = ModelTotals(
                input=_count(entry, "inputTokens"),
                output=_count(entry, "outputTokens"),
                cache_read=_count(entry, "cacheReadInputTokens"),
                cache_creation=_count(entry, "cacheCreationInputTokens"),
                web_search=_count(entry, "webSearchRequests"),
                cost_pico=_usd_to_pico(entry.get("costUSD"), "modelUsage.costUSD"),
            )
            previous = models.get(name)
            models[name] = totals if previous is None else _merge_totals(previous, totals)
    outcome = subtype if isinstance(subtype, str) and subtype in OUTCOMES else "other"
    return ResultRecord(
        key=key,
        session_id=session,
        outcome=outcome,
        source=source,
        models=models,
        total_cost_pico=_usd_to_pico(total_cost, "total_cost_usd"),
        timestamp=epoch_seconds(timestamp),
    )


def _merge_totals(a: ModelTotals, b: ModelTotals) -> ModelTotals:
    """Two provider spellings of one model (e.g. Bedrock and first-party) add up."""
    cost = (
        None
        if a.cost_pico is None and b.cost_pico is None
        else ((a.cost_pico or 0) + (b.cost_pico or 0))
    )
    return ModelTotals(
        input=a.input + b.input,
        output=a.output + b.output,
        cache_read=a.cache_read + b.cache_read,
        cache_creation=a.cache_creation + b.cache_creation,
        web_search=a.web_search + b.web_search,
        cost_pico=cost,
    )


def _first(data: Mapping[str, Any], *keys: str) -> object:
    for key in keys:
        value = data.get(key)
        if value is not None:
            return value
    return None


def _count(usage: Mapping[str, Any], key: str, *, required: bool = False) -> int:
    """A token or request count: a whole number from 0 to ``MAX_COUNT``.

    A float is accepted only when whole (``3.0``; JSON writers differ), never rounded.
    """
    value = usage.get(key)
    if type(value) is int and 0 <= value <= MAX_COUNT:  # the common case, checked first
        return value
    if value is None:
        if required:
            raise _Bad("invalid_usage", f"usage.{key} is missing")
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise _Bad("invalid_usage", f"usage.{key} is not an integer")
    if value < 0:
        raise _Bad("invalid_usage", f"usage.{key} is negative")
    if value > MAX_COUNT:
        raise _Bad("invalid_usage", f"usage.{key} is beyond 2^63 - 1")
    return int(value)


def _session(value: object, *, required: bool) -> str:
    if value is None or value == "":
        if required:
            raise _Bad("missing_session_id", "result message has no session_id")
        return ""
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH:
        raise _Bad("invalid_field", "session_id is not a short string")
    return value


def _model(raw: object) -> str:
    if not isinstance(raw, str) or not raw or len(raw) > MAX_MODEL_LENGTH:
        raise _Bad("invalid_field", "model is not a short string")
    name = normalize_model_id(raw)
    if not name or not name.isprintable():
        raise _Bad("invalid_field", "model contains unprintable characters")
    return name


def _usd_to_pico(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Bad("invalid_cost", f"{name} is not a number")
    if isinstance(value, str) and len(value) > _MAX_NUMBER_TEXT:
        raise _Bad("invalid_cost", f"{name} is not a number")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise _Bad("invalid_cost", f"{name} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise _Bad("invalid_cost", f"{name} is negative or not finite")
    if amount > MAX_COST_USD:
        raise _Bad("invalid_cost", f"{name} is beyond {MAX_COST_USD:.0f} USD")
    return int((amount * _PICO).to_integral_value())


def epoch_seconds(value: object) -> float | None:
    """Return epoch seconds for an ISO-8601 string or epoch number; None when absent/unreadable.

    A timestamp only places a late step into its call; an unreadable one is treated as absent
    rather than costing the usage on the line.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond the float range
            return None
        return seconds if math.isfinite(seconds) else None
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value).timestamp()  # 3.11 reads "Z" itself
        except (ValueError, OverflowError, OSError):  # unreadable, or a year out of range
            return None
    return None
