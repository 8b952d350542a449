"""Feedback on earlier requests: `POST /v1/feedback` and `Router.feedback`, one code path.

    POST /v1/feedback {"request_id": "…", "score": 0.8}            # or "thumbs": "up" | "down"
                      {"request_id": "…", "thumbs": "down", "comment": "wrong total"}

The score lands in the ledger's feedback table (what `switchman train --from-ledger` learns from),
then goes to whoever reacts to it at once: an online route's per-cluster success counts, and the
request's session (negative feedback escalates its next turn). Unknown request ids are 404, bad
values 400, a ledger that cannot be reached 503; nothing here answers 500.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response

from .._exceptions import InvalidRequestError, LedgerUnavailableError
from ..ledger import Ledger, LedgerRecord
from ._context import scoped_session
from ._ledger_threads import ledger_call
from ._middleware import MASTER_KEY_ID

if TYPE_CHECKING:
    from .._decider import Decider
    from ._dispatcher import Dispatcher
    from ._gateway import Gateway
    from ._sessions import SessionKeeper

__all__ = ["FeedbackEndpoint", "notify_feedback", "parse_feedback", "store_feedback", "submit_feedback"]

_THUMBS = {"up": 1.0, "down": 0.0}
#: Seconds a feedback request waits on the ledger database before answering 503.
FEEDBACK_TIMEOUT_S = 5.0
_MAX_COMMENT = 4000
_MAX_ID = 128


def _bad(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code="invalid_value")


def parse_feedback(body: Any) -> tuple[str, float, str | None]:
    """(request_id, score in [0, 1], comment) from a feedback body; 400 for anything else."""
    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object", code="invalid_type")
    request_id = body.get("request_id")
    # Printable: no request id holds a control character, and a NUL is one PostgreSQL refuses to compare (a 503).
    if not isinstance(request_id, str) or not request_id.strip() or len(request_id) > _MAX_ID \
            or not request_id.isprintable():
        raise _bad(f"request_id must be a non-empty printable string of at most {_MAX_ID} characters", "request_id")
    score, thumbs = body.get("score"), body.get("thumbs")
    if (score is None) == (thumbs is None):
        raise _bad("give exactly one of score (a number in [0, 1]) or thumbs ('up' or 'down')", "score")
    if thumbs is not None:
        if not isinstance(thumbs, str) or thumbs not in _THUMBS:
            raise _bad("thumbs must be 'up' or 'down'", "thumbs")
        value = _THUMBS[thumbs]
    else:
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score) \
                or not 0.0 <= score <= 1.0:
            raise _bad("score must be a number in [0, 1]", "score")
        value = float(score)
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > _MAX_COMMENT or "\x00" in comment):
        raise _bad(f"comment must be a string of at most {_MAX_COMMENT} characters, without NUL", "comment")
    return request_id.strip(), value, comment


def store_feedback(ledger: Ledger, request_id: str, score: float, comment: str | None = None, *,
                   key_id: str | None = None) -> LedgerRecord:
    """Store the score for a request the ledger knows (blocking: run it off the event loop).

    A request that finished a moment ago may still be in this process's write queue, so a miss
    flushes the queue and looks once more. A virtual key sees only its own requests: request ids a
    client chose are scoped to its key, so another key reusing an id cannot take its feedback.
    """
    try:
        record = ledger.find(request_id, key_id=key_id)
        if record is None:
            ledger.flush_sync(timeout=2.0)
            record = ledger.find(request_id, key_id=key_id)
        if record is None:
            raise InvalidRequestError(f"no request with id {request_id!r} in the ledger", status=404,
                                      param="request_id", code="request_not_found")
        ledger.add_feedback(request_id, score, comment, scored=record)  # this key's request, not another's
    except (SQLAlchemyError, OSError) as exc:
        raise LedgerUnavailableError(f"the ledger is unavailable ({type(exc).__name__}); try again") from None
    return record


def notify_feedback(decider: Decider, sessions: SessionKeeper | None, record: LedgerRecord, score: float) -> None:
    """Hand the score to what reacts at once: the online route's counts and the request's session."""
    from ..learn import OnlineStrategy

    if record.route in decider.config.routes:
        strategy = decider.strategy(record.route)
        if isinstance(strategy, OnlineStrategy):
            strategy.observe(record.cluster, record.model or "", score)
    session = scoped_session(record.key_id, record.session)
    if sessions is not None and session is not None:
        sessions.record_feedback(session, score, request_id=record.request_id)


def submit_feedback(
    decider: Decider, dispatcher: Dispatcher | None, request_id: str, score: float, comment: str | None = None
) -> None:
    """`Router.feedback`: parse, store and notify as `POST /v1/feedback` does (blocking).

    Uses the in-process dispatcher's ledger and sessions when one runs, else opens the configured
    ledger for this one write.
    """
    request_id, score, comment = parse_feedback({"request_id": request_id, "score": score, "comment": comment})
    ledger = dispatcher.ledger if dispatcher is not None else None
    own = ledger is None
    ledger = ledger or Ledger.from_url(decider.config.server.ledger_url)
    try:
        record = store_feedback(ledger, request_id, score, comment)
    finally:
        if own:
            ledger.close_sync()
    notify_feedback(decider, dispatcher.sessions if dispatcher is not None else None, record, score)


class FeedbackEndpoint:
    """POST /v1/feedback bound to one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def handle(self, request: Request) -> Response:
        """POST /v1/feedback."""
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise InvalidRequestError("the body is not valid JSON", code="invalid_json") from None
        request_id, score, comment = parse_feedback(body)
        ledger = self.gateway.ledger
        if ledger is None:
            raise LedgerUnavailableError("this gateway keeps no ledger")
        key_id = request.scope.get("state", {}).get("key_id")
        scope = None if key_id in (None, MASTER_KEY_ID) else key_id  # the master key sees every request
        # Not the chat path's threads: a hung database holds this one. Its LedgerTimeoutError is a
        # LedgerUnavailableError: a 503 ledger_unavailable saying how long it waited.
        record = await ledger_call(lambda: store_feedback(ledger, request_id, score, comment, key_id=scope),
                                   FEEDBACK_TIMEOUT_S)
        sessions = self.gateway.dispatcher.sessions
        notify_feedback(self.gateway.decider, sessions, record, score)
        await sessions.settled(scoped_session(record.key_id, record.session))  # shared before the answer
        return Response(orjson.dumps({"object": "feedback", "request_id": request_id, "score": score}),
                        media_type="application/json")
