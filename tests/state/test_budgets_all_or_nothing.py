"""Shared budgets: a request under several budgets is held in all of them or in none — on a single Redis in one
script over every budget's keys (no replica sees a part of it held), on a Cluster in one script per slot with what
earlier slots took given back when a later one refuses. Read back from Redis, not from the process."""

from __future__ import annotations

import asyncio
import gc
import math
import random
import warnings
from typing import Any

import anyio
import pytest
from clock_support import Clock

from switchman._config import BudgetConfig
from switchman._exceptions import BudgetLimitError
from switchman.ledger import BudgetManager, Reservation
from switchman.state import RedisLink, SharedBudgets, SharedReservation

from .conftest import budget_key, move_deadline
from .redis_support import counting_link

AGENT = BudgetConfig(scope="agent", name="a", usd=1.0)
KEY = BudgetConfig(scope="key", name="k", usd=0.5)
ROUTE = BudgetConfig(scope="route", name="r", usd=2.0)


async def _in_redis(
    link: RedisLink, budget: BudgetConfig, now: float | None = None,
) -> tuple[float, float, dict[bytes, bytes]]:
    """(spent, reserved, held amounts by reservation id) of `budget`'s period at `now` (the current one by default),
    read from Redis."""
    key = budget_key(link, budget, now)
    counter = await link.run(lambda r: r.hgetall(key))
    held = await link.run(lambda r: r.hgetall(f"{key}:held"))
    return float(counter.get(b"spent", 0.0)), float(counter.get(b"reserved", 0.0)), held


def test_a_later_budget_refusing_leaves_the_earlier_one_as_it_was_in_redis(prefix: str) -> None:
    """The key's budget refuses: the agent's (checked before it) holds exactly what it held, read from Redis right
    after the refusal (before, the agent's budget held the refused request's estimate until the give-back's
    batch was written). One script a reservation, whether it is held or refused."""
    async def main() -> None:
        link, scripts = await counting_link(prefix)
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
        link, _ = await counting_link(prefix)
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
        link, _ = await counting_link(prefix)
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
        link, scripts = await counting_link(prefix)
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
        link, scripts = await counting_link(prefix)
        budgets = SharedBudgets(BudgetManager([AGENT, KEY]), link)
        budgets.per_slot = True
        keys = [budget_key(link, budget) for budget in (AGENT, KEY)]
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


def test_a_refusal_writes_what_the_sweep_dropped_in_the_budgets_before_it(prefix: str, clock: Clock) -> None:
    """A reservation past its deadline in the agent's budget is dropped by the next script, even one the key's
    budget refuses: the agent's counter no longer counts it (and the refused request holds nothing)."""
    async def main() -> None:
        link, _ = await counting_link(prefix)
        dead = SharedBudgets(BudgetManager([AGENT], clock=clock), link, clock=clock)
        gone = await dead.areserve(agent="a", key_id=None, route=None, estimated_usd=0.7)  # never settled
        budgets = SharedBudgets(BudgetManager([AGENT, KEY], clock=clock), link, clock=clock)
        await move_deadline(link, AGENT, gone.id, now=clock.now)  # `hold_s` on
        with pytest.raises(BudgetLimitError, match="key budget 'k'"):
            await budgets.areserve(agent="a", key_id="k", route=None, estimated_usd=0.6)
        assert await _in_redis(link, AGENT, clock.now) == (0.0, 0.0, {})
        assert await _in_redis(link, KEY, clock.now) == (0.0, 0.0, {})
        assert await link.run(lambda r: r.exists(budget_key(link, KEY, clock.now))) == 0  # no key made for a refusal
        await link.aclose()

    anyio.run(main)


def test_a_later_budget_whose_spend_is_no_number_sends_the_request_to_the_local_check_holding_nothing(
        prefix: str) -> None:
    """The key's `spent` in Redis is no number (another writer): the request is decided by the local check, and the
    agent's budget in Redis holds nothing of it, read right away (before, the agent's hold was given back only with
    the next settle batch)."""
    async def main() -> None:
        link, _ = await counting_link(prefix)
        budgets = SharedBudgets(BudgetManager([AGENT, KEY]), link)
        await link.run(lambda r: r.hset(budget_key(link, KEY), "spent", "abc"))
        local = await budgets.areserve(agent="a", key_id="k", route=None, estimated_usd=0.3)
        assert local.held and not isinstance(local, SharedReservation)
        assert await _in_redis(link, AGENT) == (0.0, 0.0, {})
        local.release()
        await budgets.drain()
        await link.aclose()

    anyio.run(main)


