"""Price table and model-id normalization for client-side cost estimates.

Prices live in a versioned TOML file (``otel_claude/data/prices.toml``), not in
code.  Every price is kept as a :class:`~decimal.Decimal` in USD per million
tokens; the price of a single token is handed out as an integer number of
picodollars (1e-12 USD), which is exact for every published rate and its
modifiers, so callers can sum costs in integers without rounding drift.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any

from otel_claude.errors import PricingError

__all__ = [
    "TOKEN_TYPES",
    "ModelPrice",
    "Modifiers",
    "PriceTable",
    "PricingError",
    "load_price_table",
    "normalize_model_id",
]

TOKEN_TYPES = ("input", "output", "cache_read", "cache_creation_5m", "cache_creation_1h")

# USD per million tokens -> picodollars per token: x / 1e6 * 1e12.
_PICO_PER_USD_PER_MTOK = Decimal(10) ** 6
_PICO_PER_USD = Decimal(10) ** 12


# --------------------------------------------------------------------------
# Model id normalization
# --------------------------------------------------------------------------

# A trailing bracketed tag, e.g. Claude Code's "claude-opus-4-6[1m]".
_TAG_RE = re.compile(r"\[[^\]]*\]$")
# Bedrock cross-region inference prefixes ("us.", "eu.", "apac.", "global.",
# "us-gov." ...) in front of the "anthropic." vendor prefix.
_BEDROCK_PREFIX_RE = re.compile(r"^(?:[a-z]+(?:-[a-z]+)*\.)?anthropic\.")
# Bedrock version suffix "-v1", "-v1:0", and context variants like "-v1:0:200k".
_BEDROCK_VERSION_RE = re.compile(r"-v\d+(?::\d+)?(?::\d+k)?$")
# Release date snapshot suffix, e.g. "-20250929".
_DATE_RE = re.compile(r"-\d{8}$")

_ALIASES = {
    "claude-opus-4-0": "claude-opus-4",
    "claude-sonnet-4-0": "claude-sonnet-4",
}


@functools.lru_cache(maxsize=4096)
def normalize_model_id(raw: str) -> str:
    """Reduce an API, Bedrock, Vertex or Claude Code model string to a canonical id.

    The rules are purely syntactic: an unknown model comes back cleaned up by
    the same rules but is never mapped onto a different, known model.
    """
    s = raw.strip().lower()
    s = _TAG_RE.sub("", s).strip()
    # Bedrock ARNs (".../foundation-model/anthropic.claude-...") and Vertex
    # resource names (".../publishers/anthropic/models/claude-...@...") carry the
    # model id in their last path segment.
    if "/" in s:
        s = s.rsplit("/", 1)[1]
    # Vertex: "claude-haiku-4-5@20251001".
    s = s.partition("@")[0]
    s = _BEDROCK_PREFIX_RE.sub("", s)
    s = _BEDROCK_VERSION_RE.sub("", s)
    s = _DATE_RE.sub("", s)
    s = s.removesuffix("-latest")
    return _ALIASES.get(s, s)


# --------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Modifiers:
    """Pricing modifiers that apply to one request."""

    batch: bool = False
    long_context: bool = False
    geo_us: bool = False
    fast: bool = False


@dataclass(frozen=True)
class ModelPrice:
    """Prices of one model in USD per million tokens."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    source: str
    source_date: str
    long_context_input: Decimal | None = None
    long_context_output: Decimal | None = None
    geo_us_multiplier: Decimal | None = None
    fast_multiplier: Decimal | None = None
    confidence: str = "primary"

    @property
    def long_context_eligible(self) -> bool:
        return self.long_context_input is not None


_REQUIRED_PRICES = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
_OPTIONAL_PRICES = ("long_context_input", "long_context_output")
_MULTIPLIERS = ("geo_us_multiplier", "fast_multiplier")
_TEXT_FIELDS = ("source", "source_date", "confidence")
_MODEL_FIELDS = frozenset(f.name for f in fields(ModelPrice))

_TOP_LEVEL_KEYS = frozenset(
    {"version", "batch_multiplier", "web_search_per_request", "defaults", "models"}
)
_DEFAULT_MULTIPLIER_KEYS = (
    "cache_write_5m_multiplier",
    "cache_write_1h_multiplier",
    "cache_read_multiplier",
)


