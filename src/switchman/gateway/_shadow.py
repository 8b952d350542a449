"""Shadow routing: what a route's `shadow` router would have chosen, logged next to the real decision.

    routes:
      default: {candidates: [cheap, big], strategy: cheapest, shadow: new-router.safetensors}

The shadow decision never touches the response: the record of a request on such a route is held
back, the shadow router decides in a worker thread after the answer has been handed over, and
the record is then queued with `shadow_model`, `shadow_quality` and `shadow_cost_usd` filled in.
Compare them with `switchman replay` or straight from the ledger before switching the router on.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import anyio.to_thread

from .._exceptions import SwitchmanError
from .._decider import Decider
from ..ledger import Ledger, LedgerRecord
from ..routing import Decision, DecisionContext, RouteRequest

__all__ = ["Recorder", "shadow_fields"]

logger = logging.getLogger("switchman.gateway")


def shadow_fields(decider: Decider, record: LedgerRecord, request: RouteRequest, decision: Decision) -> LedgerRecord:
    """The record with its route's shadow decision among the candidates the real decision had."""
    route = decision.route
    strategy = decider.shadow_strategy(route) if route in decider.config.routes else None
    if strategy is None or route is None:
        return record
    excluded = {name for name, _ in decision.excluded}
    eligible = [decider.models[m] for m in decider.config.routes[route].candidates if m not in excluded]
    if not eligible:
        return record
    shadow = strategy.decide(request, eligible, DecisionContext(route=route))
    score = next((c for c in shadow.candidates if c.model == shadow.model), None)
    return replace(
        record, shadow_model=shadow.model,
        shadow_quality=score.predicted_quality if score is not None else None,
        shadow_cost_usd=score.predicted_cost_usd if score is not None else None,
    )


class Recorder:
    """Queues each request's ledger record: with its prompt when `server.store_prompts` is on, and
    after its shadow decision, made off the request path, where the route has a shadow router."""

    def __init__(self, decider: Decider) -> None:
        self.decider = decider
        self._store_prompts = decider.config.server.store_prompts
        self._routes = {name for name, route in decider.config.routes.items() if route.shadow is not None}
        self._tasks: set[asyncio.Task[int]] = set()
        self._warned = False

    def record(self, ledger: Ledger | None, record: LedgerRecord, request: RouteRequest | None,
               decision: Decision | None) -> int | asyncio.Task[int]:
        """Queue the record now, or after its shadow decision when its route has a shadow router.

        Returns the ledger's ticket for the row (0: no ledger), or the task that will queue it.
        """
        if ledger is None:
            return 0
        if self._store_prompts and request is not None:
            record = replace(record, prompt=request.prompt)
        if request is None or decision is None or decision.route not in self._routes or record.status != "ok":
            return ledger.record(record)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a plain script): no background to move the work to
            return ledger.record(record)
        task = loop.create_task(self._shadow_then_record(ledger, record, request, decision))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _shadow_then_record(self, ledger: Ledger, record: LedgerRecord, request: RouteRequest,
                                  decision: Decision) -> int:
        try:
            record = await anyio.to_thread.run_sync(shadow_fields, self.decider, record, request, decision)
        except Exception as exc:  # noqa: BLE001 (logged once) a bad shadow file, its embedder, a bug: keep the record
            if not self._warned:
                self._warned = True
                if isinstance(exc, SwitchmanError):  # its message says what is wrong: no traceback
                    logger.warning("shadow router for route %s failed: %s", decision.route, exc)
                else:
                    logger.exception("shadow router for route %s failed; recording without its decision",
                                     decision.route)
        return ledger.record(record)

    async def drain(self) -> None:
        """Wait for shadow decisions still being made (before the ledger closes)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
