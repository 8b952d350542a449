"""Providers (where to send, with which key, over one pooled client) and the wire adapters they speak.

One `Provider` per endpoint, one adapter per wire format (pydantic-ai keeps the same split):
an OpenAI-compatible provider passes bodies through, an Anthropic one translates. A `Deployment`
is a model bound to one provider with its upstream name, timeouts, weight, limits and cooldown,
everything resolved once at startup; a model has one deployment or several.
"""

from __future__ import annotations

import base64
import logging
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from .._catalog import ModelSpec
from .._config import Config, DeploymentConfig, ModelConfig, ProviderConfig
from .._config_server import Timeouts
from .._exceptions import ConfigError, UpstreamError
from .._urls import shown_url
from ..state import RateLimit
from ._anthropic import AnthropicAdapter
from ._defaults import KNOWN_PROVIDERS
from ._http import UpstreamPool, UpstreamRequest, escape_query
from ._openai import OpenAIAdapter
from ._wire import Usage

logger = logging.getLogger("switchman.gateway")

__all__ = ["Deployment", "Provider", "StreamTranslator", "WireAdapter", "build_deployments", "url_credentials"]


class StreamTranslator(Protocol):
    """Turns upstream stream events into client-bound OpenAI SSE bytes."""

    usage: Usage | None
    finished: bool
    chunks: int
    has_output: bool
    truncated: bool

    def feed(self, event: bytes) -> list[bytes]: ...
    def close(self) -> list[bytes]: ...


class WireAdapter(Protocol):
    """How to speak one wire format."""

    path: str

    def auth_headers(self, key: str | None) -> dict[str, str]: ...
    def encode(self, body: Mapping[str, Any], wire_model: str, *, stream: bool) -> bytes: ...
    def decode(self, content: bytes, model: str) -> tuple[bytes, Usage | None]: ...
    def stream(self, model: str, body: Mapping[str, Any]) -> StreamTranslator: ...
    def error(self, status: int, content: bytes, headers: Mapping[str, str], model: str) -> UpstreamError: ...
    def map_errors(self, model: str) -> AbstractContextManager[None]: ...


ADAPTERS: dict[str, type[OpenAIAdapter] | type[AnthropicAdapter]] = {
    "openai": OpenAIAdapter,
    "anthropic": AnthropicAdapter,
}


class Provider:
    """One upstream endpoint with its key and its own pool of keep-alive connections."""

    def __init__(self, name: str, config: ProviderConfig, key: str | None) -> None:
        self.name = name
        self.kind = config.kind
        self.base_url = config.base_url.rstrip("/")
        self.adapter: WireAdapter = ADAPTERS[config.kind]()
        self.has_key = bool(key)
        headers = {"content-type": "application/json", **self.adapter.auth_headers(key)}
        try:
            self.pool = UpstreamPool(self.base_url, headers)
        except ValueError:
            raise ConfigError(f"providers.{name}.base_url: not an http(s) URL: {shown_url(self.base_url)!r}") from None
        if "authorization" in headers and urllib.parse.urlsplit(self.base_url).username is not None:
            # aiohttp refuses to send both: every call would fail as an opaque "invalid upstream response".
            raise ConfigError(f"providers.{name}: base_url {shown_url(self.base_url)!r} has a user and password and "
                              f"{config.api_key_env} a key, and both would be the Authorization header; keep one")

    def __repr__(self) -> str:  # never the key, nor credentials written into the URL
        return f"Provider({self.name!r}, kind={self.kind!r}, base_url={shown_url(self.base_url)!r})"

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.pool.aclose()


@dataclass(frozen=True, slots=True)
class Deployment:
    """A model bound to one provider, with its timeouts, share, limits and cooldown resolved.

    `id` names it in the ledger, /health and the health board: the model's name when the model
    has one deployment, `<model>@<name>` when it lists several.
    """

    spec: ModelSpec
    provider: Provider
    connect_s: float
    first_byte_s: float
    total_s: float
    id: str
    wire_name: str
    weight: float = 1.0
    limit: RateLimit = RateLimit()
    cooldown_s: float | None = None

    @property
    def name(self) -> str:
        """The model's name in switchman."""
        return self.spec.name

    @property
    def adapter(self) -> WireAdapter:
        """The provider's wire adapter."""
        return self.provider.adapter

    def build_request(self, body: Mapping[str, Any], *, stream: bool) -> UpstreamRequest:
        """The upstream request for a (validated, OpenAI-format) chat body."""
        content = self.adapter.encode(body, self.wire_name, stream=stream)
        return self.provider.pool.request("POST", self.adapter.path, content)


def _provider_config(name: str, config: Config) -> ProviderConfig:
    if name in config.providers:
        return config.providers[name]
    known = KNOWN_PROVIDERS.get(name)
    if known is None:
        raise ConfigError(f"models refer to provider {name!r}, which is neither configured under 'providers' "
                          f"nor one switchman knows ({', '.join(sorted(KNOWN_PROVIDERS))})")
    return ProviderConfig(kind=known.kind, base_url=known.base_url, api_key_env=known.api_key_env)  # type: ignore[arg-type]