@pytest.mark.parametrize("down_first", [True, False])
def test_two_budgets_on_one_counter_hold_once_and_each_checks_its_own_limit(prefix: str, down_first: bool) -> None:
    """A downgrade and a reject budget of one agent and period share one counter in Redis: a request is held in it
    once (before, the second budget re-read the first's hold and wrote it doubled, with a stale `reserved`: releasing
    one request then dropped the other's hold too). Each budget still checks its own limit, as the local check does."""
    down = BudgetConfig(scope="agent", name="coder", usd=1.0, on_exceed="downgrade", downgrade_to="mini")
    reject = BudgetConfig(scope="agent", name="coder", usd=1.5)
    both = [down, reject] if down_first else [reject, down]

    async def main() -> None:
        link, _ = await counting_link(prefix)
        budgets = SharedBudgets(BudgetManager(both), link)
        first = await budgets.areserve(agent="coder", key_id=None, route=None, estimated_usd=0.3, model="big")
        second = await budgets.areserve(agent="coder", key_id=None, route=None, estimated_usd=0.3, model="big")
        assert isinstance(first, SharedReservation) and isinstance(second, SharedReservation)
        first.release()
        await budgets.drain()
        spent, reserved, holds = await _in_redis(link, down)
        assert (spent, reserved, holds) == (0.0, pytest.approx(0.3), {second.id.encode(): b"0.3"})
        for estimate, model in ((0.8, "big"), (0.8, "mini"), (1.3, "mini"), (1.3, "big")):
            local = BudgetManager(both)
            local.reserve(agent="coder", key_id=None, route=None, estimated_usd=0.3, model="big")
            expected: object
            try:
                expected = local.reserve(agent="coder", key_id=None, route=None, estimated_usd=estimate,
                                         model=model).downgrade_to
            except BudgetLimitError as error:
                expected = error.limit_usd
            try:
                got = await budgets.areserve(agent="coder", key_id=None, route=None, estimated_usd=estimate,
                                             model=model)
            except BudgetLimitError as error:
                assert error.limit_usd == expected == 1.5, (estimate, model)
            else:
                assert got.downgrade_to == expected, (estimate, model)
                got.release()
            await budgets.drain()
            assert (await _in_redis(link, down))[:2] == (0.0, pytest.approx(0.3)), (estimate, model)
        await link.aclose()

    anyio.run(main)


def test_a_later_budget_whose_held_amounts_are_no_hash_leaves_no_hold_in_redis(prefix: str) -> None:
    """Another writer made the key's `:held` a string: the script fails (the request goes to the local check) before
    it writes anything, so the agent's budget holds nothing of it in Redis, read right after the failed call (before,
    the agent's hold was written before the key's held amount was read, and stayed visible to the other replicas
    until the give-back's batch was written)."""
    async def main() -> None:
        link, _ = await counting_link(prefix)
        budgets = SharedBudgets(BudgetManager([AGENT, KEY]), link)
        await link.run(lambda r: r.set(f"{budget_key(link, KEY)}:held", "garbage"))
        local = await budgets.areserve(agent="a", key_id="k", route=None, estimated_usd=0.3)
        assert local.held and not isinstance(local, SharedReservation)
        reader = RedisLink("redis://127.0.0.1:6379/0", prefix=prefix, timeout_s=2.0)
        await reader.check()
        assert await _in_redis(reader, AGENT) == (0.0, 0.0, {})
        local.release()
        await budgets.drain()
        await reader.aclose()
        await link.aclose()

    anyio.run(main)


