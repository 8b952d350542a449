"""The model catalog: what each model costs, how much it reads, what it can do.

Prices and context windows come from the `genai-prices` catalog when it knows the model; the
configuration may override any field. A model with no price from either is a configuration error,
because a router that cannot price a model cannot tell whether routing to it saves money.
"""

from __future__ import annotations

import datetime as _dt
import functools
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal

__all__ = ["CAPABILITIES", "Capability", "CatalogPrice", "ModelSpec", "lookup_catalog_price"]

Capability = Literal["tools", "vision", "json", "reasoning"]
CAPABILITIES: tuple[Capability, ...] = ("tools", "vision", "json", "reasoning")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model a route can send requests to.

    Prices are USD per 1M tokens. `upstream_model` is the name sent to the provider when it differs
    from `name`, the name clients and routes use.
    """

    name: str
    provider: str
    input_price: float
    output_price: float
    cached_input_price: float | None = None
    context_window: int | None = None
    capabilities: frozenset[Capability] = field(default_factory=lambda: frozenset({"tools", "json"}))
    ttft_ms: float | None = None
    output_tokens_per_s: float | None = None
    upstream_model: str | None = None
    max_output_tokens: int | None = None

    @property
    def wire_name(self) -> str:
        """The model name the provider expects."""
        return self.upstream_model or self.name

    def cost(self, input_tokens: float, output_tokens: float, cached_input_tokens: float = 0.0) -> float:
        """USD cost of one call; cached input is billed at the cached price where one is known."""
        cached_price = self.input_price if self.cached_input_price is None else self.cached_input_price
        uncached = input_tokens - cached_input_tokens
        if 0.0 > uncached:  # max(uncached, 0.0), without the builtin's argument parsing (~7 calls a request)
            uncached = 0.0
        return (
            uncached * self.input_price + cached_input_tokens * cached_price + output_tokens * self.output_price
        ) / 1e6

    def with_overrides(self, **changes: Any) -> ModelSpec:
        """A copy with some fields replaced (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True, slots=True)
class CatalogPrice:
    """What genai-prices knows about one model."""

    provider: str
    model_id: str
    input_price: float
    output_price: float
    cached_input_price: float | None
    context_window: int | None


def _as_float(price: Any) -> float | None:
    """A genai-prices price as a float; tiered prices give their base (first-tier) price."""
    if price is None:
        return None
    if isinstance(price, Decimal | int | float):
        return float(price)
    base = getattr(price, "base", None)
    return float(base) if base is not None else None


@functools.lru_cache(maxsize=1024)
def lookup_catalog_price(model: str, provider: str | None = None) -> CatalogPrice | None:
    """Find a model in the bundled genai-prices snapshot (no network); None when it is unknown."""
    from genai_prices.data_snapshot import get_snapshot

    snapshot = get_snapshot()
    try:
        found_provider, info = snapshot.find_provider_model(model, None, provider, None)
    except LookupError:
        if provider is None:
            return None
        try:  # the provider id may be one of ours (e.g. "local"): retry by model name alone
            found_provider, info = snapshot.find_provider_model(model, None, None, None)
        except LookupError:
            return None
    prices = info.get_prices(_dt.datetime.now(_dt.UTC))
    input_price = _as_float(getattr(prices, "input_mtok", None))
    output_price = _as_float(getattr(prices, "output_mtok", None))
    if input_price is None or output_price is None:
        return None
    return CatalogPrice(
        provider=found_provider.id,
        model_id=info.id,
        input_price=input_price,
        output_price=output_price,
        cached_input_price=_as_float(getattr(prices, "cache_read_mtok", None)),
        context_window=info.context_window,
    )
