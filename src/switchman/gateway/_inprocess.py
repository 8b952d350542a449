"""The dispatcher in process, for `Router.chat` and `await Router.achat`.

It runs on one private event-loop thread (an anyio blocking portal), so a sync caller, an async
caller and many threads all share one connection pool, one health board and one ledger writer,
and requests behave exactly as they do through `switchman serve`.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from .._exceptions import InvalidRequestError
from .._environ import Environment
from ..ledger import BudgetManager, Ledger
from ._context import RequestContext
from ._dispatcher import Dispatcher
from ._schema import check_body

if TYPE_CHECKING:
    from .._decider import Decider

__all__ = ["InProcessClient"]


class InProcessClient:
    """Sends chat requests through a Dispatcher on a background event loop."""

    def __init__(self, decider: Decider, env: Mapping[str, str] | None = None) -> None:
        self._decider = decider
        self._env = Environment.read() if env is None else Environment(env)
        self._portal_cm: AbstractContextManager[BlockingPortal] = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        self._lock = threading.Lock()
        self._closed = False
        self.dispatcher: Dispatcher = self._portal.call(self._build)

    async def _build(self) -> Dispatcher:
        config = self._decider.config
        ledger = Ledger.from_url(config.server.ledger_url)
        await ledger.start()
        return Dispatcher.from_decider(self._decider, self._env, ledger=ledger,
                                      budgets=BudgetManager(config.budgets, ledger))

    @staticmethod
    def _request(
        messages: Sequence[Mapping[str, Any]] | str, *, model: str = "auto", agent: str | None = None,
        session: str | None = None, tags: Sequence[str] = (), task: str | None = None, cache: bool | None = None,
        **params: Any,
    ) -> tuple[dict[str, Any], RequestContext]:
        if params.get("stream"):
            raise InvalidRequestError("Router.chat does not stream; use the gateway for streaming", param="stream")
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        body = check_body({"model": model, "messages": list(messages), **params})
        context = RequestContext(request_id=uuid.uuid4().hex, agent=agent, session=session, tags=tuple(tags),
                                 task=task, cache=cache)
        return body, context

    async def _complete(self, body: dict[str, Any], context: RequestContext) -> dict[str, Any]:
        return (await self.dispatcher.complete(body, context)).json()

    def chat(self, messages: Sequence[Mapping[str, Any]] | str, **options: Any) -> dict[str, Any]:
        """The chat.completion for these messages (blocks until it arrives)."""
        body, context = self._request(messages, **options)
        return self._portal.call(self._complete, body, context)

    async def achat(self, messages: Sequence[Mapping[str, Any]] | str, **options: Any) -> dict[str, Any]:
        """The chat.completion for these messages, awaited from the caller's event loop."""
        body, context = self._request(messages, **options)
        future = self._portal.start_task_soon(self._complete, body, context)
        return await asyncio.wrap_future(future)

    async def _aclose(self) -> None:
        await self.dispatcher.aclose()
        if self.dispatcher.ledger is not None:
            await self.dispatcher.ledger.close()

    def close(self) -> None:
        """Close connections, flush the ledger and stop the loop thread (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._portal.call(self._aclose)
        finally:
            self._portal_cm.__exit__(None, None, None)