@pytest.mark.parametrize("broken", ["spent", "held"])
def test_a_reserve_that_wrote_nothing_sends_no_give_back(prefix: str, broken: str) -> None:
    """A reserve that wrote nothing queues no settle for it (before, a give-back went to every budget, and its
    settles were written, or kept for the replay and retried for DONE_KEEP_S, for a request never held): the key's
    spend is no number (answered UNKNOWN), or its `:held` is no hash (another writer's: an error reply before the
    script's first write)."""
    from switchman.state._redis_budget_lua import RESERVE, SETTLE_MANY

    async def main() -> None:
        sources: list[str] = []
        link, _ = await counting_link(prefix, sources)
        budgets = SharedBudgets(BudgetManager([AGENT, KEY]), link)
        if broken == "spent":
            await link.run(lambda r: r.hset(budget_key(link, KEY), "spent", "abc"))
        else:
            await link.run(lambda r: r.set(f"{budget_key(link, KEY)}:held", "garbage"))
        local = await budgets.areserve(agent="a", key_id="k", route=None, estimated_usd=0.3)
        assert local.held and not isinstance(local, SharedReservation)
        local.release()
        await budgets.drain()
        assert sources[0] == RESERVE and SETTLE_MANY not in sources
        assert not budgets._unsent
        await link.aclose()

    anyio.run(main)


@pytest.mark.parametrize("per_slot", [False, True])
def test_a_refusal_in_redis_is_the_local_checks_answer(prefix: str, per_slot: bool) -> None:
    """Redis decides as the local check for the same budgets: a downgrade budget over its limit is preferred to a
    reject budget over its limit checked before it (before, Redis refused at the first: the answer depended on
    whether Redis was up). On a Cluster (one script a slot) too: the later slot is checked, nothing held in it."""
    reject = BudgetConfig(scope="agent", name="a", usd=0.5)
    down = BudgetConfig(scope="key", name="k", usd=0.5, on_exceed="downgrade", downgrade_to="mini")

    def answer(reservation: Reservation) -> str | None:
        return reservation.downgrade_to or ("held" if reservation.held else None)

    async def main() -> None:
        link, _ = await counting_link(prefix)
        budgets = SharedBudgets(BudgetManager([reject, down]), link)
        budgets.per_slot = per_slot
        local = BudgetManager([reject, down])
        for estimate in (0.6, 0.2):
            here = local.reserve(agent="a", key_id="k", route=None, estimated_usd=estimate, model="big")
            there = await budgets.areserve(agent="a", key_id="k", route=None, estimated_usd=estimate, model="big")
            assert answer(here) == answer(there) == ("mini" if estimate > 0.5 else "held"), estimate
        await budgets.drain()
        for budget in (reject, down):
            assert (await _in_redis(link, budget))[:2] == (0.0, pytest.approx(0.2)), budget.scope
        await link.aclose()

    anyio.run(main)


def test_a_zero_estimate_on_a_budget_spent_past_its_limit_is_refused_as_by_the_local_check(prefix: str) -> None:
    """A $0 estimate on a budget spent past its limit: the local check refuses it, and so does Redis (before, Redis
    let any $0 estimate through, so the answer depended on whether Redis was up)."""
    async def main() -> None:
        link, _ = await counting_link(prefix)
        budgets = SharedBudgets(BudgetManager([AGENT]), link)
        local = BudgetManager([AGENT])
        local.reserve(agent="a", key_id=None, route=None, estimated_usd=0.4).settle(1.2)
        (await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.4)).settle(1.2)
        await budgets.drain()
        with pytest.raises(BudgetLimitError) as local_refusal:
            local.reserve(agent="a", key_id=None, route=None, estimated_usd=0.0)
        with pytest.raises(BudgetLimitError) as refusal:
            await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.0)
        assert (refusal.value.scope, refusal.value.spent_usd) == (local_refusal.value.scope, pytest.approx(1.2))
        await link.aclose()

    anyio.run(main)


def test_a_growth_of_a_reservation_past_its_deadline_holds_the_growth_alone(prefix: str, clock: Clock) -> None:
    """A reservation past its deadline is dropped by the script that grows it: what it holds afterwards is the
    growth alone, in its held amount as in the counter (a guard: the held amounts are now read before the sweep
    drops anything)."""
    async def main() -> None:
        link, _ = await counting_link(prefix)
        budgets = SharedBudgets(BudgetManager([AGENT, KEY], clock=clock), link, clock=clock)
        held = await budgets.areserve(agent="a", key_id="k", route=None, estimated_usd=0.3)
        assert isinstance(held, SharedReservation)
        for budget in (AGENT, KEY):
            await move_deadline(link, budget, held.id, now=clock.now)  # `hold_s` on
        assert await held.aresize(0.5)
        for budget in (AGENT, KEY):
            assert await _in_redis(link, budget, clock.now) == (0.0, pytest.approx(0.2), {held.id.encode(): b"0.2"}), (
                budget)
        held.release()
        await budgets.drain()
        await link.aclose()

    anyio.run(main)