@dataclass(frozen=True)
class PriceTable:
    """A loaded, validated price table."""

    version: str
    models: Mapping[str, ModelPrice]
    batch_multiplier: Decimal = Decimal("0.5")
    web_search_per_request: Decimal = Decimal("0.01")
    cache_write_5m_multiplier: Decimal = Decimal("1.25")
    cache_write_1h_multiplier: Decimal = Decimal(2)
    cache_read_multiplier: Decimal = Decimal("0.1")
    long_context_threshold_tokens: int = 200_000

    def get(self, model: str) -> ModelPrice | None:
        """Price of ``model`` (canonical or raw id), or None when unpriced."""
        price = self.models.get(model)
        if price is None:
            price = self.models.get(normalize_model_id(model))
        return price

    def long_context_eligible(self, model: str) -> bool:
        """Whether ``model`` has a long-context premium rate."""
        price = self.get(model)
        return price is not None and price.long_context_eligible

    def usd_per_mtok(self, model: str, token_type: str, mods: Modifiers) -> Decimal | None:
        """Effective price in USD per million tokens after all modifiers."""
        if token_type not in TOKEN_TYPES:
            raise PricingError(
                f"unknown token type {token_type!r}; expected one of {', '.join(TOKEN_TYPES)}"
            )
        price = self.get(model)
        if price is None:
            return None
        fast = mods.fast and price.fast_multiplier is not None
        # Fast mode is charged at its own multiple of the standard rates across
        # the whole context window; the long-context premium is a standard-speed
        # rate, so the two do not combine.
        if (
            mods.long_context
            and not fast
            and price.long_context_input is not None
            and price.long_context_output is not None
        ):
            lc_in = price.long_context_input
            rates = {
                "input": lc_in,
                "output": price.long_context_output,
                "cache_read": lc_in * self.cache_read_multiplier,
                "cache_creation_5m": lc_in * self.cache_write_5m_multiplier,
                "cache_creation_1h": lc_in * self.cache_write_1h_multiplier,
            }
        else:
            rates = {
                "input": price.input,
                "output": price.output,
                "cache_read": price.cache_read,
                "cache_creation_5m": price.cache_write_5m,
                "cache_creation_1h": price.cache_write_1h,
            }
        rate = rates[token_type]
        if mods.batch:
            rate *= self.batch_multiplier
        if mods.geo_us and price.geo_us_multiplier is not None:
            rate *= price.geo_us_multiplier
        if fast and price.fast_multiplier is not None:
            rate *= price.fast_multiplier
        return rate

    def picousd_per_token(self, model: str, token_type: str, mods: Modifiers) -> int | None:
        """Price of one token in picodollars (1e-12 USD), None for an unpriced model."""
        rate = self.usd_per_mtok(model, token_type, mods)
        if rate is None:
            return None
        return _to_int(rate * _PICO_PER_USD_PER_MTOK)

    def web_search_picousd_per_request(self) -> int:
        """Price of one server-side web search in picodollars."""
        return _to_int(self.web_search_per_request * _PICO_PER_USD)


def _to_int(value: Decimal) -> int:
    # Published rates times the modifiers are whole picodollars; round half-even
    # only as a safety net for user-supplied prices with more decimals.
    return int(value.to_integral_value(rounding=ROUND_HALF_EVEN))


# --------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------


def _as_decimal(value: object, where: str, name: str) -> Decimal:
    """Convert a TOML / config number to Decimal, rejecting anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise PricingError(f"{where}: field {name!r} must be a number, got {value!r}")
    try:
        # str() of a float is its shortest round-trip form, so 0.3 -> Decimal("0.3").
        dec = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation as exc:  # pragma: no cover - defensive
        raise PricingError(f"{where}: field {name!r} is not a valid number: {value!r}") from exc
    if not dec.is_finite():
        raise PricingError(f"{where}: field {name!r} must be finite, got {value!r}")
    return dec


def _price(value: object, where: str, name: str) -> Decimal:
    dec = _as_decimal(value, where, name)
    if dec < 0:
        raise PricingError(f"{where}: field {name!r} must not be negative, got {value!r}")
    return dec


def _multiplier(value: object, where: str, name: str) -> Decimal:
    dec = _as_decimal(value, where, name)
    if dec <= 0:
        raise PricingError(f"{where}: field {name!r} must be positive, got {value!r}")
    return dec


def _text(value: object, where: str, name: str) -> str:
    if not isinstance(value, str):
        raise PricingError(f"{where}: field {name!r} must be a string, got {value!r}")
    return value


def _convert_fields(raw: Mapping[str, object], where: str) -> dict[str, Any]:
    """Validate and convert the fields of one model entry (full or partial)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key not in _MODEL_FIELDS:
            raise PricingError(
                f"{where}: unknown field {key!r}; "
                f"expected some of {', '.join(sorted(_MODEL_FIELDS))}"
            )
        if key in _REQUIRED_PRICES or key in _OPTIONAL_PRICES:
            out[key] = _price(value, where, key)
        elif key in _MULTIPLIERS:
            out[key] = _multiplier(value, where, key)
        else:
            out[key] = _text(value, where, key)
    return out


def _check_long_context(price: ModelPrice, where: str) -> None:
    if (price.long_context_input is None) != (price.long_context_output is None):
        missing = (
            "long_context_output" if price.long_context_output is None else "long_context_input"
        )
        raise PricingError(
            f"{where}: field {missing!r} is required when the other long-context rate is set"
        )


def _build_model(fields_: Mapping[str, Any], where: str) -> ModelPrice:
    for name in (*_REQUIRED_PRICES, "source", "source_date"):
        if name not in fields_:
            raise PricingError(f"{where}: required field {name!r} is missing")
    price = ModelPrice(**fields_)
    _check_long_context(price, where)
    return price


