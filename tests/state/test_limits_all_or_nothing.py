"""`admit_all`: a request under several limits takes from every bucket or from none — in the process in one step,
on a single Redis in one script over every key, on a Cluster in one script per slot with what earlier slots took
given back (in Redis) when a later one refuses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from clock_support import Clock

from switchman.state import LocalRateLimiter, RateLimit, RedisLink, RedisRateLimiter

from .redis_support import counting_link

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
    link, scripts = await counting_link(prefix)
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


def test_per_slot_redis_lost_after_the_first_slot_admits_in_the_process_and_gives_the_take_back_when_it_is_back(
        prefix: str) -> None:
    """The first slot's script ran; the second's call times out with nothing answering and takes the link down
    (the link's own path, not a faked error): the request is admitted against this process's buckets, all of them
    or none, and the first slot's take goes back to Redis when the link comes back up (before, its give-back was
    dropped: the link was down, and the key's bucket stayed a request short)."""
    import redis

    from switchman.testing import RedisServer

    async def main() -> None:
        with RedisServer() as server:
            raw = redis.Redis.from_url(server.url)
            link = RedisLink(server.url, prefix=prefix, timeout_s=0.2, stall_s=0.0)
            assert await link.check()
            limiter = RedisRateLimiter(link)
            limiter.per_slot = True
            real, sent = link.eval, []

            async def paused_before_the_second(source: str, keys: Sequence[str], args: Sequence[str | int | float],
                                               ) -> Any:
                sent.append(list(keys))
                if len(sent) == 2:
                    raw.execute_command("CLIENT", "PAUSE", 600, "ALL")  # no reply within timeout_s: link down
                return await real(source, keys, args)

            link.eval = paused_before_the_second  # type: ignore[method-assign]
            admitted = await limiter.admit_all([KEY, AGENT], 100)
            assert all(a.admitted for a in admitted) and not link.up
            assert (await limiter.admit(*KEY, 100)).remaining_requests == 3  # in the process: 5 - 1 (all) - 1
            with anyio.fail_after(10):
                while not await link.check():
                    await anyio.sleep(0.05)
            assert sent[1:2] == [[link.key("ratelimit:agent:a")]]  # the second slot's script was the one lost
            after = await limiter.admit(*KEY, 100)
            assert (after.remaining_requests, after.remaining_tokens) == (4, 900)  # 5 - 1 + 1 - 1: nothing leaked
            await link.aclose()
            raw.close()

    anyio.run(main)


def test_a_key_given_twice_is_checked_and_taken_once(clock: Clock, prefix: str) -> None:
    """Before, both places were checked against the same buckets (one request's room) and both took: two requests
    gone, a bucket with room for one left in debt."""
    limit = RateLimit(rpm=2, tpm=1000)

    async def main() -> None:
        link, shared, _ = await _redis(prefix)
        for limiter in (LocalRateLimiter(clock=clock), shared):
            twice = await limiter.admit_all([("key:k", limit), ("key:k", limit)], 100)
            assert [a.admitted for a in twice] == [True, True] and twice[0] == twice[1]
            assert (twice[0].remaining_requests, twice[0].remaining_tokens) == (1, 900)
            assert (await limiter.admit("key:k", limit, 100)).remaining_requests == 0
        await link.aclose()

    anyio.run(main)
