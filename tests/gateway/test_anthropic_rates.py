"""Anthropic's spelling of a rate limit says what OpenAI's says, from the same values; the API spoken picks it."""

from __future__ import annotations

from switchman._exceptions import CallerLimitError
from switchman.gateway._errors import error_response
from switchman.gateway._rate_headers import rate_headers, rate_limit_headers
from switchman.state import Admission

NOW = 1_796_212_800.0  # 2026-12-02T12:00:00Z


def test_each_value_in_anthropic_s_names_and_each_reset_as_the_time_the_bucket_is_full() -> None:
    admission = Admission(True, limit_requests=3, remaining_requests=2, reset_requests_s=20.0,
                          limit_tokens=100_000, remaining_tokens=99_740, reset_tokens_s=0.1563)
    limits = admission.limits()
    assert rate_limit_headers(limits, "anthropic", now=NOW) == {
        "anthropic-ratelimit-requests-limit": "3", "anthropic-ratelimit-requests-remaining": "2",
        "anthropic-ratelimit-requests-reset": "2026-12-02T12:00:20Z",
        "anthropic-ratelimit-tokens-limit": "100000", "anthropic-ratelimit-tokens-remaining": "99740",
        "anthropic-ratelimit-tokens-reset": "2026-12-02T12:00:01Z",  # rounded up: never sooner than it is
    }
    assert rate_limit_headers(limits, now=NOW) == {  # OpenAI's, from the same values
        "x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "2", "x-ratelimit-reset-requests": "20s",
        "x-ratelimit-limit-tokens": "100000", "x-ratelimit-remaining-tokens": "99740",
        "x-ratelimit-reset-tokens": "156ms",
    }


def test_a_limit_not_set_is_not_spelled() -> None:
    only_requests = Admission(True, limit_requests=3, remaining_requests=2, reset_requests_s=20.0).limits()
    assert set(rate_limit_headers(only_requests, "anthropic", now=NOW)) == {
        "anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset"}
    assert rate_headers(None, "anthropic") == {}


def test_an_error_s_rate_limit_headers_follow_its_dialect() -> None:
    """One argument picks the envelope and the headers' spelling: they cannot disagree."""
    limits = Admission(False, 5.0, limit_requests=3, remaining_requests=0, reset_requests_s=20.0).limits()
    refused = CallerLimitError("used up", retry_after=5.0, limits=limits)
    anthropic = error_response(refused, dialect="anthropic").headers
    assert anthropic["anthropic-ratelimit-requests-remaining"] == "0" and anthropic["retry-after"] == "5"
    assert not [name for name in anthropic if name.startswith("x-ratelimit-")]
    openai = error_response(refused).headers
    assert openai["x-ratelimit-remaining-requests"] == "0"
    assert not [name for name in openai if name.startswith("anthropic-ratelimit-")]
