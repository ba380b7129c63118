"""Tests for otel_claude.pricing.

Expected prices are written out by hand (USD per MTok x 10^6 = picodollars per
token) rather than derived from the code under test.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from otel_claude.pricing import (
    TOKEN_TYPES,
    Modifiers,
    PriceTable,
    PricingError,
    load_price_table,
    normalize_model_id,
)

NONE = Modifiers()
BATCH = Modifiers(batch=True)
LONG = Modifiers(long_context=True)
GEO = Modifiers(geo_us=True)
FAST = Modifiers(fast=True)

CANONICAL_IDS = {
    "claude-opus-4-6",
    "claude-opus-4-5",
    "claude-opus-4-1",
    "claude-opus-4",
    "claude-sonnet-4-6",
    "claude-sonnet-4-5",
    "claude-sonnet-4",
    "claude-3-7-sonnet",
    "claude-haiku-4-5",
    "claude-3-5-haiku",
    "claude-3-opus",
    "claude-3-haiku",
    "claude-opus-4-7",
    "claude-opus-4-8",
    "claude-opus-5",
    "claude-sonnet-5",
    "claude-fable-5",
    "claude-fable-5-1",
}


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return load_price_table()


def pico(table: PriceTable, model: str, token_type: str, mods: Modifiers = NONE) -> int | None:
    return table.picousd_per_token(model, token_type, mods)


# --------------------------------------------------------------------------
# normalize_model_id
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Examples from the brief.
        ("us.anthropic.claude-opus-4-6-v1", "claude-opus-4-6"),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("claude-haiku-4-5@20251001", "claude-haiku-4-5"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("<synthetic>", "<synthetic>"),
        # Claude Code context tag.
        ("claude-opus-4-6[1m]", "claude-opus-4-6"),
        ("claude-sonnet-4-0[1m]", "claude-sonnet-4"),
        # Case and whitespace.
        ("  Claude-Opus-4-6\n", "claude-opus-4-6"),
        # Aliases of the 4.0 models.
        ("claude-opus-4-0", "claude-opus-4"),
        ("claude-sonnet-4-0", "claude-sonnet-4"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-opus-4@20250514", "claude-opus-4"),
        # Bedrock region prefixes and version suffixes.
        ("eu.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("apac.anthropic.claude-3-7-sonnet-20250219-v1:0", "claude-3-7-sonnet"),
        ("jp.anthropic.claude-sonnet-4-6", "claude-sonnet-4-6"),
        ("au.anthropic.claude-opus-4-6-v1", "claude-opus-4-6"),
        ("anthropic.claude-sonnet-4-6", "claude-sonnet-4-6"),
        ("anthropic.claude-3-haiku-20240307-v1:0:200k", "claude-3-haiku"),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
            "us.anthropic.claude-sonnet-4-20250514-v1:0",
            "claude-sonnet-4",
        ),
        # Vertex forms.
        ("claude-opus-4-5@20251101", "claude-opus-4-5"),
        (
            "projects/p/locations/us-east5/publishers/anthropic/models/claude-opus-4-1@20250805",
            "claude-opus-4-1",
        ),
        # Dated API ids and -latest aliases.
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("claude-3-haiku-20240307", "claude-3-haiku"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        # Minor version numbers are not mistaken for suffixes.
        ("claude-opus-4-1", "claude-opus-4-1"),
        ("claude-fable-5-1", "claude-fable-5-1"),
        # Unknown ids are cleaned up but never mapped to a known model.
        ("Some-New-Model-20270101", "some-new-model"),
        ("gpt-4o", "gpt-4o"),
        ("claude-opus-9", "claude-opus-9"),
        ("", ""),
    ],
)
def test_normalize_model_id(raw: str, expected: str) -> None:
    assert normalize_model_id(raw) == expected


@pytest.mark.parametrize("model", sorted(CANONICAL_IDS))
def test_canonical_ids_are_fixed_points(model: str) -> None:
    assert normalize_model_id(model) == model


# --------------------------------------------------------------------------
# Shipped table
# --------------------------------------------------------------------------


def test_shipped_table_has_exactly_the_canonical_models(table: PriceTable) -> None:
    assert set(table.models) == CANONICAL_IDS
    assert table.version


def test_shipped_models_complete_and_positive(table: PriceTable) -> None:
    for model_id, price in table.models.items():
        for name in ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read"):
            value = getattr(price, name)
            assert isinstance(value, Decimal), (model_id, name)
            assert value > 0, (model_id, name)
        assert price.source_date, model_id
        assert price.source.startswith("https://"), model_id


def test_secondary_confidence_for_later_snapshot_rows(table: PriceTable) -> None:
    secondary = {m for m, p in table.models.items() if p.confidence == "secondary"}
    assert secondary == {
        "claude-opus-4-7",
        "claude-opus-4-8",
        "claude-opus-5",
        "claude-sonnet-5",
        "claude-fable-5",
        "claude-fable-5-1",
    }
    assert table.models["claude-opus-4-6"].source_date == "2026-03"


def test_modifier_eligibility_in_shipped_table(table: PriceTable) -> None:
    assert {m for m in table.models if table.long_context_eligible(m)} == {
        "claude-opus-4-6",
        "claude-sonnet-4-6",
        "claude-sonnet-4-5",
        "claude-sonnet-4",
    }
    assert {m for m, p in table.models.items() if p.geo_us_multiplier is not None} == {
        "claude-opus-4-6",
        "claude-sonnet-4-6",
        "claude-opus-4-7",
        "claude-opus-4-8",
        "claude-opus-5",
        "claude-sonnet-5",
        "claude-fable-5",
        "claude-fable-5-1",
    }
    assert {m for m, p in table.models.items() if p.fast_multiplier is not None} == {
        "claude-opus-4-6"
    }
    assert not table.long_context_eligible("claude-haiku-4-5")
    assert not table.long_context_eligible("not-a-model")
    assert table.long_context_eligible("anthropic.claude-sonnet-4-20250514-v1:0")


# model: (input, cache_creation_5m, cache_creation_1h, cache_read, output) in pico/token
BASE_ROWS = {
    "claude-opus-4-6": (5_000_000, 6_250_000, 10_000_000, 500_000, 25_000_000),
    "claude-opus-4-5": (5_000_000, 6_250_000, 10_000_000, 500_000, 25_000_000),
    "claude-opus-4-1": (15_000_000, 18_750_000, 30_000_000, 1_500_000, 75_000_000),
    "claude-opus-4": (15_000_000, 18_750_000, 30_000_000, 1_500_000, 75_000_000),
    "claude-sonnet-4-6": (3_000_000, 3_750_000, 6_000_000, 300_000, 15_000_000),
    "claude-sonnet-4-5": (3_000_000, 3_750_000, 6_000_000, 300_000, 15_000_000),
    "claude-sonnet-4": (3_000_000, 3_750_000, 6_000_000, 300_000, 15_000_000),
    "claude-3-7-sonnet": (3_000_000, 3_750_000, 6_000_000, 300_000, 15_000_000),
    "claude-haiku-4-5": (1_000_000, 1_250_000, 2_000_000, 100_000, 5_000_000),
    "claude-3-5-haiku": (800_000, 1_000_000, 1_600_000, 80_000, 4_000_000),
    "claude-3-opus": (15_000_000, 18_750_000, 30_000_000, 1_500_000, 75_000_000),
    "claude-3-haiku": (250_000, 300_000, 500_000, 30_000, 1_250_000),
    "claude-opus-4-7": (5_000_000, 6_250_000, 10_000_000, 500_000, 25_000_000),
    "claude-opus-4-8": (5_000_000, 6_250_000, 10_000_000, 500_000, 25_000_000),
    "claude-opus-5": (5_000_000, 6_250_000, 10_000_000, 500_000, 25_000_000),
    "claude-sonnet-5": (2_000_000, 2_500_000, 4_000_000, 200_000, 10_000_000),
    "claude-fable-5": (10_000_000, 12_500_000, 20_000_000, 1_000_000, 50_000_000),
    "claude-fable-5-1": (10_000_000, 12_500_000, 20_000_000, 250_000, 50_000_000),
}


@pytest.mark.parametrize("model", sorted(BASE_ROWS))
def test_base_prices_match_published_table(table: PriceTable, model: str) -> None:
    inp, w5, w1, read, out = BASE_ROWS[model]
    assert pico(table, model, "input") == inp
    assert pico(table, model, "cache_creation_5m") == w5
    assert pico(table, model, "cache_creation_1h") == w1
    assert pico(table, model, "cache_read") == read
    assert pico(table, model, "output") == out


# --------------------------------------------------------------------------
# picousd_per_token
# --------------------------------------------------------------------------


def test_opus_4_6_base(table: PriceTable) -> None:
    assert pico(table, "claude-opus-4-6", "input") == 5_000_000
    assert pico(table, "claude-opus-4-6", "cache_creation_5m") == 6_250_000
    assert pico(table, "claude-opus-4-6", "cache_creation_1h") == 10_000_000
    assert pico(table, "claude-opus-4-6", "cache_read") == 500_000
    assert pico(table, "claude-opus-4-6", "output") == 25_000_000


def test_haiku_3_uses_literal_rounded_cache_write(table: PriceTable) -> None:
    # $0.30 as published, not 1.25 x $0.25 = $0.3125.
    assert pico(table, "claude-3-haiku", "cache_creation_5m") == 300_000


def test_raw_ids_are_accepted(table: PriceTable) -> None:
    assert pico(table, "us.anthropic.claude-opus-4-6-v1", "output") == 25_000_000
    price = table.get("claude-haiku-4-5@20251001")
    assert price is not None
    assert price.input == Decimal(1)


def test_batch(table: PriceTable) -> None:
    assert pico(table, "claude-sonnet-4-5", "output", BATCH) == 7_500_000
    assert pico(table, "claude-sonnet-4-5", "input", BATCH) == 1_500_000
    assert pico(table, "claude-opus-4-6", "cache_read", BATCH) == 250_000
    # Haiku 3: $0.125 / $0.625 batch; cache read $0.015.
    assert pico(table, "claude-3-haiku", "input", BATCH) == 125_000
    assert pico(table, "claude-3-haiku", "output", BATCH) == 625_000
    assert pico(table, "claude-3-haiku", "cache_read", BATCH) == 15_000


def test_long_context_sonnet_4(table: PriceTable) -> None:
    assert pico(table, "claude-sonnet-4", "input", LONG) == 6_000_000
    assert pico(table, "claude-sonnet-4", "output", LONG) == 22_500_000
    # Cache prices follow the long-context input rate: 6 x 1.25, 6 x 2, 6 x 0.1.
    assert pico(table, "claude-sonnet-4", "cache_creation_5m", LONG) == 7_500_000
    assert pico(table, "claude-sonnet-4", "cache_creation_1h", LONG) == 12_000_000
    assert pico(table, "claude-sonnet-4", "cache_read", LONG) == 600_000


def test_long_context_opus_4_6(table: PriceTable) -> None:
    assert pico(table, "claude-opus-4-6", "input", LONG) == 10_000_000
    assert pico(table, "claude-opus-4-6", "output", LONG) == 37_500_000


def test_long_context_ignored_for_ineligible_model(table: PriceTable) -> None:
    assert pico(table, "claude-haiku-4-5", "input", LONG) == 1_000_000
    assert pico(table, "claude-haiku-4-5", "output", LONG) == 5_000_000
    assert pico(table, "claude-haiku-4-5", "cache_read", LONG) == 100_000


def test_geo_us(table: PriceTable) -> None:
    assert pico(table, "claude-opus-4-6", "input", GEO) == 5_500_000
    assert pico(table, "claude-opus-4-6", "output", GEO) == 27_500_000
    assert pico(table, "claude-sonnet-5", "cache_read", GEO) == 220_000
    # Models released before Opus 4.6 are unaffected.
    assert pico(table, "claude-sonnet-4-5", "input", GEO) == 3_000_000
    assert pico(table, "claude-sonnet-4-5", "output", GEO) == 15_000_000


def test_fast(table: PriceTable) -> None:
    assert pico(table, "claude-opus-4-6", "output", FAST) == 150_000_000
    assert pico(table, "claude-opus-4-6", "input", FAST) == 30_000_000
    # Fast plus US-only inference: 30 x 1.1.
    assert pico(table, "claude-opus-4-6", "input", Modifiers(fast=True, geo_us=True)) == 33_000_000
    # Fast mode pricing covers the full context: no long-context premium on top.
    assert (
        pico(table, "claude-opus-4-6", "input", Modifiers(fast=True, long_context=True))
        == 30_000_000
    )
    # No fast multiplier for other models.
    assert pico(table, "claude-sonnet-4-5", "output", FAST) == 15_000_000


def test_stacking_batch_long_context_geo(table: PriceTable) -> None:
    mods = Modifiers(batch=True, long_context=True, geo_us=True)
    # Sonnet 4.6: long-context $6 / $22.50, x 0.5 x 1.1 = x 0.55.
    assert pico(table, "claude-sonnet-4-6", "input", mods) == 3_300_000
    assert pico(table, "claude-sonnet-4-6", "output", mods) == 12_375_000
    assert pico(table, "claude-sonnet-4-6", "cache_creation_5m", mods) == 4_125_000
    assert pico(table, "claude-sonnet-4-6", "cache_creation_1h", mods) == 6_600_000
    assert pico(table, "claude-sonnet-4-6", "cache_read", mods) == 330_000
    # Opus 4.6: $10 / $37.50 x 0.55.
    assert pico(table, "claude-opus-4-6", "input", mods) == 5_500_000
    assert pico(table, "claude-opus-4-6", "output", mods) == 20_625_000
    # Sonnet 4.5 has long context but no geo multiplier: x 0.5 only.
    assert pico(table, "claude-sonnet-4-5", "output", mods) == 11_250_000


def test_unpriced_model_returns_none(table: PriceTable) -> None:
    for token_type in TOKEN_TYPES:
        assert pico(table, "claude-unknown-9", token_type) is None
        assert pico(table, "<synthetic>", token_type, BATCH) is None
    assert table.get("claude-unknown-9") is None


def test_unknown_token_type_raises(table: PriceTable) -> None:
    with pytest.raises(PricingError, match="token type"):
        pico(table, "claude-opus-4-6", "cache_creation")


def test_web_search_price(table: PriceTable) -> None:
    assert table.web_search_picousd_per_request() == 10_000_000_000


def test_table_constants(table: PriceTable) -> None:
    assert table.batch_multiplier == Decimal("0.5")
    assert table.long_context_threshold_tokens == 200_000


# --------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------


def test_override_changes_one_field() -> None:
    t = load_price_table(overrides={"claude-haiku-4-5": {"input": 1.5}})
    assert pico(t, "claude-haiku-4-5", "input") == 1_500_000
    # Other fields are left as they were.
    assert pico(t, "claude-haiku-4-5", "output") == 5_000_000
    assert pico(t, "claude-haiku-4-5", "cache_creation_5m") == 1_250_000
    price = t.get("claude-haiku-4-5")
    assert price is not None
    assert price.source == "override"
    # The shipped table is not modified.
    assert pico(load_price_table(), "claude-haiku-4-5", "input") == 1_000_000


def test_override_key_is_normalized() -> None:
    t = load_price_table(overrides={"anthropic.claude-haiku-4-5-20251001-v1:0": {"output": 6}})
    assert pico(t, "claude-haiku-4-5", "output") == 6_000_000
    assert "anthropic.claude-haiku-4-5-20251001-v1:0" not in t.models


def test_override_float_is_exact() -> None:
    t = load_price_table(overrides={"claude-3-haiku": {"cache_read": 0.03, "input": 0.3}})
    assert pico(t, "claude-3-haiku", "cache_read") == 30_000
    assert pico(t, "claude-3-haiku", "input") == 300_000


def test_override_adds_new_model_with_default_cache_prices() -> None:
    t = load_price_table(overrides={"My-Model-20270101": {"input": 2, "output": 8}})
    assert pico(t, "my-model", "input") == 2_000_000
    assert pico(t, "my-model", "output") == 8_000_000
    assert pico(t, "my-model", "cache_creation_5m") == 2_500_000
    assert pico(t, "my-model", "cache_creation_1h") == 4_000_000
    assert pico(t, "my-model", "cache_read") == 200_000
    assert not t.long_context_eligible("my-model")
    assert pico(t, "my-model", "input", GEO) == 2_000_000


def test_override_new_model_with_long_context() -> None:
    t = load_price_table(
        overrides={
            "my-model": {
                "input": 1,
                "output": 4,
                "long_context_input": 2,
                "long_context_output": 6,
            }
        }
    )
    assert pico(t, "my-model", "cache_creation_1h", LONG) == 4_000_000
    assert pico(t, "my-model", "output", LONG) == 6_000_000


def test_sub_picodollar_prices_round_half_even() -> None:
    t = load_price_table(
        overrides={
            "tiny": {"input": Decimal("0.0000015"), "output": Decimal("0.0000025")},
        }
    )
    assert pico(t, "tiny", "input") == 2  # 1.5 -> 2
    assert pico(t, "tiny", "output") == 2  # 2.5 -> 2


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"claude-opus-4-6": {"output": -1}}, "output"),
        ({"claude-opus-4-6": {"input": "cheap"}}, "input"),
        ({"claude-opus-4-6": {"cache_read": True}}, "cache_read"),
        ({"claude-opus-4-6": {"cache_write_1h": None}}, "cache_write_1h"),
        ({"claude-opus-4-6": {"cache_write_5m": float("nan")}}, "cache_write_5m"),
        ({"claude-opus-4-6": {"geo_us_multiplier": 0}}, "geo_us_multiplier"),
        ({"claude-opus-4-6": {"inptu": 5}}, "inptu"),
        ({"claude-opus-4-6": {"source_date": 2026}}, "source_date"),
        ({"new-model": {"input": 1}}, "output"),
        ({"new-model": {"output": 1}}, "input"),
        ({"new-model": {"input": 1, "output": 2, "long_context_input": 3}}, "long_context_output"),
    ],
)
def test_bad_override_names_model_and_field(
    overrides: dict[str, dict[str, object]], field: str
) -> None:
    model = next(iter(overrides))
    with pytest.raises(PricingError) as info:
        load_price_table(overrides=overrides)
    assert field in str(info.value)
    assert model in str(info.value)


def test_override_entry_must_be_mapping() -> None:
    with pytest.raises(PricingError, match="claude-opus-4-6"):
        load_price_table(overrides={"claude-opus-4-6": 5})  # type: ignore[dict-item]


def test_pricing_error_is_value_error() -> None:
    assert issubclass(PricingError, ValueError)


# --------------------------------------------------------------------------
# User price files
# --------------------------------------------------------------------------

MINIMAL = """
version = "test-1"
batch_multiplier = 0.5
web_search_per_request = 0.02

