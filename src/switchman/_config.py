"""YAML configuration → validated settings.

The file has four sections::

    providers:            # where to send calls (OpenAI-compatible or Anthropic), which key variable
      openai: {base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY}
    models:               # the catalog; prices/context from genai-prices unless given here
      gpt-4o-mini: {provider: openai, capabilities: [tools, json, vision]}
      gpt-4o:               # several deployments of one model, balanced (see DeploymentConfig)
        deployments: [{provider: openai, weight: 3}, {provider: azure-east, model: gpt-4o-prod, rpm: 600}]
    routes:               # name → candidates, strategy, target
      default: {candidates: [gpt-4o-mini, gpt-4o], strategy: learned, router: router.safetensors}
    agents:               # name → route or pinned model, rules, allow/deny lists
      triage: {model: gpt-4o-mini}

Errors name the file, the key path and what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from ._catalog import Capability, ModelSpec, lookup_catalog_price
from ._config_hints import did_you_mean, format_validation_error
from ._config_server import ServerConfig, Timeouts, check_redis_url
from ._config_server import Strict as _Strict
from ._exceptions import ConfigError

__all__ = [  # not the server section's names: import those from _config_server (ServerLimits from _limits)
    "AgentConfig",
    "BalancePolicy",
    "BudgetConfig",
    "CacheConfig",
    "CascadeOptions",
    "Config",
    "DeploymentConfig",
    "DashboardConfig",
    "ModelConfig",
    "OnlineOptions",
    "ProviderConfig",
    "RouteConfig",
    "RuleConfig",
    "RuleMatch",
    "SessionConfig",
    "StrategyName",
    "load_config",
    "parse_config",
]

StrategyName = Literal["fixed", "rules", "cheapest", "random", "learned", "cascade"]
BalancePolicy = Literal["weighted", "least_busy", "latency", "usage"]
CheckName = Literal["json", "tool_args", "logprobs", "acceptance"]
DEFAULT_CHECKS: tuple[CheckName, ...] = ("json", "tool_args", "logprobs")


class ProviderConfig(_Strict):
    """An upstream endpoint and the environment variable that holds its key."""

    kind: Literal["openai", "anthropic"] = "openai"
    base_url: str
    api_key_env: str | None = None


class BudgetConfig(_Strict):
    """A spending limit on one agent, virtual key or route."""

    scope: Literal["agent", "key", "route"]
    name: str
    usd: float = Field(gt=0)
    period: Literal["day", "month"] = "day"
    on_exceed: Literal["reject", "downgrade"] = "reject"
    downgrade_to: str | None = None


class DeploymentConfig(_Strict):
    """One place a model is served: a provider (endpoint and key), the name it goes by there, its share and limits.

        deployments:
          - {provider: openai, weight: 3, rpm: 500, tpm: 300000}
          - {name: east, provider: azure-east, model: gpt-4o-prod, weight: 1, cooldown_s: 60}

    `name` (default: the provider's name) must be unique within the model; the deployment's id,
    used in the ledger, /health and metrics, is `<model>@<name>`. `rpm`/`tpm` are this deployment's
    own limits (requests and tokens per minute); `cooldown_s` overrides the circuit breaker's.
    """

    name: str | None = None
    provider: str
    model: str | None = Field(default=None, description="name sent upstream, when it differs from the model's")
    weight: float = Field(default=1.0, gt=0)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    cooldown_s: float | None = Field(default=None, gt=0)
    timeouts: Timeouts | None = None


class ModelConfig(_Strict):
    """A model entry; any field left out comes from genai-prices.

    One deployment (`provider`, optional `rpm`/`tpm`/`cooldown_s`) or several (`deployments`,
    chosen among by `balance`); prices, context window and capabilities belong to the model.
    """

    provider: str | None = None
    model: str | None = Field(default=None, description="name sent upstream, when it differs from the key")
    deployments: list[DeploymentConfig] | None = Field(default=None, min_length=1)
    balance: BalancePolicy = Field(default="weighted", description="how a deployment is chosen among several")
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    cooldown_s: float | None = Field(default=None, gt=0)
    input_price: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    output_price: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    cached_input_price: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    context_window: int | None = Field(default=None, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0, description="what one answer can be at most")
    capabilities: list[Capability] | None = None
    ttft_ms: float | None = Field(default=None, ge=0)
    output_tokens_per_s: float | None = Field(default=None, gt=0)
    timeouts: Timeouts | None = None
    score: float | None = Field(
        default=None, description="ability on the LMArena style-controlled scale, for learned routes (e.g. 1250)")
    score_name: str | None = Field(default=None, description="the model's name in the public score table")

    @model_validator(mode="after")
    def _one_or_several_deployments(self) -> ModelConfig:
        if self.deployments is None:
            if self.provider is None:
                raise ValueError("give 'provider' (one deployment) or 'deployments' (several)")
            return self
        if self.provider is not None:
            raise ValueError("give 'provider' or 'deployments', not both (set each deployment's provider)")
        own = [k for k in ("rpm", "tpm", "cooldown_s") if getattr(self, k) is not None]
        if own:
            raise ValueError(f"with 'deployments', set {', '.join(own)} on each deployment")
        names = [d.name or d.provider for d in self.deployments]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"deployments named {twice} more than once; give each a distinct 'name'")
        return self

    @property
    def primary_provider(self) -> str:
        """The provider of the one deployment, or of the first of several (prices are looked up there)."""
        if self.deployments:
            return self.deployments[0].provider
        assert self.provider is not None
        return self.provider


class RuleMatch(_Strict):
    """Conditions of one rule; every condition given must hold."""

    agent: str | list[str] | None = None
    task: str | list[str] | None = None
    tags: list[str] | None = Field(default=None, description="any of these tags")
    min_input_tokens: int | None = Field(default=None, ge=0)
    max_input_tokens: int | None = Field(default=None, ge=0)
    tools: bool | None = None
    images: bool | None = None
    code: bool | None = None


class RuleConfig(_Strict):
    """If the request matches, send it to `model`."""

    match: RuleMatch = Field(default_factory=RuleMatch, alias="when")
    model: str

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class OnlineOptions(_Strict):
    """Shift a learned route's traffic as feedback arrives (Thompson sampling per prompt cluster).

        online: {enabled: true, exploration: 0.05}

    `exploration` is the floor: every candidate keeps at least this share of each cluster's traffic.
    """

    enabled: bool = False
    exploration: float = Field(default=0.05, ge=0, le=1)
    clusters: int = Field(default=8, ge=1)
    prior_strength: float = Field(default=2.0, ge=0, description="pseudo-feedback the trained prior is worth")
    tolerance: float = Field(default=0.0, ge=0, le=1, description="take the cheapest within this of the best draw")


class CascadeOptions(_Strict):
    """How a `strategy: cascade` route climbs: which rungs, how many attempts, which checks.

        cascade: {checks: [json, tool_args, acceptance], min_acceptance: 0.7, max_attempts: 3}

    Without `ladder`, rungs are the candidates by predicted cost (the route's `router` predicts
    quality and cost when given; else catalog prices). `acceptance` needs the route's `router`.
    """

    ladder: list[str] | None = Field(default=None, description="explicit rung order (route candidates)")
    max_attempts: int = Field(default=3, ge=1)
    adequate: float = Field(default=0.0, ge=0, le=1, description="skip rungs predicted below this share of the best")
    checks: list[CheckName] = Field(default_factory=lambda: list(DEFAULT_CHECKS))
    min_acceptance: float = Field(default=0.5, description="acceptance check: predicted quality threshold")
    min_mean_logprob: float | None = -1.0
    min_token_logprob: float | None = None


class RouteConfig(_Strict):
    """A named route: the candidates it may use and how it chooses between them."""

    candidates: list[str] = Field(min_length=1)
    strategy: StrategyName = "cheapest"
    model: str | None = Field(default=None, description="the model for the fixed strategy")
    rules: list[RuleConfig] = Field(default_factory=list)
    default: str | None = Field(default=None, description="the rules strategy's model when no rule matches")
    router: str | None = Field(
        default=None, description="trained router file for the learned strategy; default: the bundled router")
    aliases: dict[str, str] = Field(default_factory=dict, description="trained model name → configured name")
    target: str | None = Field(default=None, description="calibration target, e.g. quality=0.95")
    knob: float | None = Field(default=None, description="override the router's calibrated knob")
    fallbacks: list[str] = Field(default_factory=list)
    content_policy_fallback: str | None = None
    max_ttft_ms: float | None = Field(default=None, gt=0)
    seed: int = 0
    cascade: CascadeOptions = Field(default_factory=CascadeOptions)
    shadow: str | None = Field(default=None, description="router file decided off the request path and logged")
    online: OnlineOptions | None = None
    max_price_usd: float | None = Field(default=None, gt=0, description="drop candidates estimated above this per request")
    cache: bool = Field(default=True, description="false: the response cache is never used on this route")
    baseline: str | None = Field(
        default=None, description="the model savings are measured against (default: the dearest candidate)")

    @model_validator(mode="after")
    def _check_strategy_fields(self) -> RouteConfig:
        if self.strategy == "fixed" and self.model is None:
            raise ValueError("strategy 'fixed' needs 'model'")
        if self.strategy == "rules" and not self.rules and self.default is None:
            raise ValueError("strategy 'rules' needs 'rules' or 'default'")
        if self.strategy == "cascade" and "acceptance" in self.cascade.checks and self.router is None:
            raise ValueError("the cascade's 'acceptance' check needs 'router' (a file written by `switchman train`)")
        if self.cascade.ladder is not None and set(self.cascade.ladder) - set(self.candidates):
            raise ValueError(f"cascade.ladder: {sorted(set(self.cascade.ladder) - set(self.candidates))} "
                             "are not among the route's candidates")
        if self.online is not None and self.online.enabled and self.strategy != "learned":
            raise ValueError("'online' needs strategy 'learned' (its router's clusters and prior)")
        return self


class AgentConfig(_Strict):
    """Per-agent policy: a route or a pinned model, rules, allow/deny lists."""

    route: str | None = None
    model: str | None = None
    rules: list[RuleConfig] = Field(default_factory=list)
    allow: list[str] | None = None
    deny: list[str] = Field(default_factory=list)
    max_price_usd: float | None = Field(default=None, gt=0, description="drop candidates estimated above this per request")
    rpm: int | None = Field(default=None, gt=0, description="requests per minute this agent may send")
    tpm: int | None = Field(default=None, gt=0, description="tokens per minute (prompt + max_tokens) it may send")

    @model_validator(mode="after")
    def _route_or_model(self) -> AgentConfig:
        if self.route is not None and self.model is not None:
            raise ValueError("give 'route' or 'model', not both")
        return self


class SessionConfig(_Strict):
    """How requests sharing a session id keep, escalate or (optionally) downgrade their model.

        sessions: {ttl_s: 1800, escalate_only: true, value_per_quality_point_usd: 1.0}

    A switch loses the provider's prompt cache; it happens only when its expected benefit pays for
    the uncached re-read of the conversation (see `switchman.routing._sessions`).
    """

    ttl_s: float = Field(default=1800.0, gt=0, description="a session idle this long starts afresh")
    escalate_only: bool = True
    value_per_quality_point_usd: float = Field(
        default=1.0, ge=0, description="USD one turn's +1.0 of predicted quality (0..1 scale) is worth")
    expected_remaining_turns: float = Field(default=5.0, ge=0, description="turns a downgrade's saving is counted over")
    negative_feedback_below: float = Field(default=0.5, ge=0, le=1, description="feedback scores below this escalate")
    max_sessions: int = Field(default=100_000, gt=0, description="in-memory store: oldest sessions evicted beyond this")


class CacheConfig(_Strict):
    """The exact-match response cache (off unless `enabled`).

        cache: {enabled: true, ttl_s: 3600, max_bytes: 67108864}
        cache: {enabled: true, backend: redis, redis_url: redis://127.0.0.1:6379/0}

    A request is answered from the cache only when it asks for determinism (`temperature: 0`) or
    opts in (`X-Switchman-Cache: on`); `X-Switchman-Cache: off` or a route's `cache: false` opts
    out. Entries are kept per virtual key unless `shared_across_keys`. The memory backend evicts
    the least recently used entry beyond `max_entries` or `max_bytes`; Redis bounds memory by its
    own `maxmemory` policy, with every entry expiring after `ttl_s`.
    """

    enabled: bool = False
    backend: Literal["memory", "redis"] = "memory"
    ttl_s: float = Field(default=3600.0, gt=0)
    max_entries: int = Field(default=10_000, gt=0)
    max_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_entry_bytes: int = Field(default=1024 * 1024, gt=0, description="larger answers are not cached")
    shared_across_keys: bool = False
    redis_url: str | None = None
    key_prefix: str = "switchman:cache:"
    timeout_s: float = Field(default=0.1, gt=0, description="a Redis call slower than this counts as a miss")

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str | None) -> str | None:
        return check_redis_url(url)

    @model_validator(mode="after")
    def _redis_needs_url(self) -> CacheConfig:
        if self.backend == "redis" and not self.redis_url:
            raise ValueError("backend 'redis' needs 'redis_url' (e.g. redis://127.0.0.1:6379/0)")
        return self


class DashboardConfig(_Strict):
    """The web dashboard `switchman serve` mounts at /ui.

        dashboard: {key_env: SWITCHMAN_DASHBOARD_KEY, eval_reports: {default: runs/rb.json}}

    Logging in takes the master key (read-write: keys) or the key in `key_env` (read-only).
    `eval_reports` maps a route to the JSON of `switchman eval --json`, drawn on the routers page.
    """

    enabled: bool = True
    key_env: str = "SWITCHMAN_DASHBOARD_KEY"
    session_ttl_s: float = Field(default=12 * 3600.0, gt=0, description="how long a login lasts")
    eval_reports: dict[str, str] = Field(default_factory=dict)


class Config(_Strict):
    """The whole validated configuration."""

    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    agents: dict[str, AgentConfig] = Field(default_factory=dict)
    default_route: str | None = None
    server: ServerConfig = Field(default_factory=ServerConfig)
    budgets: list[BudgetConfig] = Field(default_factory=list)
    sessions: SessionConfig = Field(default_factory=SessionConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    scores: str | None = Field(
        default=None, description="a public-score CSV newer than the bundled LMArena table (model, score, ...)")

    @field_validator("models")
    @classmethod
    def _nonempty_names(cls, models: dict[str, ModelConfig]) -> dict[str, ModelConfig]:
        for name in models:
            if not name.strip():
                raise ValueError("model names must not be empty")
        return models

    def _unknown_model(self, name: str) -> str:
        """Why a name is not a model here, and what is: the near name, the models, the providers to add it with."""
        models = ", ".join(sorted(self.models)) or "none"
        providers = ", ".join(sorted(self.providers)) or "none configured"
        return (f"unknown model {name!r}{did_you_mean(name, self.models)}; configured models: {models}; "
                f"to add it, put it under 'models' with one of the providers ({providers})")

    def _unknown_provider(self, name: str) -> str:
        return (f"unknown provider {name!r}{did_you_mean(name, self.providers)}; configured providers: "
                f"{', '.join(sorted(self.providers))}")

    @model_validator(mode="after")
    def _check_references(self) -> Config:
        problems: list[str] = []
        for name, model in self.models.items():
            if not self.providers:
                continue
            if model.provider is not None and model.provider not in self.providers:
                problems.append(f"models.{name}.provider: {self._unknown_provider(model.provider)}")
            for i, deployment in enumerate(model.deployments or ()):
                if deployment.provider not in self.providers:
                    problems.append(f"models.{name}.deployments.{i}.provider: "
                                    f"{self._unknown_provider(deployment.provider)}")
        known = set(self.models)
        for route_name, route in self.routes.items():
            where = f"routes.{route_name}"
            for i, cand in enumerate(route.candidates):
                if cand not in known:
                    problems.append(f"{where}.candidates.{i}: {self._unknown_model(cand)}")
            for key, value in (("model", route.model), ("default", route.default)):
                if value is not None and value not in route.candidates:
                    problems.append(f"{where}.{key}: {value!r} is not one of the route's candidates")
            for i, rule in enumerate(route.rules):
                if rule.model not in route.candidates:
                    problems.append(f"{where}.rules.{i}.model: {rule.model!r} is not one of the route's candidates")
            for i, fb in enumerate(route.fallbacks):
                if fb not in known:
                    problems.append(f"{where}.fallbacks.{i}: {self._unknown_model(fb)}")
            if route.baseline is not None and route.baseline not in known:
                problems.append(f"{where}.baseline: {self._unknown_model(route.baseline)}")
        for agent_name, agent in self.agents.items():
            where = f"agents.{agent_name}"
            if agent.route is not None and agent.route not in self.routes:
                problems.append(f"{where}.route: unknown route {agent.route!r}{did_you_mean(agent.route, self.routes)}"
                                f"; configured routes: {', '.join(sorted(self.routes)) or 'none'}")
            if agent.model is not None and agent.model not in known:
                problems.append(f"{where}.model: {self._unknown_model(agent.model)}")
            for i, rule in enumerate(agent.rules):
                if rule.model not in known:
                    problems.append(f"{where}.rules.{i}.model: {self._unknown_model(rule.model)}")
            for key, names in (("allow", agent.allow or []), ("deny", agent.deny)):
                for i, n in enumerate(names):
                    if n not in known:
                        problems.append(f"{where}.{key}.{i}: {self._unknown_model(n)}")
        for i, budget in enumerate(self.budgets):
            if budget.downgrade_to is not None and budget.downgrade_to not in known:
                problems.append(f"budgets.{i}.downgrade_to: {self._unknown_model(budget.downgrade_to)}")
            if budget.scope == "route" and budget.name not in self.routes:
                problems.append(f"budgets.{i}.name: unknown route {budget.name!r}")
        for route_name, route in self.routes.items():
            cpf = route.content_policy_fallback
            if cpf is not None and cpf not in known:
                problems.append(f"routes.{route_name}.content_policy_fallback: {self._unknown_model(cpf)}")
        for route_name in self.dashboard.eval_reports:
            if route_name not in self.routes:
                problems.append(f"dashboard.eval_reports.{route_name}: unknown route {route_name!r}"
                                f"{did_you_mean(route_name, self.routes)}")
        if self.default_route is not None and self.default_route not in self.routes:
            problems.append(f"default_route: unknown route {self.default_route!r}")
        if problems:
            raise ValueError("\n".join(problems))  # one line each, each naming its key path
        return self

    @property
    def default_route_name(self) -> str | None:
        """The route `model="auto"` uses: `default_route`, else a route named 'default', else the first."""
        if self.default_route:
            return self.default_route
        if "default" in self.routes:
            return "default"
        return next(iter(self.routes), None)

    def model_specs(self, *, source: str = "<config>") -> dict[str, ModelSpec]:
        """Resolve every model to a ModelSpec, filling gaps from genai-prices."""
        return {name: resolve_model(name, cfg, source=source) for name, cfg in self.models.items()}


def resolve_model(name: str, cfg: ModelConfig, *, source: str = "<config>") -> ModelSpec:
    """One model's spec: config fields first, then genai-prices; no price from either is an error."""
    first = cfg.deployments[0] if cfg.deployments else None
    upstream = cfg.model or (first.model if first is not None else None) or name
    known = lookup_catalog_price(upstream, cfg.primary_provider)
    input_price = cfg.input_price if cfg.input_price is not None else (known.input_price if known else None)
    output_price = cfg.output_price if cfg.output_price is not None else (known.output_price if known else None)
    if input_price is None or output_price is None:
        raise ConfigError(
            f"{source}: models.{name}: no price for model {upstream!r}: genai-prices does not know it; "
            "set input_price and output_price (USD per 1M tokens)"
        )
    cached = cfg.cached_input_price
    if cached is None and known is not None and cfg.input_price is None:
        cached = known.cached_input_price
    return ModelSpec(
        name=name,
        provider=cfg.primary_provider,
        input_price=input_price,
        output_price=output_price,
        cached_input_price=cached,
        context_window=cfg.context_window or (known.context_window if known else None),
        max_output_tokens=cfg.max_output_tokens,
        capabilities=frozenset(cfg.capabilities) if cfg.capabilities is not None else frozenset({"tools", "json"}),
        ttft_ms=cfg.ttft_ms,
        output_tokens_per_s=cfg.output_tokens_per_s,
        upstream_model=cfg.model,
    )


def parse_config(data: Any, *, source: str = "<config>") -> Config:
    """Validate an already-parsed mapping; errors name the source, key path and problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, not {type(data).__name__}")
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, root=Config)) from None
    config.model_specs(source=source)  # fail now, naming the model, rather than at the first request
    return config


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML configuration file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:  # a directory, no permission, ...: one line, not a traceback
        raise ConfigError(f"{path}: cannot read the configuration file ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_config(data, source=str(path))
