"""Every error the gateway answers with, rendered in one place as OpenAI's error envelope.

`{"error": {"message", "type", "param", "code"}}` with the status a client library maps to the
right exception class. Messages pass through the `Scrubber`, so a key an upstream echoed back
never reaches the client.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import orjson
from starlette.responses import Response

from .._exceptions import (
    BudgetExceededError,
    ConfigError,
    ContentPolicyViolationError,
    ContextWindowExceededError,
    InvalidRequestError,
    LedgerUnavailableError,
    NoCapableModelError,
    PolicyDeniedError,
    RateLimitError,
    SwitchmanError,
    UnknownModelError,
    UpstreamBadRequestError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamServerError,
    UpstreamTimeout,
)

__all__ = ["Scrubber", "error_payload", "error_response"]


# (status, type, code, param) by class; the most specific class listed first wins.
_ENVELOPES: tuple[tuple[type[SwitchmanError], int, str, str | None, str | None], ...] = (
    (UnknownModelError, 404, "invalid_request_error", "model_not_found", "model"),
    (NoCapableModelError, 400, "invalid_request_error", "no_capable_model", "model"),
    (PolicyDeniedError, 403, "permission_error", "model_not_allowed", "model"),
    (BudgetExceededError, 429, "insufficient_quota", "budget_exceeded", None),
    (RateLimitError, 429, "rate_limit_error", "rate_limit_exceeded", None),
    (ContextWindowExceededError, 400, "invalid_request_error", "context_length_exceeded", "messages"),
    (ContentPolicyViolationError, 400, "invalid_request_error", "content_policy_violation", None),
    (UpstreamBadRequestError, 400, "invalid_request_error", "upstream_bad_request", None),
    (UpstreamTimeout, 504, "api_error", "upstream_timeout", None),
    (UpstreamConnectionError, 502, "api_error", "upstream_connection_error", None),
    (UpstreamServerError, 502, "api_error", "upstream_server_error", None),
    (UpstreamError, 502, "api_error", "upstream_error", None),
    (ConfigError, 503, "api_error", "not_configured", None),
    (LedgerUnavailableError, 503, "api_error", "ledger_unavailable", None),
)

_SECRET_PATTERNS = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|Bearer\s+[A-Za-z0-9._~+/=\-]{6,})")


class Scrubber:
    """Removes the configured secrets, and anything shaped like a key, from text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        found = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._secrets = re.compile("|".join(re.escape(s) for s in found)) if found else None

    def __call__(self, text: str) -> str:
        if self._secrets is not None:
            text = self._secrets.sub("[redacted]", text)
        return _SECRET_PATTERNS.sub("[redacted]", text)


def error_payload(exc: BaseException, scrub: Scrubber | None = None) -> tuple[int, dict[str, object]]:
    """Status and envelope for an exception; anything not ours is an opaque 500."""
    if isinstance(exc, InvalidRequestError):
        status, kind, code, param = exc.status, exc.kind, exc.code, exc.param
        message = str(exc)
    elif isinstance(exc, SwitchmanError):
        status, kind, code, param = 500, "api_error", "internal_error", None
        for cls, s, k, c, p in _ENVELOPES:
            if isinstance(exc, cls):
                status, kind, code, param = s, k, c, p
                break
        message = str(exc)
    else:
        status, kind, code, param = 500, "api_error", "internal_error", None
        message = "internal error in the switchman gateway; see the server log"
    if scrub is not None:
        message = scrub(message)
    return status, {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    exc: BaseException, scrub: Scrubber | None = None, headers: dict[str, str] | None = None
) -> Response:
    """The HTTP response for an exception (Retry-After added for rate limits)."""
    status, payload = error_payload(exc, scrub)
    headers = dict(headers or {})
    if isinstance(exc, UpstreamError) and status == 429 and exc.retry_after is not None:
        headers["retry-after"] = f"{max(exc.retry_after, 0.0):.3g}"
    return Response(orjson.dumps(payload), status_code=status, headers=headers, media_type="application/json")
