"""Decider: the decision core assembled from a configuration (policy, agent rules, each route's strategy).

`Decider.from_config(path).route(messages, agent=..., tags=...)` returns a Decision without any
network call. The gateway's dispatcher holds one Decider and calls `decide` for every request; the
SDK's `Router` is a Decider that can also send the request (`switchman._router`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from ._catalog import ModelSpec
from ._config import AgentConfig, Config, RouteConfig, load_config, parse_config
from ._exceptions import ConfigError, PolicyDeniedError, UnknownModelError
from ._tokens import count_tokens_for_routing
from .routing import (
    CheapestStrategy,
    Decision,
    DecisionContext,
    FixedStrategy,
    RandomStrategy,
    RouteRequest,
    RulesStrategy,
    Strategy,
    estimated_cost,
    filter_candidates,
    prefer_live,
    resolve_task,
    rule_matches,
    task_of,
)

if TYPE_CHECKING:
    from .learn import LearnedStrategy, ModelProfile, ScoreTable, TrainedRouter

__all__ = ["STRATEGIES", "Decider", "RouteContext", "build_strategy"]


@dataclass(frozen=True)
class RouteContext:
    """What building a route's strategy needs besides the route: where its files are and the model catalog."""

    name: str
    base_dir: Path
    config: Config
    models: Mapping[str, ModelSpec]


def _router_file(route: RouteConfig, base_dir: Path) -> TrainedRouter:
    from .learn import BUNDLED, TrainedRouter, bundled_router

    if route.router is None or route.router == BUNDLED:
        return bundled_router()
    path = Path(route.router)
    return TrainedRouter.load(path if path.is_absolute() else base_dir / path)


def _score_table(config: Config, base_dir: Path) -> ScoreTable:
    from .learn import ScoreTable

    if config.scores is None:
        return ScoreTable.bundled()
    path = Path(config.scores)
    return ScoreTable.from_csv(path if path.is_absolute() else base_dir / path)


def learned_strategy(route: RouteConfig, ctx: RouteContext, *, require: bool = True) -> LearnedStrategy:
    """The route's learned strategy: its router (the bundled one by default), each candidate placed, the knob
    calibrated for these candidates. With `require`, a candidate that cannot be placed is a ConfigError."""
    from .learn import Knob, LearnedStrategy, get_embedder, parse_target, profiles_for, require_placed, route_knob

    trained = _router_file(route, ctx.base_dir)
    if route.aliases:
        trained = trained.with_aliases(route.aliases)
    table = _score_table(ctx.config, ctx.base_dir)
    models = ctx.config.models
    profiles = profiles_for(
        route.candidates, router=trained, table=table,
        config_scores={n: models[n].score for n in route.candidates if n in models},
        score_names={n: models[n].score_name for n in route.candidates if n in models},
        upstream={n: models[n].model for n in route.candidates if n in models},
    )
    if require:
        require_placed(profiles, where=f"routes.{ctx.name}", table=table, trained=trained.model_names)
    placed = [p for p in profiles if p.placed]
    if route.knob is not None:
        knob = Knob(route.knob)
    elif route.target is None and {p.name for p in placed} == set(trained.model_names):
        knob = trained.knob  # calibrated on these very models' outcomes
    else:
        targets = [parse_target(t) for t in (route.target or trained.target or "quality=0.95").split(",")]
        knob = route_knob(trained, placed, [ctx.models[p.name] for p in placed], targets).knob
    return LearnedStrategy(trained, get_embedder(trained.embedder), knob=knob, profiles=placed)


def _learned(route: RouteConfig, ctx: RouteContext) -> Strategy:
    learned = learned_strategy(route, ctx)
    if route.online is not None and route.online.enabled:
        from .learn import OnlineStrategy

        return OnlineStrategy(learned, route.online)
    return learned


def _cascade(route: RouteConfig, ctx: RouteContext) -> Strategy:
    from .routing import AcceptanceCheck, CascadeStrategy, Check, JsonCheck, LogprobCheck, ToolArgsCheck

    options = route.cascade
    built: dict[str, Check] = {
        "json": JsonCheck(),
        "tool_args": ToolArgsCheck(),
        "logprobs": LogprobCheck(options.min_mean_logprob, options.min_token_logprob),
        "acceptance": AcceptanceCheck(options.min_acceptance),
    }
    scorer = _learned(route, ctx) if route.router is not None else None
    return CascadeStrategy(
        checks=tuple(built[name] for name in options.checks), scorer=scorer, max_attempts=options.max_attempts,
        adequate=options.adequate, order=tuple(options.ladder) if options.ladder is not None else None,
    )


#: Strategy builders by name: the one place a strategy name becomes an object.
STRATEGIES: dict[str, Callable[[RouteConfig, RouteContext], Strategy]] = {
    "fixed": lambda route, _: FixedStrategy(route.model or route.candidates[0]),
    "rules": lambda route, _: RulesStrategy(tuple(route.rules), route.default),
    "cheapest": lambda route, _: CheapestStrategy(),
    "random": lambda route, _: RandomStrategy(),
    "learned": _learned,
    "cascade": _cascade,
}


