"""Retry delays and the fallback chain (pure)."""

from __future__ import annotations

import pytest

from switchman import (
    ContentPolicyViolationError,
    ContextWindowExceededError,
    ModelSpec,
    RateLimitError,
    UpstreamBadRequestError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamServerError,
    UpstreamTimeout,
)
from switchman._config_server import Retries
from switchman.gateway._fallback import (
    FallbackChain,
    fallback_reason,
    is_provider_failure,
    retry_delay,
)
from switchman.routing import Decision

RETRIES = Retries(attempts=3, backoff_s=0.5, max_backoff_s=1.5)
SPECS = {name: ModelSpec(name, "p", 1.0, 1.0, context_window=window)
         for name, window in [("a", 8000), ("b", 8000), ("c", None), ("d", 100_000), ("safe", 8000)]}


@pytest.mark.parametrize("error", [RateLimitError("x"), UpstreamServerError("x"), UpstreamTimeout("x"),
                                   UpstreamConnectionError("x")])
def test_retryable_errors_back_off_exponentially(error: UpstreamError) -> None:
    assert [retry_delay(error, attempt, RETRIES) for attempt in range(4)] == [0.5, 1.0, 1.5, None]


def test_retry_after_within_the_cap_is_honoured() -> None:
    assert retry_delay(RateLimitError("x", retry_after=1.2), 0, RETRIES) == 1.2
    assert retry_delay(RateLimitError("x", retry_after=9), 0, RETRIES) is None


@pytest.mark.parametrize("error", [UpstreamBadRequestError("x"), ContextWindowExceededError("x"),
                                   ContentPolicyViolationError("x"), UpstreamError("401")])
def test_other_errors_are_not_retried(error: UpstreamError) -> None:
    assert retry_delay(error, 0, RETRIES) is None


def test_provider_failures_and_reasons() -> None:
    assert is_provider_failure(UpstreamTimeout("x")) and is_provider_failure(UpstreamError("x"))
    assert not is_provider_failure(ContentPolicyViolationError("x"))
    assert fallback_reason(RateLimitError("x")) == "rate_limit"
    assert fallback_reason(UpstreamError("x")) == "upstream_error"


def chain(**kwargs: object) -> FallbackChain:
    decision = Decision(model="a", reason="r", strategy="s", fallbacks=("b", "c", "d"))
    return FallbackChain(decision, SPECS, **kwargs)  # type: ignore[arg-type]


def test_order_and_stop_on_bad_request() -> None:
    c = chain()
    assert c.first() == "a"
    assert c.after("a", UpstreamServerError("x")) == "b"
    assert c.after("b", UpstreamBadRequestError("x")) is None


def test_context_window_skips_windows_that_are_not_larger() -> None:
    c = chain()
    c.first()
    assert c.after("a", ContextWindowExceededError("x")) == "c"  # b has the same 8k; c's window is unknown
    assert c.after("c", ContextWindowExceededError("x")) == "d"


def test_content_policy_goes_to_its_fallback_once() -> None:
    c = chain(content_policy_fallback="safe")
    c.first()
    assert c.after("a", ContentPolicyViolationError("x")) == "safe"
    assert c.after("safe", ContentPolicyViolationError("x")) is None
    assert chain().after("a", ContentPolicyViolationError("x")) is None


def test_unavailable_models_are_passed_over_unless_nothing_else() -> None:
    c = chain(allow=lambda model: model not in {"a", "c"})
    assert c.first() == "b"
    assert c.after("b", UpstreamServerError("x")) == "d"
    assert c.after("d", UpstreamServerError("x")) == "a"  # only unavailable ones are left
    assert c.after("a", UpstreamServerError("x")) == "c"
    assert c.after("c", UpstreamServerError("x")) is None
