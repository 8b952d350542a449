"""The model catalog: genai-prices lookups and ModelSpec cost arithmetic."""

from __future__ import annotations

import pytest

from switchman import ModelSpec
from switchman._catalog import CatalogPrice, lookup_catalog_price


def test_known_model_has_positive_prices_and_its_context_window() -> None:
    found = lookup_catalog_price("gpt-4o-mini")
    assert isinstance(found, CatalogPrice)
    assert found.provider == "openai"
    assert found.model_id == "gpt-4o-mini"
    assert found.input_price > 0
    assert found.output_price > found.input_price  # output tokens cost more than input for every OpenAI chat model
    assert found.context_window == 128_000  # OpenAI's published window for gpt-4o-mini
    assert found.cached_input_price is not None and 0 < found.cached_input_price < found.input_price


def test_provider_hint_that_genai_prices_does_not_know_still_finds_the_model() -> None:
    # "local" is one of our provider ids, not genai-prices'; the lookup retries by name alone.
    assert lookup_catalog_price("gpt-4o-mini", "local") == lookup_catalog_price("gpt-4o-mini")
    assert lookup_catalog_price("gpt-4o-mini", "openai") == lookup_catalog_price("gpt-4o-mini")


@pytest.mark.parametrize("name", ["surely-not-a-real-model-7f3a", "my-company/private-finetune-v3"])
def test_unknown_model_is_none(name: str) -> None:
    assert lookup_catalog_price(name) is None
    assert lookup_catalog_price(name, "openai") is None


SPEC = ModelSpec(name="m", provider="p", input_price=2.0, output_price=8.0, cached_input_price=0.5)


def test_cost_without_cached_tokens() -> None:
    # 1,000 in × $2/M + 500 out × $8/M = $0.002 + $0.004
    assert SPEC.cost(1_000, 500) == pytest.approx(0.006)
    assert SPEC.cost(0, 0) == 0.0


def test_cost_with_cached_tokens_uses_the_cached_price() -> None:
    # 600 uncached × $2/M + 400 cached × $0.5/M + 500 out × $8/M = 0.0012 + 0.0002 + 0.004
    assert SPEC.cost(1_000, 500, cached_input_tokens=400) == pytest.approx(0.0054)


def test_cached_tokens_are_billed_at_the_input_price_when_no_cached_price_is_known() -> None:
    spec = ModelSpec(name="m", provider="p", input_price=2.0, output_price=8.0)
    assert spec.cost(1_000, 500, cached_input_tokens=400) == pytest.approx(spec.cost(1_000, 500)) == pytest.approx(0.006)


def test_cached_tokens_beyond_the_input_never_make_uncached_input_negative() -> None:
    # all 1,000 input tokens cached (and a bogus extra 200): 1,200 × $0.5/M + 0 uncached
    assert SPEC.cost(1_000, 0, cached_input_tokens=1_200) == pytest.approx(0.0006)


def test_with_overrides_ignores_none_and_wire_name_prefers_upstream() -> None:
    changed = SPEC.with_overrides(input_price=3.0, output_price=None, upstream_model="vendor/m-2024")
    assert (changed.input_price, changed.output_price) == (3.0, 8.0)
    assert changed.wire_name == "vendor/m-2024"
    assert SPEC.wire_name == "m"
    assert SPEC.input_price == 2.0  # frozen original untouched
