"""LocalRateLimiter: token buckets of a minute's allowance, requests and tokens taken together or not at all."""

from __future__ import annotations

import anyio
import pytest
from clock_support import Clock

from switchman.state import Admission, LocalRateLimiter, RateLimit


def admit(limiter: LocalRateLimiter, limit: RateLimit, tokens: int = 0, key: str = "d") -> Admission:
    return anyio.run(limiter.admit, key, limit, tokens)


def test_rpm_allows_a_minute_s_burst_then_the_steady_rate(clock: Clock) -> None:
    limiter, limit = LocalRateLimiter(clock=clock), RateLimit(rpm=60)
    assert all(admit(limiter, limit).admitted for _ in range(60))
    refused = admit(limiter, limit)
    assert not refused.admitted and refused.retry_after_s == pytest.approx(1.0)
    assert (refused.limit_requests, refused.remaining_requests, refused.reset_requests_s) == (60, 0, pytest.approx(60))
    clock.now += 1.0
    assert admit(limiter, limit).admitted  # one more per second
    assert not admit(limiter, limit).admitted


def test_tokens_and_requests_are_taken_together_or_not_at_all(clock: Clock) -> None:
    limiter, limit = LocalRateLimiter(clock=clock), RateLimit(rpm=10, tpm=1000)
    first = admit(limiter, limit, 700)
    assert first.admitted and (first.remaining_requests, first.remaining_tokens) == (9, 300)
    refused = admit(limiter, limit, 400)
    assert not refused.admitted and refused.retry_after_s == pytest.approx(6.0)  # 100 tokens at 1000/60 per s
    assert (refused.remaining_requests, refused.remaining_tokens) == (9, 300)  # nothing was taken
    assert limiter.usage("d", limit) == pytest.approx(0.7)


def test_a_request_larger_than_the_minute_waits_for_a_full_bucket(clock: Clock) -> None:
    limiter, limit = LocalRateLimiter(clock=clock), RateLimit(tpm=100)
    assert admit(limiter, limit, 500).admitted  # a full bucket lets it through, into debt
    refused = admit(limiter, limit, 10)
    assert not refused.admitted and refused.retry_after_s == pytest.approx((410 / 100) * 60)


def test_keys_are_independent(clock: Clock) -> None:
    limiter, limit = LocalRateLimiter(clock=clock), RateLimit(rpm=1)
    assert admit(limiter, limit, key="a").admitted and admit(limiter, limit, key="b").admitted
    assert not admit(limiter, limit, key="a").admitted
    assert not RateLimit() and RateLimit(tpm=5)
