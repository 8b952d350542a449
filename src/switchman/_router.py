"""Router: the SDK in one object — decisions in process, and chat through the same dispatcher as the gateway.

    router = Router.from_config("switchman.yaml")
    decision = router.route("Classify: ...", agent="triage")        # no network call
    reply = router.chat("hi", model="auto")                          # same fallbacks, budgets and ledger
    router.feedback(reply_request_id, 0.8)

A Router is a `Decider` (the decision core) that can also send requests: the gateway depends on the
Decider only, and the Router starts the gateway's in-process client on its first `chat`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._config import Config
from ._decider import Decider

if TYPE_CHECKING:
    from .gateway import InProcessClient

__all__ = ["Router"]


class Router(Decider):
    """Routes requests according to a configuration, and sends them in process when asked."""

    def __init__(self, config: Config, *, base_dir: str | Path = ".", seed: int | None = None) -> None:
        super().__init__(config, base_dir=base_dir, seed=seed)
        self._inprocess: InProcessClient | None = None  # started by the first chat()/achat()

    def chat(self, messages: Sequence[Mapping[str, Any]] | str, **options: Any) -> dict[str, Any]:
        """Send a chat request in process and return the OpenAI chat.completion as a dict.

        Same decision, retries, fallbacks, budgets and ledger as `switchman serve`. Options:
        model, agent, session, tags, task, cache (True/False: use or skip the response cache, as the
        X-Switchman-Cache header), and any chat-completions field (tools, temperature, ...).
        """
        return self._client().chat(messages, **options)

    async def achat(self, messages: Sequence[Mapping[str, Any]] | str, **options: Any) -> dict[str, Any]:
        """`chat` for async code."""
        return await self._client().achat(messages, **options)

    def feedback(self, request_id: str, score: float, comment: str | None = None) -> None:
        """Score an earlier request in [0, 1] (1 = good), as `POST /v1/feedback` does.

        The score is stored in the ledger for `switchman train --from-ledger`, and an online route
        and the request's session react to it at once. Unknown ids raise InvalidRequestError.
        """
        from .gateway import submit_feedback

        dispatcher = self._inprocess.dispatcher if self._inprocess is not None else None
        submit_feedback(self, dispatcher, request_id, score, comment)

    def close(self) -> None:
        """Stop the in-process client that `chat` started (closes connections, flushes the ledger)."""
        if self._inprocess is not None:
            self._inprocess.close()
            self._inprocess = None

    def _client(self) -> InProcessClient:
        if self._inprocess is None:
            from .gateway import InProcessClient

            self._inprocess = InProcessClient(self)
        return self._inprocess
