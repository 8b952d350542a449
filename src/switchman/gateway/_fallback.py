"""What to do after a provider error: retry the same model, move down the chain, or stop (pure).

- 429, 5xx, timeouts, connection errors: another deployment of the same model at once, if the
  model has one the request has not tried; then retry with exponential backoff (a Retry-After the
  provider sends is honoured when it is within the backoff cap; longer, and the chain moves on),
  then the next model in the Decision's order;
- a context-length error: the next model whose context window is larger;
- a content-policy refusal: the route's `content_policy_fallback`, once;
- any other 4xx: stop, the request itself is wrong.
Models whose circuit is open are passed over while any other model remains.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .._catalog import ModelSpec
from .._config_server import Retries
from .._exceptions import (
    ContentPolicyViolationError,
    ContextWindowExceededError,
    RateLimitError,
    UpstreamBadRequestError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamServerError,
    UpstreamTimeout,
)
from ..routing import Decision

__all__ = ["FallbackChain", "fallback_reason", "is_provider_failure", "is_retryable", "retry_delay"]

_RETRYABLE = (RateLimitError, UpstreamServerError, UpstreamTimeout, UpstreamConnectionError)
_REASONS: tuple[tuple[type[UpstreamError], str], ...] = (
    (RateLimitError, "rate_limit"),
    (UpstreamTimeout, "timeout"),
    (UpstreamConnectionError, "connection"),
    (UpstreamServerError, "server_error"),
    (ContextWindowExceededError, "context_window"),
    (ContentPolicyViolationError, "content_policy"),
)


def is_retryable(error: UpstreamError) -> bool:
    """Whether the same model may be tried again (on another deployment, or after a wait)."""
    return isinstance(error, _RETRYABLE)


def retry_delay(error: UpstreamError, attempt: int, retries: Retries) -> float | None:
    """Seconds to wait before retrying the same model, or None to stop retrying it."""
    if not is_retryable(error) or attempt >= retries.attempts:
        return None
    if error.retry_after is not None:
        wait = float(error.retry_after)
        return wait if wait <= retries.max_backoff_s else None
    return min(retries.backoff_s * 2.0**attempt, retries.max_backoff_s)


def is_provider_failure(error: UpstreamError) -> bool:
    """Whether the error says the provider is unwell (counts toward its circuit breaker)."""
    return not isinstance(error, UpstreamBadRequestError | ContextWindowExceededError | ContentPolicyViolationError)


def fallback_reason(error: UpstreamError) -> str:
    """A short label for metrics."""
    return next((label for cls, label in _REASONS if isinstance(error, cls)), "upstream_error")


@dataclass
class FallbackChain:
    """The ordered models to try for one request: the Decision's choice, then its fallbacks."""

    decision: Decision
    specs: Mapping[str, ModelSpec]
    content_policy_fallback: str | None = None
    allow: Callable[[str], bool] = lambda model: True
    tried: list[str] = field(default_factory=list)
    overflowed: int = 0

    def _pick(self, options: list[str]) -> str | None:
        """The first option not tried yet that the catalog knows and `allow` lets through, else the first not tried."""
        tried, specs, allow = self.tried, self.specs, self.allow
        first = None
        for model in options:
            if model in tried or model not in specs:
                continue
            if allow(model):
                first = model
                break
            if first is None:
                first = model
        if first is not None:
            tried.append(first)
        return first

    def first(self) -> str | None:
        """The model to try first."""
        return self._pick([self.decision.model, *self.decision.fallbacks])

    def after(self, model: str, error: UpstreamError) -> str | None:
        """The model to try after `model` failed with `error`, or None to give up."""
        if isinstance(error, UpstreamBadRequestError):
            return None
        if isinstance(error, ContentPolicyViolationError):
            fallback = self.content_policy_fallback
            return self._pick([fallback]) if fallback else None
        order = [self.decision.model, *self.decision.fallbacks]
        if isinstance(error, ContextWindowExceededError):
            self.overflowed = max(self.overflowed, self.specs[model].context_window or 0)
        if self.overflowed:
            # Only windows larger than the largest that overflowed; one the catalog does not know may be.
            order = [m for m in order if m in self.specs and (self.specs[m].context_window or 1 << 62) > self.overflowed]
        return self._pick(order)
