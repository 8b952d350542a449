"""Every error the gateway answers with, rendered in one place, in the envelope of the API spoken.

OpenAI's `{"error": {"message", "type", "param", "code"}}` (chat completions, Responses, embeddings)
or Anthropic's `{"type": "error", "error": {"type", "message"}}` (`/v1/messages`), with the status a
client library maps to the right exception class. Messages pass through the `Scrubber`, so a key an
upstream echoed back never reaches the client. A budget refusal says `x-should-retry: false`: the
openai and anthropic clients honour it instead of retrying a 429 that waiting will not fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

import orjson
from starlette.responses import Response

from .._exceptions import (
    BudgetExceededError,
    CallerLimitError,
    ConfigError,
    ContentPolicyViolationError,
    ContextWindowExceededError,
    DeploymentLimitError,
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

__all__ = [
    "Scrubber",
    "scrubbed",
    "anthropic_error_payload",
    "dialect_for_path",
    "error_payload",
    "error_response",
    "rate_limit_headers",
]


# (status, type, code, param) by class; the most specific class listed first wins.
_ENVELOPES: tuple[tuple[type[SwitchmanError], int, str, str | None, str | None], ...] = (
    (UnknownModelError, 404, "invalid_request_error", "model_not_found", "model"),
    (NoCapableModelError, 400, "invalid_request_error", "no_capable_model", "model"),
    (PolicyDeniedError, 403, "permission_error", "model_not_allowed", "model"),
    (BudgetExceededError, 429, "insufficient_quota", "budget_exceeded", None),
    (CallerLimitError, 429, "rate_limit_error", "rate_limit_exceeded", None),
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

_SECRET_PATTERNS = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|(?:Bearer|Basic)\s+[A-Za-z0-9._~+/=\-]{6,})")


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


#: HTTP status → Anthropic's error type (https://docs.anthropic.com/en/api/errors).
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                    404: "not_found_error", 405: "invalid_request_error", 408: "invalid_request_error",
                    413: "request_too_large", 415: "invalid_request_error", 431: "request_too_large",
                    429: "rate_limit_error", 529: "overloaded_error"}


def anthropic_error_payload(status: int, payload: dict[str, object]) -> dict[str, object]:
    """Anthropic's envelope for an OpenAI-shaped error payload (same message, type by status)."""
    error = payload["error"]
    assert isinstance(error, dict)
    kind = _ANTHROPIC_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": error["message"]}}


def dialect_for_path(path: str) -> str:
    """Which error envelope a path's clients expect: "anthropic" for /v1/messages, else "openai"."""
    return "anthropic" if path.startswith(("/v1/messages", "/messages")) else "openai"


def _duration(seconds: float) -> str:
    """A reset time as OpenAI writes it: 20ms, 1.5s, 6m0s."""
    if seconds < 1:
        return f"{max(round(seconds * 1000), 0)}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest}s"


def retry_after_headers(seconds: float) -> dict[str, str]:
    """A wait as `retry-after` (RFC 9110 delay-seconds: whole seconds, rounded up, never sooner; a fraction
    makes urllib3's Retry raise) and `retry-after-ms` (the precise wait, read first by the openai SDK)."""
    millis = math.ceil(max(seconds, 0.0) * 1000.0)
    return {"retry-after": str(-(-millis // 1000)), "retry-after-ms": str(millis)}


def rate_limit_headers(limits: Mapping[str, float | None]) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers from limit-/remaining-/reset- values (resets in seconds)."""
    headers: dict[str, str] = {}
    for name, value in limits.items():
        if value is not None:
            headers[f"x-ratelimit-{name}"] = _duration(value) if name.startswith("reset-") else str(int(value))
    return headers


def error_response(
    exc: BaseException, scrub: Scrubber | None = None, headers: dict[str, str] | None = None, *,
    dialect: str = "openai",
) -> Response:
    """The HTTP response for an exception (Retry-After for rate limits, x-should-retry: false for budgets)."""
    status, payload = error_payload(exc, scrub)
    headers = dict(headers or {})
    if isinstance(exc, UpstreamError) and status == 429 and exc.retry_after is not None:
        headers.update(retry_after_headers(exc.retry_after))
    if isinstance(exc, DeploymentLimitError | CallerLimitError):
        headers.update(rate_limit_headers(exc.limits))
    if isinstance(exc, CallerLimitError):
        headers.update(retry_after_headers(exc.retry_after))
    if isinstance(exc, BudgetExceededError):
        headers["x-should-retry"] = "false"
    body = anthropic_error_payload(status, payload) if dialect == "anthropic" else payload
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")

_E = TypeVar("_E", bound=BaseException)


def scrubbed(exc: _E, scrub: Callable[[str], str]) -> _E:
    """`exc`, its causes and contexts with their messages scrubbed and their tracebacks dropped, in place.

    An upstream may echo the key it was sent (as a 401 does): the caller's traceback, log or error tracker must not
    get it, neither in a message nor in a frame's locals (the request's headers, the upstream's answer) that a
    tracker capturing locals would send. The gateway scrubs its HTTP answers the same way.
    """
    seen: set[int] = set()
    chain: list[BaseException | None] = [exc]
    while chain:
        error = chain.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if error.args and isinstance(error.args[0], str):
            error.args = (scrub(error.args[0]), *error.args[1:])
        error.__traceback__ = None
        chain += [error.__cause__, error.__context__]
    return exc
