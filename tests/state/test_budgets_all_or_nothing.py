"""Shared budgets: a request under several budgets is held in all of them or in none — on a single Redis in one
script over every budget's keys (no replica sees a part of it held), on a Cluster in one script per slot with what
earlier slots took given back when a later one refuses. Read back from Redis, not from the process."""

from __future__ import annotations

import asyncio
import random
import time

import anyio
import pytest

from switchman._config import BudgetConfig
from switchman._exceptions import BudgetLimitError
from switchman.ledger import BudgetManager, period_bounds
from switchman.state import RedisLink, SharedBudgets, SharedReservation

from .conftest import counting_link as _link

AGENT = BudgetConfig(scope="agent", name="a", usd=1.0)
KEY = BudgetConfig(scope="key", name="k", usd=0.5)
ROUTE = BudgetConfig(scope="route", name="r", usd=2.0)


def _key(link: RedisLink, budget: BudgetConfig) -> str:
    start, _ = period_bounds(time.time(), budget.period)
    return link.key(f"budget:{budget.scope}:{budget.name}", budget.period, str(int(start)))


async def _in_redis(link: RedisLink, budget: BudgetConfig) -> tuple[float, float, dict[bytes, bytes]]:
    """(spent, reserved, held amounts by reservation id) of `budget`'s current period, read from Redis."""
    key = _key(link, budget)
    counter = await link.run(lambda r: r.hgetall(key))
    held = await link.run(lambda r: r.hgetall(f"{key}:held"))
    return float(counter.get(b"spent", 0.0)), float(counter.get(b"reserved", 0.0)), held


def test_a_later_budget_refusing_leaves_the_earlier_one_as_it_was_in_redis(prefix: str) -> None:
    """The key's budget refuses: the agent's (checked before it) holds exactly what it held, read from Redis right
    after the refusal (before, the agent's budget held the refused request's estimate until the give-back's
    batch was written). One script a reservation, whether it is held or refused."""
    async def main() -> None:
        link, scripts = await _link(prefix)
        budgets = SharedBudgets(BudgetManager([AGENT, KEY]), link)
        held = await budgets.areserve(agent="a", key_id="k", route=None, estimated_usd=0.4)
        assert isinstance(held, SharedReservation)
        with pytest.raises(BudgetLimitError, match=r"key budget 'k' exceeded: limit \$0\.5000") as refused:
            await budgets.areserve(agent="a", key_id="k", route=None, estimated_usd=0.3)
        assert (refused.value.scope, refused.value.spent_usd, refused.value.reserved_usd) == ("key", 0.0, 0.4)
        for budget in (AGENT, KEY):
            spent, reserved, holds = await _in_redis(link, budget)
            assert (spent, reserved) == (0.0, pytest.approx(0.4)), budget.scope
            assert list(holds) == [held.id.encode()], budget.scope
        assert [len(found) for found in scripts] == [8, 8]  # both budgets' four keys in one script; no give-back
        await link.aclose()

    anyio.run(main)


def test_a_request_one_budget_refuses_never_holds_another_that_others_share(prefix: str) -> None:
    """Many tasks on two replicas at once: those under the agent's and a spent key's budget are all refused by the
    key; those under the agent's budget alone fit it exactly, and all of them are held (before, the refused ones
    held the agent's budget between their two scripts, and agent-only requests were refused for a budget they
    fitted). No budget holds more than its limit at any point read."""
    spent_key = BudgetConfig(scope="key", name="k", usd=0.01)

    async def main() -> None:
        link, _ = await _link(prefix)
        replicas = [SharedBudgets(BudgetManager([AGENT, spent_key]), link) for _ in range(2)]

        async def request(n: int) -> bool:
            budgets = replicas[n % 2]
            try:
                await budgets.areserve(agent="a", key_id="k" if n % 4 < 2 else None, route=None, estimated_usd=0.05)
            except BudgetLimitError as refused:
                assert refused.scope == "key"
                return False
            return True

        results = await asyncio.gather(*(request(n) for n in range(40)))
        assert [n for n, held in enumerate(results) if held] == [n for n in range(40) if n % 4 >= 2]
        assert (await _in_redis(link, AGENT))[:2] == (0.0, pytest.approx(1.0))
        assert (await _in_redis(link, spent_key))[:2] == (0.0, 0.0)
        await link.aclose()

    anyio.run(main)


def test_concurrent_requests_never_overspend_any_budget(prefix: str) -> None:
    """Many tasks on two replicas, under two and three budgets (an agent's, one of two keys', a route's for half),
    each settling at most its estimate: every budget ends spent within its limit, nothing left held."""
    second_key = BudgetConfig(scope="key", name="k2", usd=0.8)
    route = BudgetConfig(scope="route", name="r", usd=0.3)
    every = (AGENT, KEY, second_key, route)

    async def main() -> None:
        link, _ = await _link(prefix)
        replicas = [SharedBudgets(BudgetManager(list(every)), link) for _ in range(2)]
        rng = random.Random(8)
        refused: list[str] = []

        async def request(n: int) -> None:
            budgets = replicas[n % 2]
            estimate = rng.uniform(0.01, 0.04)
            try:
                held = await budgets.areserve(agent="a", key_id="k" if n % 3 else "k2",
                                              route="r" if n % 2 else None, estimated_usd=estimate)
            except BudgetLimitError as error:
                refused.append(error.scope)
                return
            await asyncio.sleep(0)
            held.settle(estimate * rng.choice((0.5, 1.0)))

        await asyncio.gather(*(request(n) for n in range(150)))
        for budgets in replicas:
            await budgets.drain()
        for budget in every:
            spent, reserved, holds = await _in_redis(link, budget)
            assert spent <= budget.usd + 1e-9 and (reserved, holds) == (0.0, {}), budget.name
        assert len(refused) > 10
        await link.aclose()

    anyio.run(main)


