"""`admit_all`: a request under several limits takes from every bucket or from none — in the process in one step,
on a single Redis in one script over every key, on a Cluster in one script per slot with what earlier slots took
given back (in Redis) when a later one refuses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from switchman.state import LocalRateLimiter, RateLimit, RedisLink, RedisRateLimiter

from .conftest import SHARED_REDIS_URL, Clock

KEY, AGENT = ("key:k", RateLimit(rpm=5, tpm=1000)), ("agent:a", RateLimit(rpm=1))


def test_in_the_process_a_refusal_takes_from_no_bucket(clock: Clock) -> None:
    async def main() -> None:
        limiter = LocalRateLimiter(clock=clock)
        first = await limiter.admit_all([KEY, AGENT], 100)
        assert all(a.admitted for a in first)
        assert (first[0].remaining_requests, first[0].remaining_tokens, first[1].remaining_requests) == (4, 900, 0)
        refused = await limiter.admit_all([KEY, AGENT], 100)
        assert not any(a.admitted for a in refused)
        assert refused[0].retry_after_s == 0 and refused[1].retry_after_s == pytest.approx(60.0)
        assert (refused[0].remaining_requests, refused[0].remaining_tokens) == (4, 900)  # nothing taken
        assert (await limiter.admit(*KEY, 100)).remaining_requests == 3

    anyio.run(main)


async def _redis(prefix: str) -> tuple[RedisLink, RedisRateLimiter, list[list[str]]]:
    link = RedisLink(SHARED_REDIS_URL, prefix=prefix, timeout_s=2.0)
    await link.check()
    assert link.up
    scripts: list[list[str]] = []
    real = link.eval

    async def counted(source: str, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        scripts.append(list(keys))
        return await real(source, keys, args)

    link.eval = counted  # type: ignore[method-assign]
    return link, RedisRateLimiter(link), scripts


def test_on_one_redis_every_key_goes_in_one_script_and_a_refusal_takes_nothing(prefix: str) -> None:
    async def main() -> None:
        link, limiter, scripts = await _redis(prefix)
        assert all(a.admitted for a in await limiter.admit_all([KEY, AGENT], 100))
        refused = await limiter.admit_all([KEY, AGENT], 100)
        assert not any(a.admitted for a in refused) and refused[1].retry_after_s > 59
        assert (refused[0].remaining_requests, refused[0].remaining_tokens) == (4, 900)
        assert len(scripts) == 2 and all(len(keys) == 2 for keys in scripts)  # one script an admission, no refund
        unlimited = await limiter.admit_all([KEY, ("agent:b", RateLimit())], 100)
        assert [a.admitted for a in unlimited] == [True, True] and unlimited[0].remaining_requests == 3
        assert len(scripts) == 3 and len(scripts[-1]) == 1  # a limit of none is not sent
        await link.aclose()

    anyio.run(main)


def test_per_slot_a_later_slot_refusing_gives_back_what_the_earlier_took(prefix: str) -> None:
    """As on a Cluster (the two keys hash to two slots): one script a slot, and the earlier slot's take given back
    (in Redis) when the later refuses."""
    from redis.crc import key_slot

    async def main() -> None:
        link, limiter, scripts = await _redis(prefix)
        limiter.per_slot = True
        keys = [link.key(f"ratelimit:{name}") for name, _ in (KEY, AGENT)]
        assert len({key_slot(key.encode()) for key in keys}) == 2
        assert all(a.admitted for a in await limiter.admit_all([KEY, AGENT], 100))
        assert scripts == [[keys[0]], [keys[1]]]
        refused = await limiter.admit_all([KEY, AGENT], 100)
        assert not any(a.admitted for a in refused) and refused[1].retry_after_s > 59
        assert len(scripts) == 5 and scripts[-1] == [keys[0]]  # admit, admit (refused), give back the key's
        after = await limiter.admit(*KEY, 100)
        assert (after.remaining_requests, after.remaining_tokens) == (3, 800)  # the refused request took nothing
        await link.aclose()

    anyio.run(main)


def test_redis_down_admits_all_or_nothing_in_the_process(prefix: str) -> None:
    async def main() -> None:
        link = RedisLink("redis://127.0.0.1:1/0", prefix=prefix, timeout_s=0.2)
        limiter = RedisRateLimiter(link)
        assert all(a.admitted for a in await limiter.admit_all([KEY, AGENT], 100))
        assert not any(a.admitted for a in await limiter.admit_all([KEY, AGENT], 100))
        assert (await limiter.admit(*KEY, 100)).remaining_requests == 3
        await link.aclose()

    anyio.run(main)


def test_a_refund_goes_back_where_the_admission_was_taken(prefix: str) -> None:
    """Taken in Redis and refunded while Redis is away: nothing goes into this process's buckets (before, the
    refund fell back to them: they ended up a request fuller than any request left them). Taken in the process
    while Redis was away and refunded once it is back: the process's buckets get it, not Redis's."""
    from switchman.state import RedisUnavailable

    limit = RateLimit(rpm=2)

    async def main() -> None:
        link, limiter, _ = await _redis(prefix)
        real = link.eval

        async def away(*_: object) -> Any:
            raise RedisUnavailable("down")

        link.eval = away  # type: ignore[method-assign]
        local = await limiter.admit("key:k", limit, 0)  # Redis away: taken in the process (1 left there)
        assert local.admitted and local.held_in == "local"
        link.eval = real  # type: ignore[method-assign]
        shared = await limiter.admit("key:k", limit, 0)  # Redis back: taken in Redis (1 left there)
        assert shared.admitted and shared.held_in == "redis" and shared.remaining_requests == 1
        await limiter.refund("key:k", limit, 0, taken=local)  # to the process's buckets, not Redis's
        assert (await limiter.admit("key:k", limit, 0)).remaining_requests == 0  # Redis's: 1 - 1, nothing added
        link.eval = away  # type: ignore[method-assign]
        assert (await limiter.admit("key:k", limit, 0)).remaining_requests == 1  # the process's: 2 - 1 + 1 - 1
        await limiter.refund("key:k", limit, 0, taken=shared)  # Redis away: dropped, not given to the process
        assert (await limiter.admit("key:k", limit, 0)).remaining_requests == 0  # (it was 1 before: 2 again)
        link.eval = real  # type: ignore[method-assign]
        await link.aclose()

    anyio.run(main)


def test_per_slot_redis_lost_after_the_first_slot_gives_it_back_and_admits_in_the_process(prefix: str) -> None:
    """The first slot's script ran, the second's failed: the first slot's take goes back to Redis, and the request
    is admitted against this process's buckets, all of them or none."""
    from switchman.state import RedisUnavailable

    async def main() -> None:
        link, limiter, scripts = await _redis(prefix)
        limiter.per_slot = True
        counted = link.eval

        async def second_fails(source: str, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
            if len(scripts) == 1:
                scripts.append(list(keys))
                raise RedisUnavailable("lost")
            return await counted(source, keys, args)

        link.eval = second_fails  # type: ignore[method-assign]
        admitted = await limiter.admit_all([KEY, AGENT], 100)
        assert all(a.admitted and a.held_in == "local" for a in admitted)
        assert len(scripts) == 3 and scripts[2] == scripts[0]  # key, agent (lost), the key's give-back
        link.eval = counted  # type: ignore[method-assign]
        after = await limiter.admit(*KEY, 100)
        assert (after.held_in, after.remaining_requests, after.remaining_tokens) == ("redis", 4, 900)
        await link.aclose()

    anyio.run(main)
