"""Gateway: everything one server process holds, built once at startup from the configuration.

The environment is read here, once: provider keys, the master key. Nothing on the request path
reads it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from .._config import Config
from .._decider import Decider
from .._environ import Environment
from .._exceptions import ConfigError
from .._streaks import FailureStreak
from ..ledger import BudgetManager, Budgets, KeySet, KeyStore, Ledger, Metrics, resolve_spill_dir
from ..state import (
    HealthBoard,
    RedisHealth,
    RedisLink,
    RedisOnlineCounts,
    RedisRateLimiter,
    RedisSessionStore,
    RevocationFeed,
    SharedBudgets,
)
from ._defaults import default_config
from ._dispatcher import Dispatcher
from ._errors import Scrubber
from ._keyring import Keyring
from ._sessions import SessionKeeper
from ._tracing import Tracing

__all__ = ["Gateway"]

logger = logging.getLogger("switchman.gateway")

#: Seconds startup waits for the first read of the virtual keys before serving without them.
STARTUP_KEYS_WAIT_S = 3.0


class Gateway:
    """Decider, dispatcher, ledger, budgets, keys and metrics of one gateway process."""

    def __init__(
        self, dispatcher: Dispatcher, *, ledger: Ledger | None = None, keys: KeyStore | None = None,
        metrics: Metrics | None = None, master_key: str | None = None, dashboard_key: str | None = None,
        env: Mapping[str, str] | None = None, redis: RedisLink | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        #: The Redis replicas share state on (`server.redis_url`); None: this process keeps its own.
        self.redis = redis
        self.decider = dispatcher.decider
        self.config = dispatcher.decider.config
        self.ledger = ledger
        #: The keys database (the dashboard creates and revokes keys through it); requests are checked by the keyring.
        self.keys = keys
        self.keyring = Keyring(keys, refresh_s=self.config.server.key_refresh_s) if keys is not None else None
        self.metrics = metrics
        self.master_key = master_key
        #: The dashboard's read-only login key (`dashboard.key_env`); the master key logs in read-write.
        self.dashboard_key = dashboard_key
        self.budgets = dispatcher.budgets
        self.env: Mapping[str, str] = Environment.read() if env is None else env
        self._retired: list[Dispatcher] = []  # replaced by a reload; closed at shutdown
        #: Every secret any dispatcher served with so far (the live one's and the retired ones'): what the error
        #: renderer scrubs with, since a request still running on a retired dispatcher may fail after the reload.
        self.scrub: Scrubber = dispatcher.scrub
        self._key_budgets_refresh: asyncio.Task[bool] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        if self.keyring is not None:
            self.keyring.on_change(self._key_budgets)
        #: Key revocations broadcast to every replica (with Redis and a keys database).
        self.revocations = RevocationFeed(redis) if redis is not None and keys is not None else None
        self._listening: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._online: list[RedisOnlineCounts] = []  # online routes' counts shared on Redis
        if redis is not None:
            redis.on_resync(self._resync)
            if metrics is not None:
                metrics.register(redis.collector(), gauge_mode="livemin")  # up: 0 when any worker is degraded
        if self.revocations is not None and keys is not None:
            keys.on_revoke(self._revoked_here)

    def _revoked_here(self, key_id: str) -> None:
        """A key this process revoked (the dashboard, from a worker thread): tell the other replicas."""
        loop, feed = self._loop, self.revocations
        if loop is not None and feed is not None and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: self._background(feed.publish(key_id)))

    def _background(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resync(self) -> None:
        """Redis is (back) up: rebuild the shared budget counters from the ledger."""
        if isinstance(self.budgets, SharedBudgets):
            await self.budgets.rebuild()

    def _key_budgets(self, keys: KeySet) -> None:
        """New, changed and removed key budgets take effect at each key refresh (spend loaded off the loop)."""
        if self.budgets is not None and self.budgets.set_scope("key", keys.budgets()):
            self._key_budgets_refresh = asyncio.ensure_future(anyio.to_thread.run_sync(self.budgets.refresh))

    @classmethod
    def from_config(
        cls, config: Config | None = None, *, base_dir: str | Path = ".", env: Mapping[str, str] | None = None,
    ) -> Gateway:
        """Assemble a gateway; with no config, the embedded defaults for this environment."""
        env = Environment.read() if env is None else Environment(env)
        if config is None:
            config = default_config(env)
        config = _pinned(config, env)
        master_key = env.get(config.server.master_key_env) or None
        dashboard_key = env.get(config.dashboard.key_env) or None
        _check_keys(config.server.master_key_env, master_key, config.dashboard.key_env, dashboard_key)
        decider = Decider(config, base_dir=base_dir)
        redis = RedisLink.from_config(config.server)
        ledger = Ledger.from_url(config.server.ledger_url, close_timeout=config.server.ledger_close_timeout_s,
                                 spill_dir=resolve_spill_dir(config.server.ledger_spill_dir, environ=env))
        keys = KeyStore(config.server.ledger_url)
        budgets = _shared(BudgetManager(config.budgets, ledger), redis)  # key budgets join at the first key refresh
        metrics = Metrics(ledger=ledger, multiprocess_dir=env.metrics_dir)
        tracing = Tracing.from_environment(env, record_prompts=config.server.store_prompts)
        shared = RedisSessionStore(redis, config.sessions.ttl_s) if redis is not None else None
        sessions = SessionKeeper.from_config(config, decider.models, shared=shared)
        # With Redis, circuit breakers and live latency are shared by every replica (served from a local board).
        health = RedisHealth(redis, HealthBoard(config.server.circuit_breaker, latency=config.server.live_latency)) \
            if redis is not None else None
        limiter = RedisRateLimiter(redis) if redis is not None else None  # deployments', keys' and agents' limits
        dispatcher = Dispatcher.from_decider(decider, env, ledger=ledger, budgets=budgets, metrics=metrics,
                                             tracing=tracing, sessions=sessions, limiter=limiter, health=health)
        return cls(dispatcher, ledger=ledger, keys=keys, metrics=metrics, master_key=master_key,
                   dashboard_key=dashboard_key, env=env, redis=redis)

    def pinned(self, config: Config) -> Config:
        """A reloaded `config` with what the environment overrides (as at start), so the reload sees no change there."""
        return _pinned(config, self.env)

    def replacement(self, decider: Decider) -> Dispatcher:
        """A dispatcher for a reloaded configuration (its decider built and warmed up), sharing this
        gateway's ledger, metrics, tracing, health, rate-limit windows and sessions (the response cache
        starts afresh); blocking, so build it off the event loop."""
        config = decider.config
        budgets = _shared(BudgetManager([*config.budgets, *(self.keys.budgets() if self.keys else [])], self.ledger),
                          self.redis, carry=self.budgets) if self.ledger is not None else None
        kept = self.dispatcher.sessions
        shared = RedisSessionStore(kept.shared.link, config.sessions.ttl_s) if kept.shared is not None else None
        sessions = SessionKeeper.from_config(config, decider.models, store=kept.store, shared=shared)
        return Dispatcher.from_decider(decider, self.env, ledger=self.ledger, budgets=budgets, metrics=self.metrics,
                                       health=self.dispatcher.health, limiter=self.dispatcher.balancer.limiter,
                                       sessions=sessions, tracing=self.dispatcher.tracing)

    def swap(self, dispatcher: Dispatcher) -> None:
        """Serve new requests with `dispatcher` (one assignment each: a request sees the old or the new).

        Requests already in flight finish on the old one, whose connections close at shutdown.
        """
        self._retired.append(self.dispatcher)
        self.scrub |= dispatcher.scrub  # (before the swap: an error drawn then already knows the new keys)
        self.dispatcher, self.decider, self.config = dispatcher, dispatcher.decider, dispatcher.decider.config
        # The carried-over tracing follows server.store_prompts as the ledger does (spans leave for a collector).
        dispatcher.tracing.record_prompts = self.config.server.store_prompts
        self.budgets = dispatcher.budgets
        if isinstance(self.budgets, SharedBudgets):
            self.budgets.rebuild_soon()  # budgets the new configuration added get their spend from the ledger
        if self.redis is not None and self._loop is not None:
            self._background(self._share_online())  # the new configuration's online routes (warmed up already)

    async def _share_online(self) -> None:
        """Share every online route's counts on Redis (replacing the previous configuration's)."""
        old, self._online = self._online, []
        for shared in old:
            await shared.aclose()
        if self.redis is None:
            return
        for name, route in self.config.routes.items():
            if route.online is None or not route.online.enabled:
                continue
            from ..learn import OnlineStrategy  # loaded already: the route uses it

            strategy = self.decider.strategy(name)
            if isinstance(strategy, OnlineStrategy):
                shared = RedisOnlineCounts(self.redis, name, strategy)
                self._online.append(shared)
                await shared.start()

    async def start(self) -> None:
        """Load every route's strategy (router files, embedders), start the ledger writer, read the keys."""
        self.decider.warm_up()
        if self.ledger is not None:
            await self.ledger.start()
        self._loop = asyncio.get_running_loop()
        if self.redis is not None:  # a Redis that is down is noted (one log line); serving goes on locally
            await self.redis.start()
            if isinstance(self.dispatcher.health, RedisHealth):
                await self.dispatcher.health.start()
            await self._share_online()
        if self.revocations is not None and self.keyring is not None:
            keyring = self.keyring
            self._listening = asyncio.create_task(
                self.revocations.run(keyring.drop, on_connect=keyring.refresh), name="switchman-revocations")
        if self.keyring is not None:
            # Wait a moment for the keys, not for a database that hangs: the refresh goes on in the background
            # and requests meanwhile need the master key (authentication is assumed on until keys are read).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STARTUP_KEYS_WAIT_S):
                    await asyncio.shield(self.keyring.refresh())

    async def refresh_budgets(self, every_s: float = 5.0) -> None:
        """Keep budget counters in step with spend other workers (or SDK users) write to the ledger."""
        streak = FailureStreak(logger, "budget refresh from the ledger failed; trying again every %g s",
                               "budget refresh from the ledger works again")
        while True:
            await anyio.sleep(every_s)
            budgets = self.budgets  # a reload may replace them
            # usage(): budgets can be added while running; a database that hangs must not hold shutdown
            try:
                if budgets is not None and budgets.usage():
                    await anyio.to_thread.run_sync(budgets.refresh, abandon_on_cancel=True)  # (the thread is left)
            except Exception:  # noqa: BLE001 (logged by the streak) one failed refresh must not end them, nor the ledger flush
                streak.failed(every_s)
            else:
                streak.succeeded()

    async def aclose(self) -> None:
        """Close upstream connections, then flush the ledger."""
        for retired in self._retired:
            await retired.aclose()
        await self.dispatcher.aclose()
        if isinstance(self.dispatcher.health, RedisHealth):
            await self.dispatcher.health.aclose()
        for shared in self._online:
            await shared.aclose()
        if isinstance(self.budgets, SharedBudgets):
            await self.budgets.drain()  # settles in flight reach Redis (replaced budgets share the task set)
        if self._listening is not None and self.revocations is not None:
            self.revocations.stop()  # it ends at its next wake-up (redis-py's pub/sub can sit on a cancellation)
            await asyncio.wait([self._listening], timeout=self.revocations.link.ping_s * 2 + 1.0)
            self._listening.cancel()
        if self.redis is not None:
            await self.redis.aclose()
        if self.ledger is not None:
            await self.ledger.close()
        if self.keyring is not None:
            self.keyring.close()
        if self.metrics is not None:
            self.metrics.close()  # with --workers: this worker's live gauges leave the sum