def _route_sharing_a_slot_with(key: str) -> str:
    """A route name whose budget's keys hash to the slot of `key`'s (the hash tag alone decides the slot)."""
    from redis.crc import key_slot

    target = key_slot(key.encode())
    return next(f"r{n}" for n in range(10**6) if key_slot(f"{{budget:route:r{n}}}".encode()) == target)


@pytest.mark.parametrize("on_exceed", ["reject", "downgrade"])
def test_per_slot_budgets_not_adjacent_in_one_slot_keep_the_order_the_local_check_decides_in(
        prefix: str, on_exceed: str) -> None:
    """Agent and route budgets on one Cluster slot, the key's between them on another: the key's budget, before the
    route's in the order budgets apply, decides the refusal (or downgrade) as the local check does (before, the
    agent's and route's were one script, run before the key's: the route's decided)."""
    async def main() -> None:
        link, _ = await counting_link(prefix)
        agent = BudgetConfig(scope="agent", name="a", usd=1.0)
        route = _route_sharing_a_slot_with(budget_key(link, agent))
        extra: dict[str, str] = {}
        defs = [agent]
        for scope, name, to in (("key", "k", "cheap"), ("route", route, "cheaper")):
            if on_exceed == "downgrade":
                extra = {"on_exceed": "downgrade", "downgrade_to": to}
            defs.append(BudgetConfig(scope=scope, name=name, usd=0.1, **extra))  # type: ignore[arg-type]
        budgets = SharedBudgets(BudgetManager(defs), link)
        budgets.per_slot = True
        local = BudgetManager(defs)

        async def decide(manager: BudgetManager | SharedBudgets) -> str:
            try:
                found = await manager.areserve(agent="a", key_id="k", route=route, estimated_usd=0.5, model="big")
            except BudgetLimitError as refused:
                return f"refused by {refused.scope}"
            return f"downgrade to {found.downgrade_to}"

        expected = "downgrade to cheap" if on_exceed == "downgrade" else "refused by key"
        assert await decide(local) == await decide(budgets) == expected
        await budgets.drain()
        await link.aclose()

    anyio.run(main)


def test_per_slot_a_refusal_gives_the_earlier_slots_hold_back_before_the_downgraded_retry(prefix: str) -> None:
    """The key's budget (a later slot) downgrades a request the agent's fits: the gateway retries at once with the
    downgrade model, and the agent's budget no longer holds the first estimate — the retry is held, as by the local
    check and on a single Redis (before, the give-back waited for the next settle batch and the retry was refused)."""
    agent = BudgetConfig(scope="agent", name="a", usd=1.0)
    key = BudgetConfig(scope="key", name="k", usd=0.1, on_exceed="downgrade", downgrade_to="cheap")

    async def main() -> None:
        link, _ = await counting_link(prefix)
        budgets = SharedBudgets(BudgetManager([agent, key]), link)
        budgets.per_slot = True
        first = await budgets.areserve(agent="a", key_id="k", route=None, estimated_usd=0.8, model="big")
        assert first.downgrade_to == "cheap" and not first.held
        assert await _in_redis(link, agent) == (0.0, 0.0, {})  # read right away: nothing held for it
        retry = await budgets.areserve(agent="a", key_id="k", route=None, estimated_usd=0.3, model="cheap")
        assert isinstance(retry, SharedReservation)
        retry.release()
        await budgets.drain()
        assert await _in_redis(link, agent) == (0.0, 0.0, {})
        await link.aclose()

    anyio.run(main)


def test_large_amounts_are_stored_exactly_and_decide_as_the_local_check(prefix: str) -> None:
    """Past $100k, 14 significant digits (Lua's tostring) lose more than the 1e-9 slack: held amounts and `reserved`
    are stored with 17 (a double exactly), so a request that fits exactly is held as by the local check (before,
    the stored hold rounded up by 4e-9 and Redis refused it)."""
    big = BudgetConfig(scope="agent", name="p", usd=200000.0)
    first, second = 123456.789012346, 200000.0 - 123456.789012346  # (tostring: 123456.78901235)

    async def main() -> None:
        link, _ = await counting_link(prefix)
        budgets = SharedBudgets(BudgetManager([big]), link)
        local = BudgetManager([big])
        held = [await manager.areserve(agent="p", key_id=None, route=None, estimated_usd=first)
                for manager in (local, budgets)]
        assert isinstance(held[1], SharedReservation)
        _, reserved, holds = await _in_redis(link, big)
        assert (reserved, {rid: float(amount) for rid, amount in holds.items()}) == (first, {held[1].id.encode(): first})
        for manager in (local, budgets):
            assert (await manager.areserve(agent="p", key_id=None, route=None, estimated_usd=second)).held
        await budgets.drain()
        await link.aclose()

    anyio.run(main)


