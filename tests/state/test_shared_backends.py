"""The Redis backends on the machine's Redis (a key prefix of each test's own): rate limits, budgets, sessions."""

from __future__ import annotations

import time

import anyio
import pytest

from switchman._config import BudgetConfig
from switchman._exceptions import BudgetLimitError
from switchman.ledger import BudgetManager
from switchman.routing import SessionState
from switchman.state import RateLimit, RedisRateLimiter, RedisSessionStore, SharedBudgets

from .redis_support import SHARED_REDIS_URL, started_link

URL = SHARED_REDIS_URL  # test_redis_cluster runs these tests with it pointed at a Cluster


def test_rate_limit_buckets_are_shared_and_report_what_openai_sends(prefix: str) -> None:
    async def main() -> None:
        link = await started_link(URL, prefix)
        one, other = RedisRateLimiter(link), RedisRateLimiter(link)  # two replicas
        limit = RateLimit(rpm=3, tpm=1_000)
        first = await one.admit("agent:a", limit, 100)
        assert first.admitted and first.remaining_requests == 2 and first.remaining_tokens == 900
        assert first.limit_requests == 3 and first.limit_tokens == 1_000
        assert 19.0 < first.reset_requests_s <= 20.0  # one request of three refills in 20 s
        assert (await other.admit("agent:a", limit, 100)).admitted
        assert (await one.admit("agent:a", limit, 100)).admitted
        refused = await other.admit("agent:a", limit, 100)
        assert not refused.admitted and refused.remaining_requests == 0
        assert 0.0 < refused.retry_after_s <= 20.0
        assert (await other.admit("agent:b", limit, 100)).admitted  # another key, its own buckets
        too_big = await one.admit("agent:c", RateLimit(tpm=1_000), 600)
        assert too_big.admitted and not (await one.admit("agent:c", RateLimit(tpm=1_000), 600)).admitted
        assert one.usage("agent:c", RateLimit(tpm=1_000)) == pytest.approx(0.6, abs=0.01)
        await link.aclose()

    anyio.run(main)


def test_budget_reserve_refuse_settle_and_rebuild(prefix: str) -> None:
    budgets = [BudgetConfig(scope="agent", name="a", usd=1.0),
               BudgetConfig(scope="route", name="r", usd=10.0, on_exceed="downgrade", downgrade_to="cheap")]

    async def main() -> None:
        link = await started_link(URL, prefix)
        one, other = SharedBudgets(BudgetManager(budgets), link), SharedBudgets(BudgetManager(budgets), link)
        held = await one.areserve(agent="a", key_id=None, route=None, estimated_usd=0.6)
        assert held.held and [b.name for b in held.budgets] == ["a"]
        with pytest.raises(BudgetLimitError) as refused:
            await other.areserve(agent="a", key_id=None, route=None, estimated_usd=0.6)  # 0.6 held elsewhere
        assert refused.value.reserved_usd == pytest.approx(0.6) and refused.value.spent_usd == 0.0
        assert await held.aresize(0.9) and not await held.aresize(1.2)
        held.settle(0.5)
        await anyio.sleep(0.2)  # settled in the background
        nxt = await other.areserve(agent="a", key_id=None, route=None, estimated_usd=0.5)
        assert nxt.held
        with pytest.raises(BudgetLimitError) as full:
            await one.areserve(agent="a", key_id=None, route=None, estimated_usd=0.01)
        assert full.value.spent_usd == pytest.approx(0.5) and full.value.reserved_usd == pytest.approx(0.5)
        nxt.release()
        # A request under two budgets: the agent's refuses, so nothing stays held in the route's.
        with pytest.raises(BudgetLimitError):
            await one.areserve(agent="a", key_id=None, route="r", estimated_usd=0.6)
        await anyio.sleep(0.2)
        route = await one.areserve(agent=None, key_id=None, route="r", estimated_usd=10.0)
        assert route.held  # the whole 10.0 fits: the refused request gave back its 0.6
        down = await other.areserve(agent=None, key_id=None, route="r", estimated_usd=1.0)
        assert not down.held and down.downgrade_to == "cheap"
        assert (await other.areserve(agent=None, key_id=None, route="r", estimated_usd=1.0, model="cheap")).held
        await link.aclose()

    anyio.run(main)


def test_session_states_are_shared_with_their_ttl(prefix: str) -> None:
    async def main() -> None:
        link = await started_link(URL, prefix)
        store = RedisSessionStore(link, ttl_s=0.5)
        state = SessionState(model="mid", updated_at=time.monotonic(), context_tokens=120, turns=3,
                             pending="escalation requested by the caller", last_request_id="r1")
        await store.put("k:s1", state)
        found = await RedisSessionStore(link, ttl_s=0.5).get("k:s1")  # another replica
        assert found is not None and found.model == "mid" and found.turns == 3 and found.pending == state.pending
        assert found.updated_at == pytest.approx(state.updated_at, abs=0.05)
        assert await store.get("k:unknown") is None
        ttl_ms = await link.run(lambda r: r.pttl(link.key("session:k:s1")))
        assert 0 < ttl_ms <= 500  # the session TTL is the key's expiry
        await link.aclose()

    anyio.run(main)


def test_session_writes_are_ordered_by_turns_and_feedback_marks_in_one_step(prefix: str) -> None:
    """A late write with fewer turns cannot undo a newer turn (whatever the clocks say); a feedback mark sets
    `pending` inside Redis, only on the turn it was given for, and keeps the session's expiry."""
    async def main() -> None:
        link = await started_link(URL, prefix)
        store = RedisSessionStore(link, ttl_s=30)
        now = time.monotonic()
        newer = SessionState(model="mid", updated_at=now - 5, context_tokens=10, turns=4, last_request_id="r4")
        older = SessionState(model="cheap", updated_at=now, context_tokens=10, turns=3, last_request_id="r3")
        assert await store.put("s", newer)
        assert not await store.put("s", older)  # a later clock, fewer turns: refused
        found = await store.get("s")
        assert found is not None and found.model == "mid" and found.turns == 4
        assert not await store.mark("s", "negative feedback (score 0)", "r3")  # not the latest turn
        assert await store.mark("s", "negative feedback (score 0)", "r4")
        found = await store.get("s")
        assert found is not None and found.pending == "negative feedback (score 0)" and found.turns == 4
        assert found.updated_at == pytest.approx(newer.updated_at, abs=0.05)
        assert 0 < await link.run(lambda r: r.pttl(link.key("session:s"))) <= 30_000
        assert not await store.mark("unknown", "x")
        await link.aclose()

    anyio.run(main)