def _read_toml(path: str | Path | None) -> tuple[dict[str, Any], str]:
    if path is None:
        origin = "shipped prices.toml"
        # Next to this module in every install (package data, never zipped): reading the
        # path directly spares importing importlib.resources (4 ms of every start).
        text = (Path(__file__).parent / "data" / "prices.toml").read_text("utf-8")
    else:
        origin = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise PricingError(f"cannot read price file {origin}: {exc}") from exc
    try:
        return tomllib.loads(text, parse_float=Decimal), origin
    except tomllib.TOMLDecodeError as exc:
        raise PricingError(f"{origin}: invalid TOML: {exc}") from exc


def _parse_table(data: Mapping[str, Any], origin: str) -> PriceTable:
    unknown = sorted(set(data) - _TOP_LEVEL_KEYS)
    if unknown:
        raise PricingError(f"{origin}: unknown top-level key(s): {', '.join(unknown)}")
    version = data.get("version")
    if not isinstance(version, str) or not version:
        raise PricingError(f"{origin}: top-level 'version' must be a non-empty string")

    top: dict[str, Any] = {}
    for name in ("batch_multiplier", "web_search_per_request"):
        if name in data:
            conv = _multiplier if name == "batch_multiplier" else _price
            top[name] = conv(data[name], origin, name)

    defaults = data.get("defaults", {})
    if not isinstance(defaults, Mapping):
        raise PricingError(f"{origin}: 'defaults' must be a table")
    for name in _DEFAULT_MULTIPLIER_KEYS:
        if name in defaults:
            top[name] = _multiplier(defaults[name], f"{origin} [defaults]", name)
    if "long_context_threshold_tokens" in defaults:
        threshold = defaults["long_context_threshold_tokens"]
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold <= 0:
            raise PricingError(
                f"{origin} [defaults]: field 'long_context_threshold_tokens' must be a "
                f"positive integer, got {threshold!r}"
            )
        top["long_context_threshold_tokens"] = threshold

    raw_models = data.get("models")
    if not isinstance(raw_models, Mapping) or not raw_models:
        raise PricingError(f"{origin}: a non-empty [models] table is required")
    models: dict[str, ModelPrice] = {}
    for model_id, entry in raw_models.items():
        where = f"{origin}: model {model_id!r}"
        if normalize_model_id(model_id) != model_id:
            raise PricingError(
                f"{where}: not a canonical id (expected {normalize_model_id(model_id)!r})"
            )
        if not isinstance(entry, Mapping):
            raise PricingError(f"{where}: must be a table of fields")
        models[model_id] = _build_model(_convert_fields(entry, where), where)
    return PriceTable(version=version, models=MappingProxyType(models), **top)


def _apply_overrides(
    table: PriceTable, overrides: Mapping[str, Mapping[str, object]]
) -> PriceTable:
    models = dict(table.models)
    for raw_id, entry in overrides.items():
        if not isinstance(raw_id, str):
            raise PricingError(f"price override: model id must be a string, got {raw_id!r}")
        model_id = normalize_model_id(raw_id)
        where = f"price override for model {model_id!r}"
        if not isinstance(entry, Mapping):
            raise PricingError(f"{where}: must be a mapping of fields, got {entry!r}")
        changes = _convert_fields(entry, where)
        existing = models.get(model_id)
        if existing is not None:
            # Overridden prices no longer come from the published source.
            if any(k not in _TEXT_FIELDS for k in changes):
                changes.setdefault("source", "override")
                changes.setdefault("source_date", "")
            price = replace(existing, **changes)
            _check_long_context(price, where)
        else:
            for name in ("input", "output"):
                if name not in changes:
                    raise PricingError(f"{where}: new model needs field {name!r}")
            base: Decimal = changes["input"]
            changes.setdefault("cache_write_5m", base * table.cache_write_5m_multiplier)
            changes.setdefault("cache_write_1h", base * table.cache_write_1h_multiplier)
            changes.setdefault("cache_read", base * table.cache_read_multiplier)
            changes.setdefault("source", "override")
            changes.setdefault("source_date", "")
            changes.setdefault("confidence", "override")
            price = _build_model(changes, where)
        models[model_id] = price
    return replace(table, models=MappingProxyType(models))


def load_price_table(
    path: str | Path | None = None,
    overrides: Mapping[str, Mapping[str, object]] | None = None,
) -> PriceTable:
    """Load the shipped price table (or ``path``) and apply per-model overrides.

    ``overrides`` maps a model id (normalized before use) to fields to replace
    on a known model, or to define a new one (``input`` and ``output`` needed;
    missing cache prices follow the table's default multipliers of input).
    Invalid data raises :class:`PricingError` naming the model and field.
    """
    data, origin = _read_toml(path)
    table = _parse_table(data, origin)
    if overrides:
        table = _apply_overrides(table, overrides)
    return table
