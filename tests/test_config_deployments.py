"""Configuration of deployments, live latency and the response cache: what loads, and errors that say how to fix it."""

from __future__ import annotations

from typing import Any

import pytest

from switchman import ConfigError
from switchman._config import parse_config

PROVIDERS = {"openai": {"base_url": "https://api.openai.com/v1"}, "azure": {"base_url": "https://a.example.com/v1"}}


def model(**fields: Any) -> dict[str, Any]:
    return {"providers": PROVIDERS, "models": {"gpt-4o": fields}}


def test_one_deployment_is_unchanged_in_meaning() -> None:
    config = parse_config(model(provider="openai", model="gpt-4o-2024-08-06"))
    entry = config.models["gpt-4o"]
    assert entry.deployments is None and entry.primary_provider == "openai" and entry.balance == "weighted"
    spec = config.model_specs()["gpt-4o"]
    assert (spec.provider, spec.wire_name) == ("openai", "gpt-4o-2024-08-06")
    assert spec.input_price > 0  # priced from genai-prices, as before


def test_several_deployments_are_priced_from_the_first() -> None:
    config = parse_config(model(balance="latency", deployments=[
        {"provider": "openai"}, {"provider": "azure", "model": "gpt-4o-prod", "weight": 2, "rpm": 10}]))
    spec = config.model_specs()["gpt-4o"]
    assert spec.provider == "openai" and spec.input_price > 0
    assert config.models["gpt-4o"].deployments is not None and config.models["gpt-4o"].deployments[1].weight == 2


@pytest.mark.parametrize(("fields", "message"), [
    ({}, "give 'provider' (one deployment) or 'deployments' (several)"),
    ({"provider": "openai", "deployments": [{"provider": "azure"}]}, "give 'provider' or 'deployments', not both"),
    ({"deployments": []}, "at least 1 item"),
    ({"deployments": [{"provider": "openai"}, {"provider": "openai"}]},
     "deployments named ['openai'] more than once; give each a distinct 'name'"),
    ({"deployments": [{"provider": "openai"}], "rpm": 5}, "with 'deployments', set rpm on each deployment"),
    ({"deployments": [{"provider": "openai", "weight": 0}]}, "greater than 0"),
    ({"deployments": [{"provider": "nowhere"}]}, "models.gpt-4o.deployments.0.provider: unknown provider 'nowhere'"),
    ({"provider": "openai", "balance": "round_robin"}, "'weighted', 'least_busy', 'latency' or 'usage'"),
])
def test_deployment_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(model(**fields), source="switchman.yaml")
    assert message in str(error.value) and "switchman.yaml" in str(error.value)


def test_cache_and_live_latency_settings() -> None:
    config = parse_config({"cache": {"enabled": True, "ttl_s": 60}, "server": {"live_latency": {"reprobe_s": 5}},
                           "models": {"m": {"provider": "openai", "input_price": 1, "output_price": 1}},
                           "routes": {"r": {"candidates": ["m"], "cache": False}}})
    assert config.cache.enabled and config.cache.backend == "memory" and not config.cache.shared_across_keys
    assert config.server.live_latency.reprobe_s == 5 and config.server.live_latency.half_life_s == 5
    assert config.routes["r"].cache is False
    assert parse_config({}).cache.enabled is False
    with pytest.raises(ConfigError, match="backend 'redis' needs 'redis_url'"):
        parse_config({"cache": {"enabled": True, "backend": "redis"}})
