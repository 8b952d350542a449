"""The configuration `switchman serve` runs on when given none, and `switchman init` writes.

Every provider whose key variable is set contributes its models; the default route picks the
cheapest capable one among them. The local model (the `local` extra) has its own route `auto:local`
and serves the default route only when no hosted provider is configured. Models genai-prices cannot price are left out (a router that cannot price a
model cannot tell whether routing to it saves money).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._catalog import lookup_catalog_price
from .._config import Config, parse_config
from .._environ import Environment

__all__ = ["KNOWN_PROVIDERS", "KnownProvider", "default_config", "default_config_data", "local_models"]


@dataclass(frozen=True, slots=True)
class KnownProvider:
    """A provider switchman knows how to reach without configuration."""

    kind: str
    base_url: str
    api_key_env: str
    models: tuple[tuple[str, tuple[str, ...]], ...]


#: Provider name → where it is, its key variable and the models the defaults offer (with capabilities).
KNOWN_PROVIDERS: dict[str, KnownProvider] = {
    "openai": KnownProvider("openai", "https://api.openai.com/v1", "OPENAI_API_KEY", (
        ("gpt-4o-mini", ("tools", "json", "vision")), ("gpt-4o", ("tools", "json", "vision")))),
    "anthropic": KnownProvider("anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY", (
        ("claude-3-5-haiku-latest", ("tools", "json", "vision")),
        ("claude-sonnet-4-5", ("tools", "json", "vision", "reasoning")))),
    "deepseek": KnownProvider("openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", (
        ("deepseek-chat", ("tools", "json")),)),
    "groq": KnownProvider("openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY", (
        ("llama-3.1-8b-instant", ("tools", "json")),)),
    "together": KnownProvider("openai", "https://api.together.xyz/v1", "TOGETHER_API_KEY", (
        ("meta-llama/Llama-3.3-70B-Instruct-Turbo", ("tools", "json")),)),
    "openrouter": KnownProvider("openai", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", (
        ("openai/gpt-4o-mini", ("tools", "json", "vision")),)),
}


def local_models() -> list[dict[str, Any]]:
    """Model entries for the local tier (`switchman[local]`): provider config and models, when installed.

    Each item is {"provider": name, "provider_config": {...}, "models": {name: model config}}.
    Empty unless xllamacpp and the SmolLM2 weights are installed (`switchman local install`).
    """
    from ..local import LOCAL_PROVIDER, local_available, local_model_config

    if not local_available():
        return []
    entries = local_model_config()
    return [{"provider": LOCAL_PROVIDER, "provider_config": entries["providers"][LOCAL_PROVIDER],
             "models": entries["models"]}]


def default_config(env: Mapping[str, str] | None = None) -> Config:
    """The embedded configuration for this environment (default: the process's)."""
    return parse_config(default_config_data(Environment.read() if env is None else env), source="<embedded defaults>")


def default_config_data(env: Mapping[str, str]) -> dict[str, Any]:
    """The embedded configuration for this environment, shaped like the YAML file."""
    providers: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for name, known in KNOWN_PROVIDERS.items():
        if not env.get(known.api_key_env):
            continue
        offered = {
            model: {"provider": name, "capabilities": list(caps)}
            for model, caps in known.models
            if lookup_catalog_price(model, name) is not None
        }
        if offered:
            providers[name] = {"kind": known.kind, "base_url": known.base_url, "api_key_env": known.api_key_env}
            models.update(offered)
    hosted = list(models)
    local_names: list[str] = []
    for local in local_models():
        providers[local["provider"]] = local["provider_config"]
        models.update(local["models"])
        local_names += list(local["models"])
    config: dict[str, Any] = {"providers": providers, "models": models}
    routes: dict[str, Any] = {}
    # The 135M local model costs nothing, so a cheapest route would send it everything: it serves
    # the default route only when no hosted provider is configured, and always answers `auto:local`.
    if hosted or local_names:
        routes["default"] = {"candidates": hosted or local_names, "strategy": "cheapest"}
    if local_names:
        routes["local"] = {"candidates": local_names, "strategy": "cheapest"}
    if routes:
        config["routes"] = routes
    return config
