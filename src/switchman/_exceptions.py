"""Every error switchman raises, named for what the caller does next.

    SwitchmanError
    ├── ConfigError                  fix the configuration file
    │   ├── UnknownEmbedderError     name an embedder this installation can build
    │   └── EmbedderUnavailableError install the embedder's extra (the message names it)
    ├── DatasetError                 fix the outcome data file
    ├── ArtifactError                retrain or pick another router file
    ├── RoutingError                 the request cannot be routed as asked
    │   ├── UnknownModelError        the named model or route does not exist
    │   ├── NoCapableModelError      no candidate can serve this request
    │   └── PolicyDeniedError        a rule forbids what the request asks for (names the rule)
    ├── InvalidRequestError          fix the request (body, field, header or size); carries its HTTP status
    ├── BudgetExceededError          wait, raise the budget, or accept a downgrade
    │   └── BudgetLimitError         names the budget, what it has spent and when it resets
    ├── LedgerUnavailableError       the ledger cannot be reached now; try again
    │   └── LedgerTimeoutError       it did not answer within the caller's timeout (the message says how long)
    ├── CallerLimitError             the key's or agent's own rpm/tpm is used up: retry after `retry_after`
    ├── LocalModelError              install the local model (`switchman local install`) or free its port
    ├── RouterClosedError            the Router was closed during the call: call again (also a RuntimeError)
    └── UpstreamError                the provider failed; a fallback may succeed
        ├── RateLimitError           retry later (429)
        │   └── DeploymentLimitError every deployment is at its own rpm/tpm limit; carries x-ratelimit-* values
        ├── UpstreamTimeout          retry or fall back
        ├── UpstreamConnectionError  retry or fall back
        ├── UpstreamServerError      retry or fall back (5xx)
        ├── ContextWindowExceededError  move to a model with a larger window
        ├── ContentPolicyViolationError move to the configured fallback
        └── UpstreamBadRequestError  the request itself is wrong; do not retry
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Protocol

__all__ = [
    "ArtifactError",
    "BudgetExceededError",
    "BudgetLimitError",
    "CallerLimitError",
    "ConfigError",
    "ContentPolicyViolationError",
    "ContextWindowExceededError",
    "DatasetError",
    "DeploymentLimitError",
    "EmbedderUnavailableError",
    "InvalidRequestError",
    "LedgerTimeoutError",
    "LedgerUnavailableError",
    "LocalModelError",
    "NoCapableModelError",
    "PolicyDeniedError",
    "RateLimitError",
    "RouterClosedError",
    "RoutingError",
    "SwitchmanError",
    "UnknownEmbedderError",
    "UnknownModelError",
    "UpstreamBadRequestError",
    "UpstreamConnectionError",
    "UpstreamError",
    "UpstreamServerError",
    "UpstreamTimeout",
]


class SwitchmanError(Exception):
    """Root of every error switchman raises."""


class ConfigError(SwitchmanError):
    """The configuration is invalid; the message names the file and key path."""


class DatasetError(SwitchmanError):
    """An outcome data file is invalid; the message names the file, row and column."""


class UnknownEmbedderError(ConfigError, ValueError):
    """The embedder name is not one this installation can build."""


class EmbedderUnavailableError(ConfigError, ImportError):
    """The embedder is known but an optional dependency or its data file is missing."""


class ArtifactError(SwitchmanError):
    """A trained router file cannot be loaded."""


class RoutingError(SwitchmanError):
    """The request cannot be routed as asked."""


class UnknownModelError(RoutingError):
    """The requested model or route is not configured."""


class NoCapableModelError(RoutingError):
    """No candidate passes the policy filters for this request."""

    def __init__(self, message: str, *, missing: frozenset[str] = frozenset()) -> None:
        super().__init__(message)
        self.missing = missing  # capabilities the request needs that no candidate has


class PolicyDeniedError(RoutingError):
    """A configured rule forbids what the request asks for (a 403 at the gateway); the message names the rule."""

    def __init__(self, message: str, *, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


class InvalidRequestError(SwitchmanError):
    """The client's request is malformed (body, field, header or size)."""

    def __init__(
        self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code
        self.kind = kind


class BudgetExceededError(SwitchmanError):
    """A budget would be exceeded by this request."""


class _Budget(Protocol):
    """What BudgetLimitError reads of a budget (a `BudgetConfig`)."""

    @property
    def scope(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def usd(self) -> float: ...
    @property
    def period(self) -> str: ...


class BudgetLimitError(BudgetExceededError):
    """A budget would be exceeded; carries which budget and by how much (never a key or prompt)."""

    def __init__(
        self, budget: _Budget, *, spent_usd: float, reserved_usd: float, estimated_usd: float, resets_at: float
    ) -> None:
        self.budget = budget
        self.scope = budget.scope
        self.name = budget.name
        self.limit_usd = budget.usd
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.estimated_usd = estimated_usd
        self.resets_at = resets_at
        resets = datetime.fromtimestamp(resets_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        super().__init__(
            f"{budget.scope} budget {budget.name!r} exceeded: limit ${budget.usd:.4f} per {budget.period}, "
            f"spent ${spent_usd:.4f}, reserved ${reserved_usd:.4f} by requests in flight, "
            f"this request needs about ${estimated_usd:.4f}; the budget resets at {resets}"
        )


class CallerLimitError(SwitchmanError):
    """The key's or agent's own requests or tokens per minute are used up (429); carries x-ratelimit-* values."""

    def __init__(self, message: str, *, retry_after: float, limits: Mapping[str, float | None] | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        #: limit-/remaining-/reset- values for requests and tokens (reset in seconds).
        self.limits = dict(limits or {})


class LedgerUnavailableError(SwitchmanError):
    """The ledger cannot be reached now (a 503 at the gateway); the call may be retried."""


class LedgerTimeoutError(LedgerUnavailableError):
    """A ledger call that did not answer within its caller's timeout (the message says how long it waited); a
    handler that does not catch it answers 503 ledger_unavailable."""


class LocalModelError(SwitchmanError):
    """The local model server (switchman[local]) is not installed or could not start."""


class RouterClosedError(SwitchmanError, RuntimeError):
    """The Router was closed while this call started or this stream was read; the row of a request already under
    way is written. A new call starts the Router again."""


class UpstreamError(SwitchmanError):
    """A provider call failed."""

    status_code: int = 502
    retryable: bool = True

    def __init__(self, message: str, *, model: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.retry_after = retry_after


class RateLimitError(UpstreamError):
    """The provider rate-limited the call (429)."""

    status_code = 429


class DeploymentLimitError(RateLimitError):
    """Every deployment of the model is at the rpm/tpm limit switchman keeps for it; nothing was sent."""

    def __init__(
        self, message: str, *, model: str | None = None, retry_after: float | None = None,
        limits: Mapping[str, float | None] | None = None,
    ) -> None:
        super().__init__(message, model=model, retry_after=retry_after)
        #: The soonest-free deployment's limit-/remaining-/reset- values for requests and tokens (reset in seconds).
        self.limits = dict(limits or {})


class UpstreamTimeout(UpstreamError):
    """The provider did not answer in time."""

    status_code = 504


class UpstreamConnectionError(UpstreamError):
    """The provider could not be reached or dropped the connection."""


class UpstreamServerError(UpstreamError):
    """The provider answered with a 5xx."""


class ContextWindowExceededError(UpstreamError):
    """The prompt does not fit the model's context window."""

    status_code = 400
    retryable = False


class ContentPolicyViolationError(UpstreamError):
    """The provider refused the content."""

    status_code = 400
    retryable = False


class UpstreamBadRequestError(UpstreamError):
    """The provider rejected the request as malformed; retrying will not help."""

    status_code = 400
    retryable = False
