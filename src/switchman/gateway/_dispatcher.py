"""Dispatcher: one chat request from decision to answer, with retries, fallbacks, budgets and its record.

The gateway's endpoint and the in-process SDK (`Router.chat` / `Router.achat`) both call it, so a
request behaves the same over HTTP and in process:

    dispatcher = Dispatcher.from_decider(decider, ledger=ledger, budgets=budgets, metrics=metrics)
    completion = await dispatcher.complete(body, RequestContext(agent="triage"))
    stream = await dispatcher.open_stream(body, context)   # first event already received
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import anyio
import orjson

from .._exceptions import BudgetExceededError, BudgetLimitError, SwitchmanError, UpstreamError
from .._decider import Decider
from ..ledger import BudgetManager, Ledger, Metrics
from ..routing import Decision, RouteRequest, worst_case_cost
from ._cascade import STREAM_NOTE, cascade_strategy, run_cascade
from ._context import RequestContext, scoped_session
from ._errors import Scrubber
from ._exchange import Exchange
from ._fallback import FallbackChain, fallback_reason, is_provider_failure, retry_delay
from ._health import HealthBoard
from ._providers import Deployment, Provider, build_deployments, provider_keys
from ._schema import prompt_chars
from ._sessions import SessionKeeper
from ._shadow import Recorder
from ._stream import ChatStream, OpenedStream, open_upstream_stream
from ._wire import Usage, estimate_output_tokens

__all__ = ["Completion", "Dispatcher"]

T = TypeVar("T")

logger = logging.getLogger("switchman.gateway")

#: Seconds an answer waits for its ledger row under `server.durability: sync` (a sick database must
#: not hold answers for ever: after this the answer goes out and the row stays queued).
DURABLE_WAIT_S = 5.0

#: Requests with more prompt text than this (characters) are decided in a worker thread: token
#: counting, code detection and embedding grow with the prompt and must not hold the event loop.
OFFLOAD_CHARS = 32_768


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished non-stream answer: the OpenAI chat.completion body and what produced it."""

    content: bytes
    model: str
    decision: Decision
    cost_usd: float
    request_id: str

    def json(self) -> dict[str, Any]:
        """The body as a dict."""
        result: dict[str, Any] = orjson.loads(self.content)
        return result