@pytest.mark.parametrize("estimate", [math.nan, math.inf])
@pytest.mark.parametrize("shared", [False, True])
def test_a_non_finite_estimate_is_refused_and_leaves_the_budget_enforced(prefix: str, estimate: float,
                                                                         shared: bool) -> None:
    """A NaN or infinite estimate (a price no number) is refused, holds nothing, and the budget still refuses what
    does not fit (before, a NaN was held: `reserved` became NaN and every later check passed, locally and in
    Redis). A growth to it is refused too."""
    async def main() -> None:
        link, _ = await counting_link(prefix)
        budgets: BudgetManager | SharedBudgets = BudgetManager([AGENT])
        if shared:
            budgets = SharedBudgets(BudgetManager([AGENT]), link)
        with pytest.raises(BudgetLimitError):
            await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=estimate)
        held = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.4)
        assert held.held and not await held.aresize(estimate) and not held.resize(estimate)
        with pytest.raises(BudgetLimitError):
            await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=5.0)
        assert [reserved for _, _, reserved in BudgetManager.usage(budgets.local if shared else budgets)] == (
            [0.0] if shared else [pytest.approx(0.4)])
        if shared:
            assert (await _in_redis(link, AGENT))[:2] == (0.0, pytest.approx(0.4))
        held.release()
        if isinstance(budgets, SharedBudgets):
            await budgets.drain()
        await link.aclose()

    anyio.run(main)


@pytest.mark.parametrize("amount", ["nan", "inf", "-nan"])
def test_the_reserve_script_refuses_an_amount_no_finite_number_and_writes_nothing(prefix: str, amount: str) -> None:
    """The script's own guard (another caller, an old replica): a NaN or infinite amount is refused, nothing held
    (before, `amount >= 0` was false for NaN and the NaN was held)."""
    from switchman.state._budgets import _keys
    from switchman.state._redis_budget_lua import RESERVE

    async def main() -> None:
        link, _ = await counting_link(prefix)
        key = budget_key(link, AGENT)
        ok, index, _, _ = await link.eval(RESERVE, _keys(key), [amount, "r1", 60_000, 1, 1.0, 3600, 1])
        assert (int(ok), int(index)) == (0, 1)
        assert await link.run(lambda r: r.exists(*_keys(key))) == 0
        await link.aclose()

    anyio.run(main)


@pytest.mark.parametrize("field", ["input_price", "output_price", "cached_input_price"])
def test_a_price_no_finite_number_is_a_config_error(field: str) -> None:
    """`.inf` passed `ge=0`: every estimate of the model was infinite (refused by every budget, or before, a NaN
    from inf * 0 tokens let it through)."""
    from switchman._config import parse_config
    from switchman._exceptions import ConfigError

    model = {"provider": "openai", "input_price": 1.0, "output_price": 2.0, field: math.inf}
    with pytest.raises(ConfigError, match=field):
        parse_config({"models": {"m": model}})


def test_a_settle_cost_no_finite_number_loses_none_of_its_batchs_other_costs(prefix: str) -> None:
    """One batch settles two reservations, one with a NaN cost: the other's cost is counted (before, the batch's sum
    became NaN and nothing was added)."""
    async def main() -> None:
        link, _ = await counting_link(prefix)
        budgets = SharedBudgets(BudgetManager([AGENT]), link)
        one = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.3)
        two = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.3)
        assert isinstance(two, SharedReservation)
        one.settle(0.2)
        budgets.settle(two._holds, two.id, math.nan)  # (the script's own guard: a reservation counts its estimate)
        await budgets.drain()
        assert await _in_redis(link, AGENT) == (pytest.approx(0.2), 0.0, {})
        await link.aclose()

    anyio.run(main)


