"""Requests- and tokens-per-minute limits per key (a deployment), as token buckets.

    limiter = LocalRateLimiter()
    admission = await limiter.admit("gpt-4o@azure", RateLimit(rpm=600, tpm=150_000), tokens=1_200)
    if not admission.admitted: ...skip this deployment; admission.retry_after_s says when it would fit...

Each limit is a bucket holding up to a minute's allowance, refilled continuously (rpm/60 requests
and tpm/60 tokens per second), as providers enforce theirs: a burst of up to the whole minute's
allowance passes, then requests pass at the steady rate. A request takes one request and its
tokens (what the provider counts when it admits a request: the prompt plus `max_tokens`) from
both buckets at once, or from neither. The `Admission` carries what OpenAI's `x-ratelimit-*`
headers say: limit, remaining and time to a full bucket, for requests and for tokens.

A request under several limits (a key's and an agent's) is admitted by `admit_all`: every bucket
is checked first and taken from only when all have room, with no await in between, so a request
one limit refuses never holds another's capacity, not even for a moment (an admit-then-refund
would: concurrent requests then see 429s no limit called for).

`RateLimiter` is the interface. `LocalRateLimiter` keeps the buckets in the process; a shared
backend (Redis: the same arithmetic in one Lua script per admission) makes a limit hold across
replicas. `admit` is a coroutine for that reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Admission", "LocalRateLimiter", "RateLimit", "RateLimiter", "admission_at"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A key's limits: requests and tokens per minute (None: unlimited)."""

    rpm: int | None = None
    tpm: int | None = None

    def __bool__(self) -> bool:
        return self.rpm is not None or self.tpm is not None


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a request was admitted, and the state of the key's buckets after it (for x-ratelimit-* headers)."""

    admitted: bool
    retry_after_s: float = 0.0
    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float = 0.0
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float = 0.0
    #: The wall-clock time (seconds since the epoch) the buckets were read, which the resets count from (None: the
    #: moment the headers are spelled). Headers spelled after the answer count from it, not from their own time.
    measured_at: float | None = None

    def limits(self) -> dict[str, float | None]:
        """OpenAI's x-ratelimit-* values by header suffix (`limit-requests`, ..., resets in seconds)."""
        return {
            "limit-requests": self.limit_requests, "remaining-requests": self.remaining_requests,
            "reset-requests": self.reset_requests_s if self.limit_requests is not None else None,
            "limit-tokens": self.limit_tokens, "remaining-tokens": self.remaining_tokens,
            "reset-tokens": self.reset_tokens_s if self.limit_tokens is not None else None,
        }


class RateLimiter(Protocol):
    """Admits requests against per-key limits."""

    async def admit(self, key: str, limit: RateLimit, tokens: int) -> Admission:
        """Take one request and `tokens` from the key's buckets if both have room, else nothing."""
        ...

    async def admit_all(self, limits: Sequence[tuple[str, RateLimit]], tokens: int) -> list[Admission]:
        """`admit` under every (key, limit) at once: taken from all, or from none. One admission per (key, limit),
        in order; when one refuses none is `admitted`, and those that refused have a `retry_after_s`. A key given
        twice is checked and taken once (under its first limit), both places answered with its one admission."""
        ...

    def usage(self, key: str, limit: RateLimit) -> float:
        """The fuller of the key's two buckets' used share, 0..1 (may lag behind for a shared backend)."""
        ...


@dataclass(slots=True)
class _Bucket:
    level: float  # what is left, in requests or tokens
    at: float