def test_a_settle_counts_in_each_budget_and_a_refused_growth_changes_none(prefix: str) -> None:
    """A growth is one script too: the key's budget refusing it leaves the agent's and the route's holds as they
    were, also for a request made meanwhile (before, the agent's budget held the growth until the key's script
    refused it, and a request under the agent's budget alone was refused for a budget it fitted). A settle counts
    in each budget."""
    async def main() -> None:
        link, scripts = await _link(prefix)
        budgets = SharedBudgets(BudgetManager([AGENT, KEY, ROUTE]), link)
        held = await budgets.areserve(agent="a", key_id="k", route="r", estimated_usd=0.3)
        assert isinstance(held, SharedReservation)
        assert await held.aresize(0.4)
        grown, alongside = await asyncio.gather(  # the agent's $1 fits 0.4 + 0.5, not the refused growth's 0.6 + 0.5
            held.aresize(0.6), budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.5))
        assert not grown  # the key's $0.5 cannot take it
        assert isinstance(alongside, SharedReservation)
        alongside.release()
        await budgets.drain()
        for budget in (AGENT, KEY, ROUTE):
            assert (await _in_redis(link, budget))[:2] == (0.0, pytest.approx(0.4)), budget.scope
        assert len(scripts) == 5  # reserve, growth, refused growth, the one alongside, its release
        held.settle(0.35)
        await budgets.drain()
        for budget in (AGENT, KEY, ROUTE):
            assert (await _in_redis(link, budget)) == (pytest.approx(0.35), 0.0, {}), budget.scope
        other = await budgets.areserve(agent="a", key_id=None, route="r", estimated_usd=0.6)
        other.release()
        await budgets.drain()
        assert (await _in_redis(link, AGENT)) == (pytest.approx(0.35), 0.0, {})
        assert (await _in_redis(link, KEY))[:2] == (pytest.approx(0.35), 0.0)
        await link.aclose()

    anyio.run(main)


def test_per_slot_a_later_slot_refusing_gives_back_what_the_earlier_took(prefix: str) -> None:
    """As on a Cluster (each budget's keys hash to a slot of their own): one script a slot, in order, and the earlier
    slot's hold given back when the later refuses; a refused growth gives back the earlier slot's growth."""
    from redis.crc import key_slot

    async def main() -> None:
        link, scripts = await _link(prefix)
        budgets = SharedBudgets(BudgetManager([AGENT, KEY]), link)
        budgets.per_slot = True
        keys = [_key(link, budget) for budget in (AGENT, KEY)]
        assert len({key_slot(key.encode()) for key in keys}) == 2
        held = await budgets.areserve(agent="a", key_id="k", route=None, estimated_usd=0.4)
        assert isinstance(held, SharedReservation)
        assert [found[0] for found in scripts] == keys and all(len(found) == 4 for found in scripts)
        with pytest.raises(BudgetLimitError, match="key budget 'k' exceeded"):
            await budgets.areserve(agent="a", key_id="k", route=None, estimated_usd=0.3)
        assert not await held.aresize(0.6)
        await budgets.drain()
        for budget in (AGENT, KEY):
            spent, reserved, holds = await _in_redis(link, budget)
            assert (spent, reserved, list(holds)) == (0.0, pytest.approx(0.4), [held.id.encode()]), budget.scope
        held.settle(0.1)
        await budgets.drain()
        for budget in (AGENT, KEY):
            assert await _in_redis(link, budget) == (pytest.approx(0.1), 0.0, {}), budget.scope
        await link.aclose()

    anyio.run(main)


def test_a_refusal_writes_what_the_sweep_dropped_in_the_budgets_before_it(prefix: str) -> None:
    """A reservation past its deadline in the agent's budget is dropped by the next script, even one the key's
    budget refuses: the agent's counter no longer counts it (and the refused request holds nothing)."""
    async def main() -> None:
        link, _ = await _link(prefix)
        dead = SharedBudgets(BudgetManager([AGENT]), link, hold_s=0.2)
        await dead.areserve(agent="a", key_id=None, route=None, estimated_usd=0.7)  # never settled
        budgets = SharedBudgets(BudgetManager([AGENT, KEY]), link)
        await anyio.sleep(0.3)
        with pytest.raises(BudgetLimitError, match="key budget 'k'"):
            await budgets.areserve(agent="a", key_id="k", route=None, estimated_usd=0.6)
        assert await _in_redis(link, AGENT) == (0.0, 0.0, {})
        assert await _in_redis(link, KEY) == (0.0, 0.0, {})
        assert await link.run(lambda r: r.exists(_key(link, KEY))) == 0  # no key made for a refusal
        await link.aclose()

    anyio.run(main)


def test_a_later_budget_whose_spend_is_no_number_sends_the_request_to_the_local_check_holding_nothing(
        prefix: str) -> None:
    """The key's `spent` in Redis is no number (another writer): the request is decided by the local check, and the
    agent's budget in Redis holds nothing of it, read right away (before, the agent's hold was given back only with
    the next settle batch)."""
    async def main() -> None:
        link, _ = await _link(prefix)
        budgets = SharedBudgets(BudgetManager([AGENT, KEY]), link)
        await link.run(lambda r: r.hset(_key(link, KEY), "spent", "abc"))
        local = await budgets.areserve(agent="a", key_id="k", route=None, estimated_usd=0.3)
        assert local.held and not isinstance(local, SharedReservation)
        assert await _in_redis(link, AGENT) == (0.0, 0.0, {})
        local.release()
        await budgets.drain()
        await link.aclose()

    anyio.run(main)