def _entries(name: str, spec: ModelSpec, model: ModelConfig | None) -> list[tuple[str, DeploymentConfig]]:
    """(id, settings) of each deployment of a model; a model without a `deployments` list has one, named as it."""
    if model is None or not model.deployments:
        single = DeploymentConfig(provider=spec.provider, rpm=model.rpm if model else None,
                                  tpm=model.tpm if model else None, cooldown_s=model.cooldown_s if model else None)
        return [(name, single)]
    return [(f"{name}@{d.name or d.provider}", d) for d in model.deployments]


def build_deployments(
    config: Config, specs: Mapping[str, ModelSpec], env: Mapping[str, str]
) -> tuple[dict[str, Provider], dict[str, tuple[Deployment, ...]]]:
    """Providers for every deployment's provider (keys read from `env` now) and each model's deployments."""
    providers: dict[str, Provider] = {}
    deployments: dict[str, tuple[Deployment, ...]] = {}
    for name, spec in specs.items():
        model = config.models.get(name)
        built = []
        for deployment_id, entry in _entries(name, spec, model):
            if entry.provider not in providers:
                pconf = _provider_config(entry.provider, config)
                key = env.get(pconf.api_key_env) if pconf.api_key_env else None
                # Else the first sign is each request's 401 from the provider; a key written into the base_url
                # (user:password@, ?api-key=...) is one, though.
                if pconf.api_key_env and not key and next(url_credentials(pconf.base_url), None) is None:
                    logger.warning("providers.%s: %s is not set, so its requests go out without a key (the provider "
                                   "will refuse them); export it where switchman runs", entry.provider,
                                   pconf.api_key_env)
                providers[entry.provider] = Provider(entry.provider, pconf, key)
            timeouts: Timeouts = entry.timeouts or (model.timeouts if model else None) or config.server.timeouts
            built.append(Deployment(
                spec, providers[entry.provider], timeouts.connect, timeouts.first_byte, timeouts.total,
                id=deployment_id, wire_name=entry.model or spec.wire_name, weight=entry.weight,
                limit=RateLimit(entry.rpm, entry.tpm), cooldown_s=entry.cooldown_s,
            ))
        deployments[name] = tuple(built)
    return providers, deployments


def provider_keys(config: Config, env: Mapping[str, str]) -> Iterator[str]:
    """Every secret the configuration points at (to scrub from anything switchman emits)."""
    names = {p.api_key_env for p in config.providers.values() if p.api_key_env}
    names |= {k.api_key_env for k in KNOWN_PROVIDERS.values()}
    names.add(config.server.master_key_env)
    names.add(config.dashboard.key_env)
    for name in names:
        value = env.get(name)
        if value:
            yield value
    # Only the providers' URLs: their credentials go upstream, where an answer may echo them. The ledger's and
    # Redis's passwords never leave switchman (its messages show those URLs through display_url), so they can
    # reach client-facing text only when the client wrote them itself; scrubbing them there would make every
    # error an oracle that tells a client whether its guess at a (often weak) password was right.
    for url in (p.base_url for p in config.providers.values()):
        if url:
            yield from url_credentials(url)


#: A configured URL's query parameter whose value `url_credentials` takes for a secret: any name holding one of these
#: (`subscriptionKey`, `AWSAccessKeyId`, `keyword`): the URL is the operator's, so redacting a harmless value costs
#: nothing, while missing a key leaks it. Text of unknown origin is held to `secret_query_name`'s whole words.
_LOOSE_SECRET_NAME = re.compile(r"key|token|secret|sig|pass|pwd|auth|cred|code")


def url_credentials(url: str) -> Iterator[str]:
    """The secrets written into a URL: its password (also as the Basic credential a client sends for it)
    and the values of query parameters that name a key, token or signature."""
    try:
        parts = urllib.parse.urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:  # e.g. an unclosed IPv6 bracket: no URL, refused when its provider is built
        return
    if password:
        yield password
        yield urllib.parse.unquote(password)
        plain = f"{urllib.parse.unquote(user or '')}:{urllib.parse.unquote(password)}"
        yield base64.b64encode(plain.encode()).decode()
    for item in parts.query.split("&"):
        name, _, raw = item.partition("=")
        if raw and _LOOSE_SECRET_NAME.search(urllib.parse.unquote_plus(name).lower()):
            # As written (the pool sends the query verbatim, so an upstream echoing its URL shows this form),
            # decoded both ways ('+' is a space in a form, a plus in a path) and re-encoded.
            value = urllib.parse.unquote_plus(raw)
            yield from (raw, escape_query(raw), value, urllib.parse.unquote(raw), urllib.parse.quote(value, safe=""))
