"""Gateway: everything one server process holds, built once at startup from the configuration.

The environment is read here, once: provider keys, the master key. Nothing on the request path
reads it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import anyio
import anyio.to_thread

from .._config import Config
from .._decider import Decider
from .._environ import Environment
from ..ledger import BudgetManager, KeyStore, Ledger, Metrics
from ._defaults import default_config
from ._dispatcher import Dispatcher
from ._sessions import SessionKeeper
from ._tracing import Tracing

__all__ = ["Gateway"]


class Gateway:
    """Decider, dispatcher, ledger, budgets, keys and metrics of one gateway process."""

    def __init__(
        self, dispatcher: Dispatcher, *, ledger: Ledger | None = None, keys: KeyStore | None = None,
        metrics: Metrics | None = None, master_key: str | None = None, dashboard_key: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.decider = dispatcher.decider
        self.config = dispatcher.decider.config
        self.ledger = ledger
        self.keys = keys
        self.metrics = metrics
        self.master_key = master_key
        #: The dashboard's read-only login key (`dashboard.key_env`); the master key logs in read-write.
        self.dashboard_key = dashboard_key
        self.budgets = dispatcher.budgets
        self.env: Mapping[str, str] = Environment.read() if env is None else env
        self._retired: list[Dispatcher] = []  # replaced by a reload; closed at shutdown

    @classmethod
    def from_config(
        cls, config: Config | None = None, *, base_dir: str | Path = ".", env: Mapping[str, str] | None = None,
    ) -> Gateway:
        """Assemble a gateway; with no config, the embedded defaults for this environment."""
        env = Environment.read() if env is None else Environment(env)
        if config is None:
            config = default_config(env)
        decider = Decider(config, base_dir=base_dir)
        ledger = Ledger.from_url(config.server.ledger_url)
        keys = KeyStore(config.server.ledger_url)
        budgets = BudgetManager([*config.budgets, *keys.budgets()], ledger)
        metrics = Metrics(ledger=ledger)
        tracing = Tracing.from_environment(env, record_prompts=config.server.store_prompts)
        dispatcher = Dispatcher.from_decider(decider, env, ledger=ledger, budgets=budgets, metrics=metrics,
                                             tracing=tracing)
        return cls(dispatcher, ledger=ledger, keys=keys, metrics=metrics,
                   master_key=env.get(config.server.master_key_env) or None,
                   dashboard_key=env.get(config.dashboard.key_env) or None, env=env)

    def replacement(self, decider: Decider) -> Dispatcher:
        """A dispatcher for a reloaded configuration (its decider built and warmed up), sharing this
        gateway's ledger, metrics, tracing, health, rate-limit windows and sessions (the response cache
        starts afresh); blocking, so build it off the event loop."""
        config = decider.config
        budgets = BudgetManager([*config.budgets, *(self.keys.budgets() if self.keys else [])], self.ledger) \
            if self.ledger is not None else None
        sessions = SessionKeeper.from_config(config, decider.models, store=self.dispatcher.sessions.store)
        return Dispatcher.from_decider(decider, self.env, ledger=self.ledger, budgets=budgets, metrics=self.metrics,
                                       health=self.dispatcher.health, limiter=self.dispatcher.balancer.limiter,
                                       sessions=sessions, tracing=self.dispatcher.tracing)

    def swap(self, dispatcher: Dispatcher) -> None:
        """Serve new requests with `dispatcher` (one assignment each: a request sees the old or the new).

        Requests already in flight finish on the old one, whose connections close at shutdown.
        """
        self._retired.append(self.dispatcher)
        self.dispatcher, self.decider, self.config = dispatcher, dispatcher.decider, dispatcher.decider.config
        self.budgets = dispatcher.budgets

    async def start(self) -> None:
        """Load every route's strategy (router files, embedders) and start the ledger writer."""
        self.decider.warm_up()
        if self.ledger is not None:
            await self.ledger.start()

    async def refresh_budgets(self, every_s: float = 5.0) -> None:
        """Keep budget counters in step with spend other workers (or SDK users) write to the ledger."""
        while True:
            await anyio.sleep(every_s)
            budgets = self.budgets  # a reload may replace them
            # usage(): budgets can be added while running (a key created on the dashboard)
            if budgets is not None and budgets.usage():
                await anyio.to_thread.run_sync(budgets.refresh)

    async def aclose(self) -> None:
        """Close upstream connections, then flush the ledger."""
        for retired in self._retired:
            await retired.aclose()
        await self.dispatcher.aclose()
        if self.ledger is not None:
            await self.ledger.close()
        if self.keys is not None:
            self.keys.close()