#: A master or dashboard key shorter than this is warned about at start: the login throttle slows guessing, it
#: does not make a short key safe (each worker, and each device that logged in, has its own allowance).
_MIN_KEY_CHARS = 20


def _check_keys(master_env: str, master: str | None, dashboard_env: str, dashboard: str | None) -> None:
    """Refuse a dashboard (read-only) key equal to the master key: every viewer would log in as admin. Then one
    WARNING naming the variables whose key is set but short (never the key itself)."""
    if master is not None and master == dashboard:
        raise ConfigError(f"{dashboard_env} is the same key as {master_env}: whoever holds the read-only dashboard "
                          f"key would log in as admin; give {dashboard_env} a key of its own, or unset it")
    keys = {master_env: master, dashboard_env: dashboard}
    short = [name for name, key in keys.items() if key is not None and len(key) < _MIN_KEY_CHARS]
    if short:
        logger.warning("%s: shorter than %d characters, easy to guess; use a long random key (e.g. `openssl rand "
                       "-hex 24`)", ", ".join(short), _MIN_KEY_CHARS)


def _shared(budgets: BudgetManager, redis: RedisLink | None, carry: Budgets | None = None) -> Budgets:
    """Budgets on Redis when one is configured (the local manager decides while it is down); `carry`: the
    budgets these replace (their settles still to be written are handed over)."""
    if redis is None:
        return budgets
    return SharedBudgets(budgets, redis, carry=carry if isinstance(carry, SharedBudgets) else None)


def _pinned(config: Config, env: Mapping[str, str]) -> Config:
    """`serve --redis-url` (or $SWITCHMAN_REDIS_URL) overrides server.redis_url."""
    url = (env if isinstance(env, Environment) else Environment(env)).redis_url
    if not url:
        return config
    return config.model_copy(update={"server": config.server.model_copy(update={"redis_url": url})})
