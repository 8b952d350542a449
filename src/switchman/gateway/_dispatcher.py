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
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import orjson

from .._config import Config
from .._exceptions import BudgetExceededError, BudgetLimitError, DeploymentLimitError, SwitchmanError, UpstreamError
from .._decider import Decider
from .._environ import Environment
from .._slots import slot_init
from ..ledger import Budgets, Ledger, Metrics
from ..routing import Decision, RouteRequest
from ..state import Admission, HealthBoard, HealthStore, RateLimiter
from ._admission import Admitter, admitted_tokens
from ._balancer import Balancer
from ._caller_limits import CallerLimits
from ._cascade import STREAM_NOTE, cascade_strategy, run_cascade
from ._context import RequestContext, scoped_session
from ._deadline import Deadline
from ._errors import Scrubber
from ._exchange import Exchange
from ._fallback import FallbackChain, fallback_reason, is_provider_failure, is_retryable, retry_delay
from ._offload import OFFLOAD_BYTES, run_offloaded
from ._providers import Deployment, Provider, build_deployments, provider_keys
from ._response_cache import CachedAnswer, ReplayStream, ResponseCache
from ._schema import prompt_chars
from ._sessions import SessionKeeper, answer_signal
from ._shadow import Recorder
from ._stream import ChatStream, OpenedStream, open_upstream_stream
from ._tracing import Tracing
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
#: ... and so are request bodies larger than `OFFLOAD_BYTES`, whatever their text (`_offload`).


def _offloaded(body: Mapping[str, Any], context: RequestContext) -> bool:
    """Whether deciding `body` is work for a worker thread (a large body, or a long prompt)."""
    return context.body_bytes > OFFLOAD_BYTES or prompt_chars(body) > OFFLOAD_CHARS


@slot_init
@dataclass(frozen=True, slots=True)
class Completion:
    """A finished non-stream answer: the OpenAI chat.completion body and what produced it."""

    content: bytes
    model: str
    decision: Decision
    cost_usd: float
    request_id: str
    deployment: str | None = None  # the deployment that answered (None for a cache hit)
    cache: str | None = None  # "hit" or "miss" when the response cache was consulted
    limits: Admission | None = None  # the caller's tightest rpm/tpm limit after this request (x-ratelimit-*)

    def json(self) -> dict[str, Any]:
        """The body as a dict."""
        result: dict[str, Any] = orjson.loads(self.content)
        return result