class Dispatcher:
    """Routes, sends, retries, falls back, and records one request at a time (async, many at once)."""

    def __init__(
        self,
        decider: Decider,
        deployments: Mapping[str, Deployment],
        *,
        ledger: Ledger | None = None,
        budgets: BudgetManager | None = None,
        metrics: Metrics | None = None,
        health: HealthBoard | None = None,
        scrub: Scrubber | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = time.perf_counter,
        sessions: SessionKeeper | None = None,
    ) -> None:
        self.decider = decider
        self.sessions = sessions or SessionKeeper.from_config(decider.config, decider.models)
        self.deployments = dict(deployments)
        self.providers: dict[str, Provider] = {d.provider.name: d.provider for d in self.deployments.values()}
        self.ledger = ledger
        self.recorder = Recorder(decider)
        self.budgets = budgets
        self.metrics = metrics
        self.health = health or HealthBoard(decider.config.server.circuit_breaker)
        self.scrub = scrub or Scrubber()
        self.retries = decider.config.server.retries
        self.durable = decider.config.server.durability == "sync"
        self.sleep = sleep
        self.clock = clock
        routes = decider.config.routes
        self._candidates = {name: tuple(r.candidates) for name, r in routes.items()}
        self._policy_fallback = {name: r.content_policy_fallback for name, r in routes.items()}

    @classmethod
    def from_decider(cls, decider: Decider, env: Mapping[str, str] | None = None, **options: Any) -> Dispatcher:
        """Build providers for every configured model, reading keys from `env` (default: os.environ) once."""
        env = dict(os.environ) if env is None else env
        _, deployments = build_deployments(decider.config, decider.models, env)
        options.setdefault("scrub", Scrubber(provider_keys(decider.config, env)))
        return cls(decider, deployments, **options)

    async def aclose(self) -> None:
        """Close every provider's connection pool."""
        await self.recorder.drain()
        for provider in self.providers.values():
            await provider.aclose()

    # -- deciding ------------------------------------------------------------------------------
    def _decide_core(
        self, body: Mapping[str, Any], context: RequestContext, unhealthy: frozenset[str], ttft_ms: Mapping[str, float]
    ) -> tuple[RouteRequest, Decision]:
        """The request and the decision core's answer: pure, so it may run in a worker thread."""
        request = self.decider.request(
            body["messages"], tools=body.get("tools"), response_format=body.get("response_format"),
            max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
            agent=context.agent, session=scoped_session(context.key_id, context.session), tags=context.tags,
            task=context.task,
        )
        return request, self.decider.decide(request, model=body["model"], unhealthy=unhealthy, ttft_ms=ttft_ms)

    def _steered(self, request: RouteRequest, decision: Decision, context: RequestContext, started: float) -> Decision:
        decision = self.sessions.steer(request, decision, context)
        if self.metrics is not None:
            self.metrics.observe_decision(self.clock() - started)
        return decision

    def decide(self, body: Mapping[str, Any], context: RequestContext) -> tuple[RouteRequest, Decision]:
        """The RouteRequest and Decision for a validated body (no upstream call)."""
        started = self.clock()
        request, decision = self._decide_core(body, context, self.health.unhealthy(), self.health.ttft_ms)
        return request, self._steered(request, decision, context, started)

    async def adecide(self, body: Mapping[str, Any], context: RequestContext) -> tuple[RouteRequest, Decision]:
        """`decide`, with a long prompt's share of the work done in a worker thread, off the event loop."""
        if prompt_chars(body) <= OFFLOAD_CHARS:
            return self.decide(body, context)
        started = self.clock()
        request, decision = await anyio.to_thread.run_sync(
            self._decide_core, body, context, self.health.unhealthy(), dict(self.health.ttft_ms))
        return request, self._steered(request, decision, context, started)

    def _reserve(self, exchange: Exchange, request: RouteRequest, decision: Decision) -> Decision:
        """Hold the request's worst case (all input, the most output it allows, times `n`) in its budgets."""
        if self.budgets is None:
            return decision
        ctx, specs, n, tokens = exchange.context, self.decider.models, exchange.choices, exchange.input_bound
        reserve = self.budgets.reserve
        reservation = reserve(agent=ctx.agent, key_id=ctx.key_id, route=decision.route, model=decision.model,
                              estimated_usd=worst_case_cost(specs[decision.model], request, n, input_tokens=tokens))
        if reservation.downgrade_to is not None and reservation.downgrade_to in specs:
            target = reservation.downgrade_to
            reservation = reserve(agent=ctx.agent, key_id=ctx.key_id, route=decision.route, model=target,
                                  estimated_usd=worst_case_cost(specs[target], request, n, input_tokens=tokens))
            decision = Decision(model=target, reason=f"budget downgrade from {decision.model}", strategy="budget",
                                route=decision.route, candidates=decision.candidates, excluded=decision.excluded)
        exchange.reservation = reservation
        return decision

    def _hold(self, exchange: Exchange, model: str, error: UpstreamError | None) -> None:
        """Grow the reservation to `model`'s worst case (plus what a cascade already paid) before calling it."""
        reservation, request = exchange.reservation, exchange.request
        if reservation is None or not reservation.held or request is None:
            return
        spec = self.decider.models[model]
        needed = exchange.spent_usd + worst_case_cost(spec, request, exchange.choices, input_tokens=exchange.input_bound)
        if needed > reservation.estimated_usd and not reservation.resize(needed, model=model):
            after = f" after {error}" if error is not None else ""
            raise BudgetExceededError(f"moving to {model}{after} could cost ${needed:.4f}, more than the request's "
                                      "budget has left")

    async def _begin(self, body: Mapping[str, Any], context: RequestContext) -> Exchange:
        exchange = Exchange(context, self.clock())
        exchange.choices = int(body.get("n") or 1)
        try:
            exchange.request, decision = await self.adecide(body, context)
            exchange.decision = decision
            exchange.decision = self._reserve(exchange, exchange.request, decision)
        except SwitchmanError as exc:
            if isinstance(exc, BudgetExceededError) and self.metrics is not None:
                self.metrics.observe_budget_rejection(exc.scope if isinstance(exc, BudgetLimitError) else "unknown")
            self.finish(exchange, exc)
            raise
        except BaseException as exc:  # a bug or a cancellation: still one ledger row, no leaked reservation
            self.finish(exchange, exc)
            raise
        return exchange

    # -- sending -------------------------------------------------------------------------------
    async def _attempts(self, exchange: Exchange, call: Callable[[Deployment], Awaitable[T]]) -> T:
        """Try the decision's models in order, retrying each per the retry policy, until one answers."""
        decision = exchange.decision
        assert decision is not None
        chain = FallbackChain(decision, self.decider.models, self._policy_fallback.get(decision.route or ""),
                              allow=self.health.allow, tried=exchange.tried)
        model = chain.first()
        error: UpstreamError | None = None
        while model is not None:
            self._hold(exchange, model, error)
            deployment = self.deployments[model]
            attempt = 0
            while True:
                try:
                    result = await call(deployment)
                except UpstreamError as exc:
                    error = exc
                    self.health.record(model, ok=not is_provider_failure(exc))
                    delay = retry_delay(exc, attempt, self.retries)
                    if delay is None or self.health.state(model) != "closed":
                        break
                    attempt += 1
                    await self.sleep(delay)
                    continue
                except BaseException:
                    self.health.abandon(model)
                    raise
                self.health.record(model, ok=True)
                exchange.model = model
                return result
            following = chain.after(model, error)
            if following is not None and self.metrics is not None:
                self.metrics.observe_fallback(model, following, fallback_reason(error))
            model = following
        assert error is not None
        raise error

    async def _call(self, deployment: Deployment, body: Mapping[str, Any]) -> tuple[bytes, Usage | None]:
        request = deployment.build_request(body, stream=False)
        pool, adapter, name = deployment.provider.pool, deployment.adapter, deployment.name
        started = self.clock()
        with adapter.map_errors(name):
            async with asyncio.timeout(deployment.total_s):
                response = await pool.send(request, connect_timeout=deployment.connect_s,
                                           read_timeout=deployment.first_byte_s)
                try:
                    first_byte = self.clock()
                    content = await response.aread()
                finally:
                    await response.aclose()
            if response.status_code >= 400:
                raise adapter.error(response.status_code, content, response.headers, name)
            result = adapter.decode(content, name)
        self.health.observe(name, (first_byte - started) * 1000.0)
        return result

    async def send(self, exchange: Exchange, body: Mapping[str, Any]) -> tuple[bytes, Usage | None]:
        """One non-stream answer for the exchange's decision: its model, then its fallbacks, with retries.

        The cascade driver sends each rung through here (a decision narrowed to that rung).
        """
        return await self._attempts(exchange, lambda d: self._call(d, body))

    async def complete(self, body: Mapping[str, Any], context: RequestContext) -> Completion:
        """Answer a non-stream request (raises a SwitchmanError when nothing could, after recording it)."""
        exchange = await self._begin(body, context)
        cascade = cascade_strategy(self, exchange.decision)
        try:
            if cascade is not None:
                content, usage = await run_cascade(self, exchange, body, cascade)
            else:
                content, usage = await self.send(exchange, body)
        except BaseException as exc:  # every failure, cancellation included, still writes the one ledger row
            self.finish(exchange, exc)
            raise
        if usage is None:
            usage = Usage(exchange.request.input_tokens if exchange.request else 0, estimate_output_tokens(content))
            exchange.usage_estimated = True
        exchange.usage = usage
        assert exchange.decision is not None and exchange.model is not None
        cost = exchange.cost(self.decider.models)
        ticket = self.finish(exchange, content=content)
        if self.durable:
            await self.committed(ticket)
        return Completion(content, exchange.model, exchange.decision, cost, context.request_id)

    async def open_stream(self, body: Mapping[str, Any], context: RequestContext) -> ChatStream:
        """Open a stream, falling back until one upstream has sent its first event."""
        exchange = await self._begin(body, context)
        if exchange.decision is not None and cascade_strategy(self, exchange.decision) is not None:
            exchange.decision = replace(exchange.decision, reason=exchange.decision.reason + STREAM_NOTE)

        async def call(deployment: Deployment) -> OpenedStream:
            return await open_upstream_stream(deployment, body, clock=self.clock, health=self.health)

        try:
            opened = await self._attempts(exchange, call)
        except BaseException as exc:  # every failure, cancellation included, still writes the one ledger row
            self.finish(exchange, exc)
            raise
        return ChatStream(self, exchange, opened)

    # -- recording -----------------------------------------------------------------------------
    def reject(self, context: RequestContext, error: BaseException) -> None:
        """Record a request refused before it could be routed (bad JSON, bad fields, bad headers)."""
        self.finish(Exchange(context, self.clock()), error)

    async def committed(self, ticket: int | asyncio.Task[int]) -> None:
        """Wait (at most DURABLE_WAIT_S) until a record `finish` queued is committed: `server.durability: sync`."""
        if self.ledger is None:
            return
        number = await ticket if isinstance(ticket, asyncio.Task) else ticket
        if number and not await self.ledger.committed(number, timeout=DURABLE_WAIT_S):
            logger.warning("ledger row not committed within %g s; answering anyway (it stays queued)", DURABLE_WAIT_S)

    def finish(
        self, exchange: Exchange, error: BaseException | None = None, *, content: bytes | None = None,
        answer: str | None = None,
    ) -> int | asyncio.Task[int]:
        """Write the request's one ledger record, count it in the metrics, and note its session's outcome.

        `answer` is a streamed answer's escalation signal (empty or truncated), where no body exists.
        Returns the ledger's ticket for the record (see `committed`).
        """
        if error is not None:
            exchange.fail(error, self.scrub)
        self.sessions.observe(exchange, content, answer)
        decision = exchange.decision
        # A model the caller named (or an agent's pin) was not the router's choice: no baseline to save against.
        routed = decision is not None and decision.route is not None and decision.strategy != "fixed"
        candidates = self._candidates.get(decision.route or "", ()) if routed and decision is not None else ()
        record = exchange.record(self.decider.models, candidates, self.clock())
        ticket = self.recorder.record(self.ledger, record, exchange.request, exchange.decision)
        if self.metrics is not None:
            self.metrics.observe_request(record)
        return ticket