@pytest.mark.parametrize("shared", [False, True])
def test_an_actual_cost_no_finite_number_counts_the_estimate(prefix: str, shared: bool) -> None:
    """A settle whose cost is NaN counts the reservation's estimate: the budget stays enforced (before, the local
    spend became NaN and every later check passed; Redis counted $0)."""
    async def main() -> None:
        link, _ = await counting_link(prefix)
        budgets: BudgetManager | SharedBudgets = SharedBudgets(BudgetManager([AGENT]), link) if shared else (
            BudgetManager([AGENT]))
        (await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.4)).settle(math.nan)
        if isinstance(budgets, SharedBudgets):
            await budgets.drain()
        with pytest.raises(BudgetLimitError) as refused:
            await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.7)
        assert refused.value.spent_usd == pytest.approx(0.4)
        await link.aclose()

    anyio.run(main)


def test_a_move_to_the_downgrade_model_that_holds_no_more_is_remembered_as_by_the_local_check(prefix: str) -> None:
    """A reservation moved to a budget's downgrade model at the same estimate, then grown without naming a model:
    the growth is for that model, which the budget lets through, in Redis as in the local check (before, the shared
    reservation forgot a move that held no more, and Redis refused the growth the local check held)."""
    down = BudgetConfig(scope="agent", name="a", usd=0.25, on_exceed="downgrade", downgrade_to="cheap")

    async def main() -> None:
        link, _ = await counting_link(prefix)
        budgets = SharedBudgets(BudgetManager([down]), link)
        local = BudgetManager([down])
        answers = []
        for reservation in (local.reserve(agent="a", key_id=None, route=None, estimated_usd=0.2, model="big"),
                            await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.2,
                                                   model="big")):
            assert await reservation.aresize(0.2, model="cheap")
            answers.append(await reservation.aresize(0.3))
            reservation.release()
        assert answers == [True, True]
        await budgets.drain()
        await link.aclose()

    anyio.run(main)


@pytest.mark.parametrize("per_slot", [False, True], ids=["one-script", "per-slot"])
def test_a_shrunk_reservation_holds_only_its_new_estimate_in_redis(prefix: str, per_slot: bool) -> None:
    """A reservation resized down (`aresize`, at once; `resize`, written in the background) holds its new estimate
    in Redis, in every budget (one script a slot as on a Cluster), so another request fits the room it gave back.
    Before, Redis kept the larger hold until the settle: the key's budget refused a request that fitted."""
    async def main() -> None:
        link, _ = await counting_link(prefix)
        budgets = SharedBudgets(BudgetManager([AGENT, KEY]), link)
        budgets.per_slot = per_slot

        async def holds(amount: float) -> None:
            for budget in (AGENT, KEY):
                spent, reserved, held_ids = await _in_redis(link, budget)
                assert (spent, reserved) == (0.0, pytest.approx(amount)), budget.scope
                assert {rid: float(value) for rid, value in held_ids.items()} == {
                    held.id.encode(): pytest.approx(amount)}, budget.scope

        held = await budgets.areserve(agent="a", key_id="k", route=None, estimated_usd=0.45)
        assert isinstance(held, SharedReservation)
        assert await held.aresize(0.3, model="cheap")
        assert held.estimated_usd == 0.3
        await holds(0.3)
        assert held.resize(0.1)
        assert held.estimated_usd == 0.1
        await budgets.drain()
        await holds(0.1)
        other = await budgets.areserve(agent="a", key_id="k", route=None, estimated_usd=0.4)  # 0.1 + 0.4: the key's $0.5
        assert isinstance(other, SharedReservation)
        held.settle(0.05)
        other.release()
        await budgets.drain()
        for budget in (AGENT, KEY):
            assert await _in_redis(link, budget) == (pytest.approx(0.05), 0.0, {}), budget.scope
        await link.aclose()

    anyio.run(main)


