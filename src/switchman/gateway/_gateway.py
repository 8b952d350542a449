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
from ._tracing import Tracing

__all__ = ["Gateway"]


class Gateway:
    """Decider, dispatcher, ledger, budgets, keys and metrics of one gateway process."""

    def __init__(
        self, dispatcher: Dispatcher, *, ledger: Ledger | None = None, keys: KeyStore | None = None,
        metrics: Metrics | None = None, master_key: str | None = None, dashboard_key: str | None = None,
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
                   dashboard_key=env.get(config.dashboard.key_env) or None)

    async def start(self) -> None:
        """Load every route's strategy (router files, embedders) and start the ledger writer."""
        self.decider.warm_up()
        if self.ledger is not None:
            await self.ledger.start()

    async def refresh_budgets(self, every_s: float = 5.0) -> None:
        """Keep budget counters in step with spend other workers (or SDK users) write to the ledger."""
        budgets = self.budgets
        if budgets is None:
            return
        while True:
            await anyio.sleep(every_s)
            if budgets.usage():  # budgets can be added while running (a key created on the dashboard)
                await anyio.to_thread.run_sync(budgets.refresh)

    async def aclose(self) -> None:
        """Close upstream connections, then flush the ledger."""
        await self.dispatcher.aclose()
        if self.ledger is not None:
            await self.ledger.close()
        if self.keys is not None:
            self.keys.close()
