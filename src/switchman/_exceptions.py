"""Every error switchman raises, named for what the caller does next.

    SwitchmanError
    ├── ConfigError                  fix the configuration file
    ├── DatasetError                 fix the outcome data file
    ├── ArtifactError                retrain or pick another router file
    ├── RoutingError                 the request cannot be routed as asked
    │   ├── UnknownModelError        the named model or route does not exist
    │   └── NoCapableModelError      no candidate can serve this request
    ├── BudgetExceededError          wait, raise the budget, or accept a downgrade
    ├── LocalModelError              install the local model (`switchman local install`) or free its port
    └── UpstreamError                the provider failed; a fallback may succeed
        ├── RateLimitError           retry later (429)
        ├── UpstreamTimeout          retry or fall back
        ├── UpstreamConnectionError  retry or fall back
        ├── UpstreamServerError      retry or fall back (5xx)
        ├── ContextWindowExceededError  move to a model with a larger window
        ├── ContentPolicyViolationError move to the configured fallback
        └── UpstreamBadRequestError  the request itself is wrong; do not retry
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "BudgetExceededError",
    "ConfigError",
    "ContentPolicyViolationError",
    "ContextWindowExceededError",
    "DatasetError",
    "LocalModelError",
    "NoCapableModelError",
    "RateLimitError",
    "RoutingError",
    "SwitchmanError",
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


class ArtifactError(SwitchmanError):
    """A trained router file cannot be loaded."""


class RoutingError(SwitchmanError):
    """The request cannot be routed as asked."""


class UnknownModelError(RoutingError):
    """The requested model or route is not configured."""


class NoCapableModelError(RoutingError):
    """No candidate passes the policy filters for this request."""


class BudgetExceededError(SwitchmanError):
    """A budget would be exceeded by this request."""


class LocalModelError(SwitchmanError):
    """The local model server (switchman[local]) is not installed or could not start."""


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