@pytest.mark.parametrize("per_slot", [False, True], ids=["one-script", "per-slot"])
def test_a_growth_right_after_a_synchronous_shrink_is_checked_against_the_smaller_hold(prefix: str,
                                                                                      per_slot: bool) -> None:
    """`resize` down gives back in the background; an `aresize` growth right after waits for that give-back, so it is
    checked against the smaller hold (0.1 + 0.3 fits the key's $0.5), as by the local check. A second `resize` gives
    back after the first. Before, the growth reached Redis first and was refused against the old 0.45."""
    async def main() -> None:
        link, _ = await counting_link(prefix)
        budgets = SharedBudgets(BudgetManager([AGENT, KEY]), link)
        budgets.per_slot = per_slot
        local = BudgetManager([AGENT, KEY])
        for manager in (local, budgets):
            held = await manager.areserve(agent="a", key_id="k", route=None, estimated_usd=0.45)
            assert held.resize(0.2) and held.resize(0.1)
            assert await held.aresize(0.4), type(manager).__name__
            held.release()
        await budgets.drain()
        for budget in (AGENT, KEY):
            assert await _in_redis(link, budget) == (0.0, 0.0, {}), budget.scope
        await link.aclose()

    anyio.run(main)


def test_a_give_back_failing_for_a_bug_is_logged(prefix: str, caplog: pytest.LogCaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A give-back that fails for another reason than Redis (a bug) is logged with its traceback, as a flush's is; the
    resize still holds its new estimate here. Before, the gather dropped the exception without a word."""
    async def main() -> None:
        link, _ = await counting_link(prefix)
        budgets = SharedBudgets(BudgetManager([AGENT]), link)
        held = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.4)
        assert isinstance(held, SharedReservation)

        async def broken(*_: object, **__: object) -> None:
            raise RuntimeError("a bug in the give-back")

        monkeypatch.setattr(budgets, "_hold", broken)
        with caplog.at_level("ERROR", logger="switchman.state"):
            assert await held.aresize(0.1)
        assert held.estimated_usd == 0.1
        records = [r for r in caplog.records if r.exc_info and "a bug in the give-back" in str(r.exc_info[1])]
        assert len(records) == 1 and held.id in records[0].getMessage()
        monkeypatch.undo()
        held.release()
        await budgets.drain()
        await link.aclose()

    anyio.run(main)


def test_per_slot_a_growth_right_after_a_refused_one_is_checked_without_its_given_back_part(prefix: str) -> None:
    """As on a Cluster: a growth the key's slot refuses gives the agent's slot's part back before it returns, so a
    smaller growth right after fits the agent's $0.7 (0.3 + 0.2), as by the local check. Before, that give-back went
    in the background and the next growth reached the agent's slot first: 0.6 + 0.2, refused."""
    agent = BudgetConfig(scope="agent", name="a", usd=0.7)

    async def main() -> None:
        link, _ = await counting_link(prefix)
        budgets = SharedBudgets(BudgetManager([agent, KEY]), link)
        budgets.per_slot = True
        local = BudgetManager([agent, KEY])
        for manager in (local, budgets):
            held = await manager.areserve(agent="a", key_id="k", route=None, estimated_usd=0.3)
            assert not await held.aresize(0.6)  # the key's $0.5
            assert await held.aresize(0.5), type(manager).__name__
            held.release()
        await budgets.drain()
        for budget in (agent, KEY):
            assert await _in_redis(link, budget) == (0.0, 0.0, {}), budget.scope
        await link.aclose()

    anyio.run(main)


def test_per_slot_a_growth_cancelled_during_its_give_back_gives_back_once(prefix: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a Cluster: a growth two slots took and the third refused is cancelled while those two give it back (the
    agent's written, the key's held at a gate). Each slot gives it back once: Redis holds the estimate. Before, the
    cancellation gave both back again in the background: the agent's slot held 0.0 for a reservation of 0.3."""
    route = BudgetConfig(scope="route", name="r", usd=0.5)
    agent, key = (BudgetConfig(scope=scope, name=name, usd=2.0) for scope, name in (("agent", "a"), ("key", "k")))

    async def main() -> None:
        link, _ = await counting_link(prefix)
        budgets = SharedBudgets(BudgetManager([agent, key, route]), link)
        budgets.per_slot = True
        held = await budgets.areserve(agent="a", key_id="k", route="r", estimated_usd=0.3)
        assert isinstance(held, SharedReservation)
        hold, gate, waiting, agent_given = budgets._hold, asyncio.Event(), asyncio.Event(), asyncio.Event()
        key_counter = budget_key(link, key)

        async def gated(group: list[Any], rid: str, amount: float, model: str | None, **kw: bool) -> list[Any]:
            if amount < 0 and group[0][0] == key_counter:
                waiting.set()
                await gate.wait()
            reply = await hold(group, rid, amount, model, **kw)
            if amount < 0 and group[0][0] != key_counter:
                agent_given.set()
            return reply

        monkeypatch.setattr(budgets, "_hold", gated)
        growth = asyncio.ensure_future(held.aresize(0.6))  # the route's $0.5 refuses
        await waiting.wait()
        await agent_given.wait()
        growth.cancel()
        with pytest.raises(asyncio.CancelledError):
            await growth
        gate.set()
        await budgets.drain()
        for budget in (agent, key, route):
            spent, reserved, _ = await _in_redis(link, budget)
            assert (spent, reserved) == (0.0, pytest.approx(0.3)), budget.scope
        held.release()
        await budgets.drain()
        await link.aclose()

    anyio.run(main)


def test_a_resize_without_an_event_loop_leaves_no_coroutine_never_awaited(prefix: str) -> None:
    """`resize` down with no event loop running (a synchronous caller): nothing to give back with, so its give-back
    is dropped — all of it. Before, only the wrapper that waits for the resize before was closed: the give-back inside
    it was never awaited (a RuntimeWarning, an error under this suite's filterwarnings)."""
    async def reserve() -> SharedReservation:
        link, _ = await counting_link(prefix)
        budgets = SharedBudgets(BudgetManager([AGENT]), link)
        held = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.4)
        assert isinstance(held, SharedReservation)
        await link.aclose()
        return held

    held = anyio.run(reserve)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert held.resize(0.1)
        gc.collect()
    assert held.estimated_usd == 0.1
    assert [str(found.message) for found in caught if issubclass(found.category, RuntimeWarning)] == []


def test_per_slot_a_growth_a_later_slot_cannot_decide_gives_back_before_it_returns(
        prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a Cluster: the key's `spent` turns out no number (another writer) during a growth the agent's slot took;
    the local check decides, and the agent's part is given back before `aresize` returns (so a growth right after is
    not checked against it). Before, the give-back went to the background untracked: the growth had returned by the
    time it reached Redis."""
    async def main() -> None:
        link, _ = await counting_link(prefix)
        budgets = SharedBudgets(BudgetManager([AGENT, KEY]), link)
        budgets.per_slot = True
        held = await budgets.areserve(agent="a", key_id="k", route=None, estimated_usd=0.2)
        assert isinstance(held, SharedReservation)
        await link.run(lambda r: r.hset(budget_key(link, KEY), "spent", "abc"))
        hold, gate, waiting = budgets._hold, asyncio.Event(), asyncio.Event()

        async def gated(group: list[Any], rid: str, amount: float, model: str | None, **kw: bool) -> list[Any]:
            if amount < 0:
                waiting.set()
                await gate.wait()
            return await hold(group, rid, amount, model, **kw)

        monkeypatch.setattr(budgets, "_hold", gated)
        growth = asyncio.ensure_future(held.aresize(0.4))
        await waiting.wait()
        for _ in range(5):
            await asyncio.sleep(0)
        assert not growth.done()
        gate.set()
        assert await growth  # the local check's answer
        assert (await _in_redis(link, AGENT))[1] == pytest.approx(0.2)
        monkeypatch.undo()
        held.release()
        await budgets.drain()
        await link.aclose()

    anyio.run(main)


def test_a_resize_cancelled_while_waiting_for_the_one_before_leaves_no_coroutine_never_awaited(
        prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two `resize` calls down: the second's give-back waits for the first's. The loop ends (its tasks cancelled)
    while the first is still on its way: the second's give-back, never begun, is closed. Before, it was left never
    awaited (a RuntimeWarning, an error under this suite's filterwarnings)."""
    async def main() -> None:
        link, _ = await counting_link(prefix)
        budgets = SharedBudgets(BudgetManager([AGENT]), link)
        held = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.4)
        assert isinstance(held, SharedReservation)

        async def stuck(*_: object, **__: object) -> list[Any]:
            await asyncio.Event().wait()  # (cancelled when the loop ends)
            return []

        monkeypatch.setattr(budgets, "_hold", stuck)
        assert held.resize(0.3) and held.resize(0.1)
        await link.aclose()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        anyio.run(main)
        gc.collect()
    assert [str(found.message) for found in caught if issubclass(found.category, RuntimeWarning)] == []