[models.claude-x]
input = 4
output = 20
cache_write_5m = 5
cache_write_1h = 8
cache_read = 0.4
source = "local"
source_date = "2027-01"
"""


def test_user_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    t = load_price_table(path)
    assert t.version == "test-1"
    assert set(t.models) == {"claude-x"}
    assert pico(t, "claude-x", "cache_read") == 400_000
    assert pico(t, "claude-x", "output", BATCH) == 10_000_000
    assert t.web_search_picousd_per_request() == 20_000_000_000
    # Overrides apply on top of a user file too.
    t2 = load_price_table(str(path), overrides={"claude-x": {"output": 21}})
    assert pico(t2, "claude-x", "output") == 21_000_000


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("version = [", "invalid TOML"),
        (MINIMAL.replace('version = "test-1"', ""), "version"),
        (MINIMAL.replace('source_date = "2027-01"', ""), "source_date"),
        (MINIMAL.replace("cache_read = 0.4", "cache_read = -0.4"), "cache_read"),
        (MINIMAL.replace("[models.claude-x]", "[models.claude-x-20270101]"), "canonical"),
        (MINIMAL.replace("batch_multiplier", "batch_multiplyer"), "batch_multiplyer"),
        (MINIMAL.replace("output = 20", 'output = "20"'), "output"),
    ],
)
def test_bad_user_file(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PricingError, match=needle):
        load_price_table(path)


def test_missing_user_file(tmp_path: Path) -> None:
    with pytest.raises(PricingError, match="cannot read"):
        load_price_table(tmp_path / "nope.toml")