class Dispatcher(Admitter):
    """Routes, sends, retries, falls back, and records one request at a time (async, many at once)."""

    def __init__(
        self,
        decider: Decider,
        deployments: Mapping[str, tuple[Deployment, ...]],
        *,
        ledger: Ledger | None = None,
        budgets: Budgets | None = None,
        metrics: Metrics | None = None,
        health: HealthStore | None = None,
        limiter: RateLimiter | None = None,
        scrub: Scrubber | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = time.perf_counter,
        sessions: SessionKeeper | None = None,
        cache: ResponseCache | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.decider = decider
        self.tracing = tracing or Tracing()
        self.sessions = sessions or SessionKeeper.from_config(decider.config, decider.models)
        server = decider.config.server
        health = health or HealthBoard(server.circuit_breaker, latency=server.live_latency)
        policies = {name: model.balance for name, model in decider.config.models.items()}
        #: Each model's deployments and the choice between them (health, limits, policy).
        self.balancer = Balancer(deployments, policies, health=health, limiter=limiter)
        #: Each key's and agent's own rpm/tpm, on the same limiter as the deployments' limits.
        self.callers = CallerLimits(self.balancer.limiter, decider.config)
        self.providers: dict[str, Provider] = {d.provider.name: d.provider for ds in deployments.values() for d in ds}
        #: The response cache (None when `cache.enabled` is false).
        self.cache = cache if cache is not None else ResponseCache.from_config(decider.config)
        self.ledger = ledger
        self.recorder = Recorder(decider)
        self.budgets = budgets
        self.metrics = metrics
        self.scrub = scrub or Scrubber()
        self.retries = decider.config.server.retries
        self.durable = decider.config.server.durability == "sync"
        self.sleep = sleep
        self.clock = clock
        routes = decider.config.routes
        self._candidates = {name: tuple(r.candidates) for name, r in routes.items()}
        self._baselines = {name: r.baseline for name, r in routes.items()}
        self._policy_fallback = {name: r.content_policy_fallback for name, r in routes.items()}
        self._max_ttft = {name: r.max_ttft_ms for name, r in routes.items()}

    @property
    def health(self) -> HealthStore:
        """Circuit breakers and live latency, by deployment id."""
        return self.balancer.health

    @health.setter
    def health(self, board: HealthStore) -> None:
        self.balancer.health = board

    @property
    def deployments(self) -> dict[str, tuple[Deployment, ...]]:
        """Each model's deployments."""
        return self.balancer.deployments

    @classmethod
    def from_decider(
        cls, decider: Decider, env: Mapping[str, str] | None = None, *, config: Config | None = None, **options: Any
    ) -> Dispatcher:
        """Build providers for every configured model, reading keys from `env` (default: the process's) once.

        `config` gives the providers' addresses when they differ from the decider's configuration
        (the local model's port, known once its server runs).
        """
        env = Environment.read() if env is None else env
        config = decider.config if config is None else config
        _, deployments = build_deployments(config, decider.models, env)
        options.setdefault("scrub", Scrubber(provider_keys(config, env)))
        return cls(decider, deployments, **options)

    async def aclose(self) -> None:
        """Close every provider's connection pool."""
        await self.recorder.drain()
        for provider in self.providers.values():
            await provider.aclose()
        if self.cache is not None:
            await self.cache.aclose()
        if self.tracing.enabled:
            await anyio.to_thread.run_sync(self.tracing.shutdown)

    # -- deciding ------------------------------------------------------------------------------
    def _steered(self, request: RouteRequest, decision: Decision, context: RequestContext, started: float) -> Decision:
        decision = self.sessions.steer(request, decision, context)
        if self.metrics is not None:
            self.metrics.observe_decision(self.clock() - started)
        return decision

    def decide(self, body: Mapping[str, Any], context: RequestContext) -> tuple[RouteRequest, Decision]:
        """The RouteRequest and Decision for a validated body (no upstream call)."""
        started = self.clock()
        request, decision = self._decide_core(body, context, self.balancer.unhealthy_models(),
                                              self.balancer.live_ttft())
        return request, self._steered(request, decision, context, started)

    async def adecide(self, body: Mapping[str, Any], context: RequestContext) -> tuple[RouteRequest, Decision]:
        """`decide`, with a large request's share of the work done in a worker thread, off the event loop."""
        if not _offloaded(body, context):
            return self.decide(body, context)
        return await self._adecide_offloaded(body, context)

    async def _adecide_offloaded(self, body: Mapping[str, Any], context: RequestContext
                                 ) -> tuple[RouteRequest, Decision]:
        """`decide` in a large-request worker thread (the caller found the request large)."""
        started = self.clock()
        request, decision = await run_offloaded(
            self._decide_core, body, context, self.balancer.unhealthy_models(), dict(self.balancer.live_ttft()))
        return request, self._steered(request, decision, context, started)

    async def _begin(
        self, body: Mapping[str, Any], context: RequestContext,
        decide: Callable[[], tuple[RouteRequest, Decision]] | None = None, *, pull: bool = False,
        lookup: Callable[[Exchange], Awaitable[bool]] | None = None,
    ) -> Exchange:
        """Decide (with `decide`, when the body is not a chat body) and reserve budget; recorded on failure.
        With `pull`, the session's shared state is read in the same round trip as the admission and reservation.
        `lookup` (the response cache's, true on a hit) runs before the reservation: a hit costs $0, so it reserves
        nothing and no budget refuses it (on the session-pulling path the caller looks up after `_begin`, and `_begin`
        itself when a budget refused the turn)."""
        exchange = Exchange(context, self.clock())
        exchange.choices = int(body.get("n") or 1)
        exchange.span = self.tracing.start(body, context)
        try:
            with self.tracing.decision(exchange.span) as deciding:
                if pull:
                    try:
                        exchange.decision = await self._decide_pulled(exchange, body, context)
                    except BudgetExceededError:
                        # The turn's look-up waits for the reservation's round trip: a hit still costs $0.
                        if lookup is None or exchange.decision is None or not await lookup(exchange):
                            raise
                        assert exchange.reservation is None  # refused: nothing held (a moved turn released its guess's)
                else:
                    exchange.request, decision = decide() if decide is not None else self.decide(body, context)
                    exchange.decision = decision
                    await self._admit_and_reserve(exchange, exchange.request, decision, lookup)
                    if lookup is not None and exchange.cache == "miss" and exchange.decision.model != decision.model:
                        await lookup(exchange)  # a budget's downgrade: the answer is the other model's, its entry
                self.tracing.decided(deciding, exchange.decision)
        except SwitchmanError as exc:
            if isinstance(exc, BudgetExceededError) and self.metrics is not None:
                self.metrics.observe_budget_rejection(exc.scope if isinstance(exc, BudgetLimitError) else "unknown")
            self.finish(exchange, exc)
            raise
        except BaseException as exc:  # a bug or a cancellation: still one ledger row, no leaked reservation
            self.finish(exchange, exc)
            raise
        return exchange

    async def _abegin(
        self, body: Mapping[str, Any], context: RequestContext,
        lookup: Callable[[Exchange], Awaitable[bool]] | None = None,
    ) -> Exchange:
        """`_begin` for a chat body, a large one decided in a worker thread (see `adecide`)."""
        session = scoped_session(context.key_id, context.session)
        if not _offloaded(body, context):
            return await self._begin(body, context, pull=self.sessions.shares(session), lookup=lookup)
        await self.sessions.pull(session)  # shared by every replica
        decide = await self.decide_with(context, self._adecide_offloaded(body, context))
        return await self._begin(body, context, decide=decide, lookup=lookup)

    async def decide_with(self, context: RequestContext, deciding: Awaitable[tuple[RouteRequest, Decision]]
                       ) -> Callable[[], tuple[RouteRequest, Decision]]:
        """What `_begin` decides with, for a decision made elsewhere (in a worker thread): its answer, or its error
        raised again (a refusal, or a bug: `_begin` records it). Cancelled meanwhile: the request's one ledger row."""
        try:
            decided = await deciding
        except Exception as exc:  # noqa: BLE001 -- a refusal, or a bug: `_begin` raises it again and records it
            error = exc

            def refuse() -> tuple[RouteRequest, Decision]:
                raise error

            return refuse
        except BaseException as exc:  # cancelled while a thread decided: still the request's one ledger row
            self.reject(context, exc)
            raise
        return lambda: decided

    # -- sending -------------------------------------------------------------------------------
    async def _attempts(
        self, exchange: Exchange, call: Callable[[Deployment], Awaitable[T]], *, hold: bool = False
    ) -> T:
        """Try the decision's models in order, each on its deployments with retries, until one answers.

        With `hold`, the answering deployment stays leased (in flight) until the exchange is finished.
        """
        decision = exchange.decision
        assert decision is not None
        chain = FallbackChain(decision, self.decider.models, self._policy_fallback.get(decision.route or ""),
                              allow=self.balancer.available, tried=exchange.tried)
        model = chain.first()
        error: UpstreamError | None = None
        limited: DeploymentLimitError | None = None
        while model is not None:
            if exchange.reservation is not None:  # (else nothing to hold: no coroutine to await)
                await self._hold(exchange, model, error)
            try:
                return await self._attempt_model(exchange, model, call, hold)
            except DeploymentLimitError as exc:  # nothing sent: every deployment is at its own limit
                if limited is None or (exc.retry_after or 0.0) < (limited.retry_after or 0.0):
                    limited = exc
                failure: UpstreamError = exc
            except UpstreamError as exc:
                error = failure = exc
            following = chain.after(model, failure)
            if following is not None and self.metrics is not None:
                self.metrics.observe_fallback(model, following, fallback_reason(failure))
            model = following
        raise error or limited or AssertionError("a fallback chain with no model")

    async def _attempt_model(
        self, exchange: Exchange, model: str, call: Callable[[Deployment], Awaitable[T]], hold: bool
    ) -> T:
        """One model: its deployments in the balancer's order (another at once after a failure), then retries."""
        request, route = exchange.request, exchange.decision.route if exchange.decision else None
        tokens = admitted_tokens(request)
        tried: list[str] = []
        error: UpstreamError | None = None
        retries = 0
        while True:
            try:
                lease = await self.balancer.acquire(model, tried=tried, tokens=tokens,
                                                    max_ttft_ms=self._max_ttft.get(route or ""))
            except DeploymentLimitError:
                if error is not None:  # the model did fail upstream: that is the error to report
                    raise error from None
                raise
            deployment = lease.deployment
            tried.append(deployment.id)
            try:
                if exchange.span is None:  # tracing off (or this request not traced): no span to enter
                    result = await call(deployment)
                else:
                    with self.tracing.attempt(exchange.span, deployment, len(tried), self.scrub):
                        result = await call(deployment)
            except UpstreamError as exc:
                lease.release()
                error = exc
                self.balancer.health.record(deployment.id, ok=not is_provider_failure(exc), cooldown_s=deployment.cooldown_s)
                if is_retryable(exc) and self.balancer.untried(model, tried):
                    continue  # another deployment of the same model, at once
                delay = retry_delay(exc, retries, self.retries)
                if delay is None or not self.balancer.any_closed(model):
                    raise
                retries += 1
                await self.sleep(delay)
                continue
            except BaseException:
                lease.release()
                self.balancer.health.abandon(deployment.id)
                raise
            self.balancer.health.record(deployment.id, ok=True)
            exchange.model, exchange.deployment = model, deployment.id
            if hold:
                exchange.lease = lease
            else:
                lease.release()
            return result

    async def _call(self, deployment: Deployment, body: Mapping[str, Any]) -> tuple[bytes, Usage | None]:
        request = deployment.build_request(body, stream=False)
        pool, adapter, name = deployment.provider.pool, deployment.adapter, deployment.name
        started = self.clock()
        with adapter.map_errors(name):
            with Deadline(deployment.total_s):  # asyncio.timeout's behaviour, cheaper (see _deadline)
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
        self.balancer.health.observe(deployment.id, (first_byte - started) * 1000.0)
        return result

    async def send(self, exchange: Exchange, body: Mapping[str, Any]) -> tuple[bytes, Usage | None]:
        """One non-stream answer for the exchange's decision: its model, then its fallbacks, with retries.

        The cascade driver sends each rung through here (a decision narrowed to that rung).
        """
        return await self._attempts(exchange, lambda d: self._call(d, body))

    def _lookup(
        self, body: Mapping[str, Any], found: list[CachedAnswer | None], *, stream: bool
    ) -> Callable[[Exchange], Awaitable[bool]] | None:
        """`_begin`'s look-up in the response cache: true on a hit. It appends what it found (None on a miss or
        for a request not to be cached) to `found`, so the caller knows it ran and does not look up again."""
        cache = self.cache
        if cache is None:
            return None

        async def lookup(exchange: Exchange) -> bool:
            hit = await cache.lookup(exchange, body, stream=stream)
            found.append(hit)
            return hit is not None

        return lookup

    async def _cached(self, exchange: Exchange, body: Mapping[str, Any], *, stream: bool) -> CachedAnswer | None:
        """The response cache's answer for a request `_begin` did not look up (a failure still writes its row)."""
        if self.cache is None or exchange.cache is not None:
            return None
        try:
            return await self.cache.lookup(exchange, body, stream=stream)
        except BaseException as exc:  # cancelled while looking up: still one ledger row, no leaked reservation
            self.finish(exchange, exc)
            raise

    async def complete(self, body: Mapping[str, Any], context: RequestContext) -> Completion:
        """Answer a non-stream request (raises a SwitchmanError when nothing could, after recording it)."""
        found: list[CachedAnswer | None] = []
        exchange = await self._abegin(body, context, self._lookup(body, found, stream=False))
        hit = found[-1] if found else None  # the last look-up's: after a budget's downgrade, the new model's
        if not found and self.cache is not None:  # not looked up yet (the session-pulling path)  # (no coroutine per request with the cache off)
            hit = await self._cached(exchange, body, stream=False)
        if hit is not None:
            self.finish(exchange, content=hit.content)
            assert exchange.decision is not None
            return Completion(hit.content, hit.model, exchange.decision, 0.0, context.request_id, cache="hit",
                              limits=exchange.admission)
        cascade = cascade_strategy(self, exchange.decision)
        try:
            if cascade is not None:
                content, usage = await run_cascade(self, exchange, body, cascade)
            else:  # `send`, one coroutine fewer
                content, usage = await self._attempts(exchange, lambda d: self._call(d, body))
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
        try:
            if exchange.request is not None and exchange.request.session is not None:  # (else nothing to wait for)
                await self.settled(exchange)
            if self.durable:
                await self.committed(ticket)
            if exchange.cache == "miss" and self.cache is not None:
                await self.cache.store(exchange, content, answer_signal(content))
        except asyncio.CancelledError:  # recorded as a success: the answer is the caller's (a closing SDK Router
            pass  # cancels calls it stopped waiting for; it must not report this one as failed)
        return Completion(content, exchange.model, exchange.decision, cost, context.request_id,
                          deployment=exchange.deployment, cache=exchange.cache, limits=exchange.admission)

    async def open_stream(self, body: Mapping[str, Any], context: RequestContext) -> ChatStream | ReplayStream:
        """Open a stream, falling back until one upstream has sent its first event (or replay a cached one)."""
        found: list[CachedAnswer | None] = []
        exchange = await self._abegin(body, context, self._lookup(body, found, stream=True))
        hit = found[-1] if found else None  # the last look-up's: after a budget's downgrade, the new model's
        if not found and self.cache is not None:  # not looked up yet (the session-pulling path)
            hit = await self._cached(exchange, body, stream=True)
        if hit is not None:
            return ReplayStream(self, exchange, hit)
        if exchange.decision is not None and cascade_strategy(self, exchange.decision) is not None:
            exchange.decision = replace(exchange.decision, reason=exchange.decision.reason + STREAM_NOTE)

        async def call(deployment: Deployment) -> OpenedStream:
            return await open_upstream_stream(deployment, body, clock=self.clock, health=self.health)

        try:
            opened = await self._attempts(exchange, call, hold=True)
        except BaseException as exc:  # every failure, cancellation included, still writes the one ledger row
            self.finish(exchange, exc)
            raise
        return ChatStream(self, exchange, opened)

    # -- recording -----------------------------------------------------------------------------
    async def settled(self, exchange: Exchange) -> None:
        """Wait until what `finish` wrote to shared state (the session's turn) is there, before answering."""
        if exchange.request is not None:
            await self.sessions.settled(exchange.request.session)

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
        if exchange.lease is not None:
            exchange.lease.release()
        self.sessions.observe(exchange, content, answer)
        decision = exchange.decision
        # A model the caller named (or an agent's pin) was not the router's choice: no baseline to save against.
        routed = decision is not None and decision.route is not None and decision.strategy != "fixed"
        route = decision.route if routed and decision is not None else None
        record = exchange.record(self.decider.models, self._candidates.get(route or "", ()), self.clock(),
                                 self._baselines.get(route or ""))
        ticket = self.recorder.record(self.ledger, record, exchange.request, exchange.decision)
        if self.metrics is not None:
            self.metrics.observe_request(record)
        if exchange.span is not None:
            self.tracing.finish(exchange.span, record, error, exchange.request.prompt if exchange.request else None)
        return ticket