def build_strategy(route: RouteConfig, ctx: RouteContext) -> Strategy:
    """The strategy a route configures (a learned one loads its router file and embedder)."""
    return STRATEGIES[route.strategy](route, ctx)


class Decider:
    """Routes requests according to a configuration; pure decisions, no provider calls."""

    def __init__(self, config: Config, *, base_dir: str | Path = ".", seed: int | None = None) -> None:
        self.config = config
        self.models: dict[str, ModelSpec] = config.model_specs()
        self._base_dir = Path(base_dir)
        self._strategies: dict[str, Strategy] = {}
        self._random = random.Random(seed)

    @classmethod
    def from_config(cls, path: str | Path, **kwargs: Any) -> Self:
        """Load a YAML configuration; relative router paths resolve against its folder."""
        path = Path(path)
        return cls(load_config(path), base_dir=path.parent, **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **kwargs: Any) -> Self:
        """Build from an in-memory mapping shaped like the YAML file."""
        return cls(parse_config(dict(data)), **kwargs)

    def strategy(self, route_name: str) -> Strategy:
        """The route's strategy, built on first use and kept."""
        if route_name not in self._strategies:
            self._strategies[route_name] = build_strategy(self.config.routes[route_name], self._context(route_name))
        return self._strategies[route_name]

    def shadow_strategy(self, route_name: str) -> Strategy | None:
        """The learned strategy of the route's `shadow` router file (built on first use), if it has one."""
        route = self.config.routes[route_name]
        if route.shadow is None:
            return None
        key = f"shadow:{route_name}"
        if key not in self._strategies:
            shadow = route.model_copy(update={"strategy": "learned", "router": route.shadow, "online": None})
            self._strategies[key] = learned_strategy(shadow, self._context(route_name), require=False)
        return self._strategies[key]

    def _context(self, route_name: str) -> RouteContext:
        return RouteContext(route_name, self._base_dir, self.config, self.models)

    def model_profiles(self) -> dict[str, ModelProfile]:
        """Every configured model's ability and where it comes from (the router of the first learned route
        that offers it, else its configured or public score)."""
        from .learn import model_profile

        table = _score_table(self.config, self._base_dir)
        routers: dict[str, TrainedRouter] = {}
        for route in self.config.routes.values():
            if route.strategy == "learned":
                trained = _router_file(route, self._base_dir)
                trained = trained.with_aliases(route.aliases) if route.aliases else trained
                routers.update({name: trained for name in route.candidates if name not in routers})
        return {
            name: model_profile(name, router=routers.get(name), table=table, config_score=cfg.score,
                                score_name=cfg.score_name, upstream=cfg.model)
            for name, cfg in self.config.models.items()
        }

    def warm_up(self) -> None:
        """Build every route's strategy now (loads router files and embedders before traffic)."""
        for name in self.config.routes:
            self.strategy(name)

    def request(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Any] | None = None,
        response_format: Mapping[str, Any] | str | None = None,
        max_tokens: int | None = None,
        agent: str | None = None,
        session: str | None = None,
        tags: Sequence[str] | frozenset[str] = (),
        task: str | None = None,
    ) -> RouteRequest:
        """Derive the RouteRequest for a chat request, its task resolved (the caller's, else detected).

        Resolved here, once, so the decision, the session, a shadow router and the ledger all see
        the same task. (The context is spelled out rather than passed as **kwargs: a dict per call.)
        """
        return RouteRequest.from_messages(
            messages, count_tokens=count_tokens_for_routing, tools=tools, response_format=response_format,
            max_tokens=max_tokens, agent=agent, session=session, tags=tags, task=task, resolve_task=task_of,
        )

    def route(
        self,
        messages: Sequence[Mapping[str, Any]] | str,
        *,
        model: str = "auto",
        agent: str | None = None,
        session: str | None = None,
        tags: Sequence[str] = (),
        task: str | None = None,
        tools: Sequence[Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> Decision:
        """Decide which model serves this request.

        `session` is not applied here (a Decider keeps no session state): the SDK's `Router.route` moves the decision
        as its chats left the session, and the gateway (`POST /v1/route`, each chat) as its own sessions say."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        request = self.request(
            messages, agent=agent, session=session, tags=tags, task=task, tools=tools,
            response_format=response_format, max_tokens=max_tokens,
        )
        return self._session_steered(request, self.decide(request, model=model))

    def _session_steered(self, request: RouteRequest, decision: Decision) -> Decision:
        """The decision as the request's session moves it: unchanged here (a Decider keeps no sessions; a Router's
        chats do)."""
        return decision

    def _named(self, request: RouteRequest, model: str, agent: AgentConfig | None, route: str | None) -> Decision:
        """A model asked for by name (or an agent's pinned model), held to the agent's rules like any other.

        The request still belongs to `route` (the route `auto` would have used), so that route's
        budget counts it; a rule that forbids the model raises PolicyDeniedError naming the rule.
        """
        who, where = request.agent, f"agents.{request.agent}"
        if agent is not None:
            if agent.model is not None and model != agent.model:
                raise PolicyDeniedError(f"agent {who!r} is pinned to {agent.model!r}; model {model!r} is not allowed "
                                        f"({where}.model)", rule=f"{where}.model")
            if agent.allow is not None and model not in agent.allow:
                raise PolicyDeniedError(f"agent {who!r} may not use model {model!r}: it is not in {where}.allow",
                                        rule=f"{where}.allow")
            if model in agent.deny:
                raise PolicyDeniedError(f"agent {who!r} may not use model {model!r}: {where}.deny lists it",
                                        rule=f"{where}.deny")
        route_config = self.config.routes.get(route) if route is not None else None
        ceiling, rule = (agent.max_price_usd, f"{where}.max_price_usd") if agent is not None else (None, "")
        if ceiling is None and route_config is not None:
            ceiling, rule = route_config.max_price_usd, f"routes.{route}.max_price_usd"
        cost = estimated_cost(self.models[model], request)
        if ceiling is not None and cost > ceiling:
            raise PolicyDeniedError(f"model {model!r} is estimated at ${cost:.6f} for this request, over {rule} "
                                    f"${ceiling:g}", rule=rule)
        return Decision(model=model, reason="model requested by name", strategy="fixed", route=route, fallbacks=())

    def decide(
        self,
        request: RouteRequest,
        *,
        model: str = "auto",
        random_value: float | None = None,
        unhealthy: Collection[str] = (),
        ttft_ms: Mapping[str, float] | None = None,
    ) -> Decision:
        """The decision for an already-built request; `model` is auto, auto:<route> or a model name.

        `unhealthy` (open circuits) and `ttft_ms` (live time to first token) come from the gateway;
        such candidates are set aside while another qualifies and stay last-resort fallbacks.
        """
        draw = self._random.random() if random_value is None else random_value
        if request.task is None:  # rules and strategies see the caller's task, else the detected one
            request = replace(request, task=resolve_task(request))
        agent = self.config.agents.get(request.agent) if request.agent else None
        home = (agent.route if agent is not None and agent.route else None) or self.config.default_route_name
        if model in self.models:
            return self._named(request, model, agent, home)
        if model == "auto":
            route_name = home
        elif model.startswith("auto:"):
            route_name = model.removeprefix("auto:")
        else:
            raise UnknownModelError(
                f"unknown model {model!r}; use 'auto', 'auto:<route>' or one of: {', '.join(sorted(self.models))}"
            )
        if agent is not None and agent.model is not None:
            pinned = self._named(request, agent.model, agent, route_name if route_name in self.config.routes else None)
            return replace(pinned, reason=f"agent {request.agent} is pinned to {agent.model}")
        if route_name is None:
            raise ConfigError("no routes are configured; add one under 'routes'")
        if route_name not in self.config.routes:
            raise UnknownModelError(
                f"unknown route {route_name!r}; configured routes: {', '.join(sorted(self.config.routes))}"
            )
        route = self.config.routes[route_name]
        candidates = [self.models[name] for name in route.candidates]
        allow = set(agent.allow) if agent is not None and agent.allow is not None else None
        deny = set(agent.deny) if agent is not None else ()
        max_price = agent.max_price_usd if agent is not None and agent.max_price_usd is not None else route.max_price_usd
        policy = filter_candidates(request, candidates, allow=allow, deny=deny, max_price_usd=max_price)
        policy, set_aside = prefer_live(policy, unhealthy=unhealthy, ttft_ms=ttft_ms, max_ttft_ms=route.max_ttft_ms)
        context = DecisionContext(route_name, draw, ttft_ms or {})  # (route, random_value, ttft_ms)
        if agent is not None:
            eligible = {s.name for s in policy.eligible}
            for i, rule in enumerate(agent.rules):
                if rule.model in eligible and rule_matches(rule.match, request):
                    rest = tuple(s.name for s in policy.eligible if s.name != rule.model)
                    return Decision(model=rule.model, reason=f"agent {request.agent} rule {i}", strategy="rules",
                                    route=route_name, fallbacks=rest, excluded=policy.excluded)
        decision = self.strategy(route_name).decide(request, policy.eligible, context)
        if not route.fallbacks and not set_aside and decision.route == route_name \
                and decision.excluded == policy.excluded:
            return decision  # the Decision below would be this one, field for field
        extra = tuple(
            f for f in dict.fromkeys((*route.fallbacks, *set_aside))
            if f != decision.model and f not in decision.fallbacks
        )
        return Decision(
            model=decision.model, reason=decision.reason, strategy=decision.strategy, route=route_name,
            candidates=decision.candidates, fallbacks=decision.fallbacks + extra, excluded=policy.excluded,
            cluster=decision.cluster,
        )