class LocalRateLimiter:
    """Token buckets in this process."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def _level(self, key: str, kind: str, capacity: int, now: float) -> _Bucket:
        bucket = self._buckets.get((key, kind))
        if bucket is None:
            bucket = self._buckets[key, kind] = _Bucket(float(capacity), now)
        else:
            bucket.level = min(float(capacity), bucket.level + (now - bucket.at) * capacity / 60.0)
            bucket.at = now
        return bucket

    async def admit(self, key: str, limit: RateLimit, tokens: int) -> Admission:
        """Take one request and `tokens` if both buckets have room."""
        requests, token_bucket, wait = self._check(key, limit, tokens, self._clock())
        if not wait:
            _take(requests, token_bucket, tokens)
        return _admission(limit, requests, token_bucket, wait, admitted=not wait)

    async def admit_all(self, limits: Sequence[tuple[str, RateLimit]], tokens: int) -> list[Admission]:
        """Take one request and `tokens` from every key's buckets if all have room, else from none."""
        return self.take_all(limits, tokens)

    def take_all(self, limits: Sequence[tuple[str, RateLimit]], tokens: int) -> list[Admission]:
        """`admit_all` without a coroutine: checked, then taken, in one step (nothing can run in between). A key
        given twice is checked and taken once: its buckets would otherwise be checked for one request, then take two."""
        now, admitted = self._clock(), True
        checked: dict[str, tuple[RateLimit, _Bucket | None, _Bucket | None, float]] = {}
        for key, limit in limits:  # (plain loops: a comprehension is a frame of its own on this per-request path)
            if key not in checked:
                requests, token_bucket, wait = self._check(key, limit, tokens, now)
                checked[key] = (limit, requests, token_bucket, wait)
                if wait:
                    admitted = False
        made = {}
        for key, (limit, requests, token_bucket, wait) in checked.items():
            if admitted:
                _take(requests, token_bucket, tokens)
            made[key] = _admission(limit, requests, token_bucket, wait, admitted=admitted)
        return [made[key] for key, _ in limits]

    def _check(self, key: str, limit: RateLimit, tokens: int, now: float) -> tuple[_Bucket | None, _Bucket | None, float]:
        """The key's buckets, refilled to `now`, and how long until the request fits them (0: it fits now)."""
        requests = self._level(key, "requests", limit.rpm, now) if limit.rpm is not None else None
        token_bucket = self._level(key, "tokens", limit.tpm, now) if limit.tpm is not None else None
        wait = 0.0
        if requests is not None and limit.rpm is not None and requests.level < 1.0:
            wait = max(wait, (1.0 - requests.level) * 60.0 / limit.rpm)
        # A request larger than the whole minute's tokens waits for a full bucket and leaves it in debt.
        need = min(tokens, limit.tpm) if limit.tpm is not None else 0
        if token_bucket is not None and limit.tpm is not None and token_bucket.level < need:
            wait = max(wait, (need - token_bucket.level) * 60.0 / limit.tpm)
        return requests, token_bucket, wait

    def usage(self, key: str, limit: RateLimit) -> float:
        """The fuller bucket's used share, 0..1."""
        now, used = self._clock(), 0.0
        for kind, capacity in (("requests", limit.rpm), ("tokens", limit.tpm)):
            if capacity is not None and (key, kind) in self._buckets:
                used = max(used, 1.0 - self._level(key, kind, capacity, now).level / capacity)
        return used


def _take(requests: _Bucket | None, token_bucket: _Bucket | None, tokens: int) -> None:
    if requests is not None:
        requests.level -= 1.0
    if token_bucket is not None:
        token_bucket.level -= tokens


def _admission(
    limit: RateLimit, requests: _Bucket | None, token_bucket: _Bucket | None, wait: float, *, admitted: bool,
) -> Admission:
    return admission_at(limit, admitted, wait, None if requests is None else requests.level,
                        None if token_bucket is None else token_bucket.level)


def admission_at(
    limit: RateLimit, admitted: bool, wait: float, request_level: float | None, token_level: float | None,
) -> Admission:
    """The Admission for buckets left at these levels (None: a bucket not kept): what this process's limiter and
    Redis's script report alike."""
    return Admission(
        admitted=admitted, retry_after_s=wait,
        limit_requests=limit.rpm, remaining_requests=_remaining(request_level),
        reset_requests_s=_to_full(request_level, limit.rpm),
        limit_tokens=limit.tpm, remaining_tokens=_remaining(token_level),
        reset_tokens_s=_to_full(token_level, limit.tpm),
    )


def _remaining(level: float | None) -> int | None:
    return None if level is None else max(int(level), 0)


def _to_full(level: float | None, capacity: int | None) -> float:
    """Seconds until a bucket at `level` is full again (it refills `capacity` a minute)."""
    if level is None or not capacity:
        return 0.0
    return max(capacity - level, 0.0) * 60.0 / capacity
