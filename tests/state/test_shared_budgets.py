"""Shared budget reservations on a real Redis: none leaks, none is settled twice, none is wiped by a rebuild.

Each reservation has an id and a deadline; a settle is idempotent per id; a rebuild never touches
reservations and never restarts counters at $0 because the ledger could not be read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import anyio
import pytest
from clock_support import Clock

from switchman._config import BudgetConfig
from switchman._exceptions import BudgetLimitError
from switchman._streaks import ONCE_LIMIT
from switchman.ledger import BudgetManager, Ledger, LedgerRecord
from switchman.state import RedisLink, RedisUnavailable, SharedBudgets, SharedReservation
from switchman.testing import RedisServer

from .conftest import budget_key, hold_deadline, move_deadline
from .redis_support import SHARED_REDIS_URL, started_link

URL = SHARED_REDIS_URL
AGENT = BudgetConfig(scope="agent", name="a", usd=1.0)
ROUTE = BudgetConfig(scope="route", name="r", usd=1.0)
KEY = BudgetConfig(scope="key", name="k", usd=1.0)


async def _counter(link: RedisLink, budget: BudgetConfig, now: float | None = None) -> tuple[float, float]:
    """(spent, reserved) of `budget`'s period at `now` (the current one by default), as Redis holds them."""
    key = budget_key(link, budget, now)
    found = await link.run(lambda r: r.hgetall(key))
    return float(found.get(b"spent", 0.0)), float(found.get(b"reserved", 0.0))


async def _await_counter(link: RedisLink, budget: BudgetConfig, expected: tuple[Any, Any]) -> None:
    """Wait (up to 5 s) for the rebuild a malformed counter starts to write `expected`; the caller asserts it."""
    for _ in range(100):
        with contextlib.suppress(ValueError):  # still malformed
            if await _counter(link, budget) == expected:
                return
        await anyio.sleep(0.05)


@contextlib.contextmanager
def _raw_redis() -> Iterator[Any]:
    """A plain client, to write what switchman never would (a malformed counter, a non-UTF-8 marker)."""
    import redis

    raw = redis.Redis.from_url(URL)
    try:
        yield raw
    finally:
        raw.close()


def test_a_reservation_nobody_settles_stops_counting_at_its_deadline(prefix: str, clock: Clock) -> None:
    """A replica killed mid-request never settles: past its deadline (`hold_s` on; moved into the past here) its
    reservation no longer blocks others."""
    async def main() -> None:
        link = await started_link(URL, prefix, ping_s=0.05)
        dead = SharedBudgets(BudgetManager([AGENT], clock=clock), link, clock=clock)
        alive = SharedBudgets(BudgetManager([AGENT], clock=clock), link, clock=clock)
        held = await dead.areserve(agent="a", key_id=None, route=None, estimated_usd=0.9)
        assert held.held  # ...and never settled: the replica is gone
        with pytest.raises(Exception, match="budget"):
            await alive.areserve(agent="a", key_id=None, route=None, estimated_usd=0.5)
        await move_deadline(link, AGENT, held.id, now=clock.now)
        later = await alive.areserve(agent="a", key_id=None, route=None, estimated_usd=0.5)
        assert later.held
        assert await _counter(link, AGENT, clock.now) == (0.0, pytest.approx(0.5))
        later.settle(0.2)
        await alive.drain()
        assert await _counter(link, AGENT, clock.now) == (pytest.approx(0.2), 0.0)
        await link.aclose()

    anyio.run(main)


def test_a_long_request_growing_keeps_its_reservation_and_its_cost_counts_past_the_deadline(
    prefix: str, clock: Clock,
) -> None:
    async def main() -> None:
        link = await started_link(URL, prefix, ping_s=0.05)
        budgets = SharedBudgets(BudgetManager([AGENT], clock=clock), link, clock=clock)
        held = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.2)
        taken = await hold_deadline(link, AGENT, held.id, clock.now)
        await move_deadline(link, AGENT, held.id, taken - 1, clock.now)  # as if taken a moment earlier
        assert await held.aresize(0.4)  # a growth moves the deadline: `hold_s` from now
        assert await hold_deadline(link, AGENT, held.id, clock.now) >= taken
        assert await _counter(link, AGENT, clock.now) == (0.0, pytest.approx(0.4))
        await move_deadline(link, AGENT, held.id, now=clock.now)
        assert (await _counter(link, AGENT, clock.now))[1] == pytest.approx(0.4)  # swept only by the next script
        await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.0)
        assert await _counter(link, AGENT, clock.now) == (0.0, 0.0)  # past its deadline: dropped
        held.settle(0.35)  # the answer came after all: its cost counts
        await budgets.drain()
        assert await _counter(link, AGENT, clock.now) == (pytest.approx(0.35), 0.0)
        await link.aclose()

    anyio.run(main)


class _Gate:
    """Wraps a link's eval: the `nth` call waits on `event` (to be cancelled there) or fails after running."""

    def __init__(self, link: RedisLink, nth: int, *, fail_after_run: bool = False, fail: bool = False) -> None:
        self.calls = 0
        self.nth = nth
        self.fail_after_run = fail_after_run
        self.fail = fail
        self.event = asyncio.Event()
        self.waiting = asyncio.Event()
        self._eval = link.eval
        link.eval = self  # type: ignore[method-assign]

    async def __call__(self, source: str, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        self.calls += 1
        if self.calls != self.nth:
            return await self._eval(source, keys, args)
        if self.fail:  # Redis went away before this call
            raise RedisUnavailable("down")
        if self.fail_after_run:  # the script ran in Redis, then the call's timeout fired
            await self._eval(source, keys, args)
            raise RedisUnavailable("timed out")
        self.waiting.set()
        await self.event.wait()
        return await self._eval(source, keys, args)


def test_a_request_cancelled_between_two_budgets_gives_back_what_it_took(prefix: str) -> None:
    """As on a Cluster (one script a budget's slot): the client leaves while the second budget's check is in
    flight, and the first budget's hold goes back."""
    async def main() -> None:
        link = await started_link(URL, prefix, ping_s=0.05)
        budgets = SharedBudgets(BudgetManager([AGENT, ROUTE]), link)
        budgets.per_slot = True
        gate = _Gate(link, nth=2)
        task = asyncio.create_task(budgets.areserve(agent="a", key_id=None, route="r", estimated_usd=0.6))
        await gate.waiting.wait()
        assert (await _counter(link, AGENT))[1] == pytest.approx(0.6)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await budgets.drain()
        assert await _counter(link, AGENT) == (0.0, 0.0)
        assert await _counter(link, ROUTE) == (0.0, 0.0)
        await link.aclose()

    anyio.run(main)


@pytest.mark.parametrize(("per_slot", "nth"), [(False, 1), (True, 3)], ids=["one-redis", "per-slot"])
def test_a_timeout_after_redis_ran_the_script_leaves_nothing_held(prefix: str, per_slot: bool, nth: int) -> None:
    """The reserve ran in Redis (on one Redis the one script over all three budgets; per slot the third budget's)
    but the call timed out: the request goes local, Redis holds nothing."""
    async def main() -> None:
        link = await started_link(URL, prefix, ping_s=0.05)
        budgets = SharedBudgets(BudgetManager([AGENT, KEY, ROUTE]), link)
        budgets.per_slot = per_slot
        _Gate(link, nth=nth, fail_after_run=True)
        local = await budgets.areserve(agent="a", key_id="k", route="r", estimated_usd=0.6)
        assert local.held and not isinstance(local, SharedReservation)  # the local check took it
        await budgets.drain()
        for budget in (AGENT, KEY, ROUTE):
            assert await _counter(link, budget) == (0.0, 0.0), budget.scope
        await link.aclose()

    anyio.run(main)


def test_a_settle_replayed_after_a_timeout_counts_once(prefix: str) -> None:
    """A settle whose call timed out after Redis ran it is written again (next flush or rebuild): it counts once."""
    async def main() -> None:
        link = await started_link(URL, prefix, ping_s=0.05)
        budgets = SharedBudgets(BudgetManager([AGENT]), link)
        await budgets.rebuild()
        held = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.5)
        assert isinstance(held, SharedReservation)
        gate = _Gate(link, nth=1, fail_after_run=True)
        held.settle(0.3)
        await budgets.drain()
        assert gate.calls >= 1  # kept, written again by the next flush (or the rebuild's replay)
        await budgets.rebuild()
        assert budgets._unsent == []  # noqa: SLF001
        assert await _counter(link, AGENT) == (pytest.approx(0.3), 0.0)
        held.settle(0.3)  # and twice on the object is once
        await budgets.drain()
        assert await _counter(link, AGENT) == (pytest.approx(0.3), 0.0)
        await link.aclose()

    anyio.run(main)


def test_settles_are_written_in_one_script_per_budget_per_batch(prefix: str) -> None:
    """Twenty requests settled at once cost one settle script per budget, and each counts once."""
    async def main() -> None:
        link = await started_link(URL, prefix, ping_s=0.05)
        budgets = SharedBudgets(BudgetManager([AGENT, ROUTE]), link)
        held = [await budgets.areserve(agent="a", key_id=None, route="r", estimated_usd=0.04) for _ in range(20)]
        assert await _counter(link, AGENT) == (0.0, pytest.approx(0.8))
        real_eval, scripts = link.eval, []

        async def counted(source: str, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
            scripts.append(keys[0])
            return await real_eval(source, keys, args)

        link.eval = counted  # type: ignore[method-assign]
        for reservation in held:
            reservation.settle(0.01)
        held[0].settle(0.01)  # settled twice on the object: once
        await budgets.drain()
        assert len(scripts) == 2 and len(set(scripts)) == 2
        for budget in (AGENT, ROUTE):
            assert await _counter(link, budget) == (pytest.approx(0.2), 0.0)
        await link.aclose()

    anyio.run(main)


def test_a_replay_failing_partway_keeps_the_rest_and_a_reload_carries_them(prefix: str) -> None:
    async def main() -> None:
        link = await started_link(URL, prefix, ping_s=0.05)
        old = SharedBudgets(BudgetManager([AGENT]), link)
        await old.rebuild()  # as at start: the epoch these settles belong to
        held = [await old.areserve(agent="a", key_id=None, route=None, estimated_usd=0.1) for _ in range(3)]
        real = link.eval

        async def away(*_: object) -> Any:
            raise RedisUnavailable("down")

        link.eval = away  # type: ignore[method-assign]
        for each in held:  # Redis away for these settles (and their retries): kept for replay
            each.settle(0.1)
            await old.drain()
        link.eval = real  # type: ignore[method-assign]
        new = SharedBudgets(BudgetManager([AGENT]), link, carry=old)  # a reload replaced them
        assert len(new._unsent) == 3  # noqa: SLF001
        gate = _Gate(link, nth=2, fail=True)
        with pytest.raises(RedisUnavailable):
            await new.rebuild()  # the second replay fails
        assert len(new._unsent) == 2  # noqa: SLF001  (the first is written, the rest kept)
        gate.nth = 0
        await new.rebuild()
        assert new._unsent == []  # noqa: SLF001
        assert await _counter(link, AGENT) == (pytest.approx(0.3), 0.0)
        await link.aclose()

    anyio.run(main)


def test_a_rebuild_keeps_live_reservations_and_a_growth_while_down_is_checked_locally(prefix: str) -> None:
    """Redis back: the rebuild raises `spent` to the ledger but leaves reservations made meanwhile alone; a
    growth while Redis is down does not inflate what is given back later."""
    async def main() -> None:
        link = await started_link(URL, prefix, ping_s=0.05)
        budgets = SharedBudgets(BudgetManager([AGENT]), link)
        other = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.3)
        held = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.2)
        await budgets.rebuild()
        assert await _counter(link, AGENT) == (0.0, pytest.approx(0.5))
        link.up = False  # down (as after a failed call)
        assert not await held.aresize(1.5)  # the local check refuses what no budget can take
        assert await held.aresize(0.6)  # Redis added nothing; the local check let it through
        link.up = True
        held.settle(0.1)  # gives back what Redis holds for it (0.2), not the local estimate (0.6)
        await budgets.drain()
        assert await _counter(link, AGENT) == (pytest.approx(0.1), pytest.approx(0.3))
        other.release()
        await budgets.drain()
        assert await _counter(link, AGENT) == (pytest.approx(0.1), 0.0)
        await link.aclose()

    anyio.run(main)


def test_redis_and_the_ledger_lost_together_never_restart_budgets_at_zero(tmp_path: Any) -> None:
    """Redis restarted empty while the ledger cannot be read: the link stays down (local check) rather than
    serve $0 counters; once the ledger reads again, counters come back from it."""
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    ledger.record(LedgerRecord(request_id="r1", agent="a", model="m", prompt="x", cost_usd=0.7))
    ledger.flush_sync(timeout=10)
    manager = BudgetManager([AGENT], ledger)
    readable = {"now": True}
    real = manager.ledger_spend

    def spend(now: float | None = None) -> Any:
        return real(now) if readable["now"] else None

    manager.ledger_spend = spend  # type: ignore[method-assign]
    with RedisServer() as server:
        async def main() -> None:
            link = RedisLink(server.url, timeout_s=2.0, ping_s=0.05)
            budgets = SharedBudgets(manager, link)
            link.on_resync(budgets.rebuild)
            await link.start()
            assert link.up
            assert await _counter(link, AGENT) == (pytest.approx(0.7), 0.0)  # from the ledger
            readable["now"] = False
            server.stop()
            server.start()  # empty
            with pytest.raises(RedisUnavailable):
                await link.run(lambda r: r.ping())  # the pooled connection notices
            await anyio.sleep(0.5)  # many resync attempts
            assert not link.up  # kept local: the counters would be $0
            local = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.2)
            assert local.held and not isinstance(local, SharedReservation)
            local.release()
            raw = link.client
            assert await raw.exists(link.key("budgets", "epoch")) == 0  # no marker: the next try rebuilds
            with pytest.raises(Exception, match="budget"):  # the local check still knows the spend
                await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.5)
            readable["now"] = True
            with anyio.fail_after(10):
                while not link.up:
                    await anyio.sleep(0.02)
            assert await _counter(link, AGENT) == (pytest.approx(0.7), 0.0)  # the ledger's spend again
            await link.aclose()

        anyio.run(main)
    ledger.close_sync()


def test_a_settle_missed_before_redis_lost_its_data_is_not_counted_twice(tmp_path: Any) -> None:
    """Replica A's settle fails (Redis killed); Redis comes back empty and replica B rebuilds first from the
    ledger, which has that request's row: A's replay must not add it again."""
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    with RedisServer() as server:
        async def main() -> None:
            link_a = RedisLink(server.url, timeout_s=2.0, ping_s=0.05)
            a = SharedBudgets(BudgetManager([AGENT], ledger), link_a)
            link_a.on_resync(a.rebuild)
            await link_a.start()
            held = await a.areserve(agent="a", key_id=None, route=None, estimated_usd=0.5)
            assert isinstance(held, SharedReservation)
            server.stop()
            held.settle(0.3)
            await a.drain()
            assert len(a._unsent) == 1  # noqa: SLF001
            ledger.record(LedgerRecord(request_id="r1", agent="a", model="m", prompt="x", cost_usd=0.3))
            ledger.flush_sync(timeout=10)
            server.start()  # empty
            link_b = RedisLink(server.url, timeout_s=2.0, ping_s=0.05)
            b = SharedBudgets(BudgetManager([AGENT], ledger), link_b)
            link_b.on_resync(b.rebuild)
            await link_b.start()
            assert await _counter(link_b, AGENT) == (pytest.approx(0.3), 0.0)
            with anyio.fail_after(10):
                while not link_a.up:
                    await anyio.sleep(0.02)
            assert a._unsent == []  # noqa: SLF001
            assert await _counter(link_b, AGENT) == (pytest.approx(0.3), 0.0)  # once
            await link_a.aclose()
            await link_b.aclose()

        anyio.run(main)
    ledger.close_sync()


def test_settles_keep_flushing_after_a_scheduled_flush_never_ran(prefix: str) -> None:
    """The flush scheduled for a batch is cancelled in its wait (or could not start): the next settle schedules
    another, and both settles count — the batch never stays unflushed for good."""
    async def main() -> None:
        link = await started_link(URL, prefix, ping_s=0.05)
        budgets = SharedBudgets(BudgetManager([AGENT]), link)
        first = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.1)
        first.settle(0.1)
        for task in list(budgets._pending.tasks):  # noqa: SLF001  (the scheduled flush, before it wrote)
            task.cancel()
        await anyio.sleep(0.05)
        second = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.2)
        second.settle(0.2)
        with anyio.fail_after(5):  # written by the background flush, not by drain
            while await _counter(link, AGENT) != pytest.approx((0.3, 0.0)):
                await anyio.sleep(0.02)
        await link.aclose()

    anyio.run(main)


def test_a_settle_missed_while_the_link_stayed_up_goes_with_the_next_flush(prefix: str) -> None:
    """A settle batch that failed (a timeout) while the link stayed up is written with the next batch, not only when
    Redis comes back after an outage: its reservation stops counting and its cost counts, once."""
    async def main() -> None:
        link = await started_link(URL, prefix, ping_s=0.05)
        budgets = SharedBudgets(BudgetManager([AGENT]), link)
        await budgets.rebuild()
        first = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.2)
        second = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.3)
        gate = _Gate(link, nth=1, fail=True)
        first.settle(0.1)
        await budgets.drain()
        assert gate.calls >= 1 and link.up  # its batch failed; the link stayed up
        second.settle(0.2)
        await budgets.drain()
        assert budgets._unsent == []  # noqa: SLF001
        assert await _counter(link, AGENT) == pytest.approx((0.3, 0.0))
        await budgets.rebuild()  # nothing left to replay: counted once
        assert await _counter(link, AGENT) == pytest.approx((0.3, 0.0))
        await link.aclose()

    anyio.run(main)


def test_drain_waits_for_settles_made_while_it_waits(prefix: str) -> None:
    """At shutdown a request settles while drain waits on an earlier flush: drain writes that settle too."""
    async def main() -> None:
        link = await started_link(URL, prefix, ping_s=0.05)
        budgets = SharedBudgets(BudgetManager([AGENT]), link)
        first = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.2)
        late = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.3)
        gate = _Gate(link, nth=1)
        first.settle(0.1)
        draining = asyncio.ensure_future(budgets.drain())
        await gate.waiting.wait()  # drain's flush is in flight
        await anyio.sleep(0.05)  # the flush scheduled by the first settle found nothing left to write
        late.settle(0.2)  # a request finishing while drain waits: a new flush
        gate.event.set()
        await draining
        assert await _counter(link, AGENT) == pytest.approx((0.3, 0.0))
        await link.aclose()

    anyio.run(main)


@pytest.mark.parametrize("field", ["spent", "reserved"])
def test_a_malformed_counter_in_redis_is_repaired_by_the_resync_and_the_link_comes_up(prefix: str,
                                                                                   field: str) -> None:
    """A counter field no number (another writer, a version skew): before, the rebuild's script failed on it at
    every resync, so the link stayed down for good (every replica on local state, with no line saying why)."""
    async def main() -> None:
        link = RedisLink(URL, prefix=prefix, timeout_s=2.0, ping_s=0.05)
        budgets = SharedBudgets(BudgetManager([AGENT]), link)
        link.on_resync(budgets.rebuild)  # as the gateway does
        with _raw_redis() as raw:
            raw.hset(budget_key(link, AGENT), field, "abc")
        await link.start()
        try:
            assert link.up
            held = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.3)
            assert held.held
            held.settle(0.2)
            await budgets.drain()
            assert await _counter(link, AGENT) == (pytest.approx(0.2), 0.0)
        finally:
            await link.aclose()

    anyio.run(main)


def test_an_epoch_marker_no_utf8_does_not_keep_the_link_down(prefix: str) -> None:
    """Before, its UnicodeDecodeError failed the budget rebuild at every resync: the link stayed down for good."""
    async def main() -> None:
        link = RedisLink(URL, prefix=prefix, timeout_s=2.0, ping_s=0.05)
        budgets = SharedBudgets(BudgetManager([AGENT]), link)
        link.on_resync(budgets.rebuild)  # as the gateway does
        with _raw_redis() as raw:
            raw.set(link.key("budgets", "epoch"), b"\xff\xfe")
        await link.start()
        try:
            assert link.up
        finally:
            await link.aclose()

    anyio.run(main)


def test_ever_new_counters_with_a_malformed_spend_are_logged_a_bounded_number_of_times(
        caplog: pytest.LogCaptureFixture) -> None:
    """A new counter each period (and per key) another writer breaks: before, each was logged and remembered for
    the process's life; now the first ONCE_LIMIT are (`OnceLog`)."""
    budgets = SharedBudgets(BudgetManager([KEY]), RedisLink(URL))
    with caplog.at_level("WARNING", logger="switchman.state"):
        for i in range(ONCE_LIMIT + 20):
            budgets._repair_after = 0.0  # its once-a-second pause passed (no event loop: no rebuild starts)
            budgets._spend_unknown(f"sm:budget:key:k{i}:day:0")
    assert len([r for r in caplog.records if "holds a spend that is no number" in r.getMessage()]) == ONCE_LIMIT


@pytest.mark.parametrize("value", ["abc", "1e400"])
def test_a_malformed_spend_while_up_does_not_fail_every_settle(prefix: str, value: str) -> None:
    """Before, the scripts failed on it (reserve: arithmetic on nil; settle: HINCRBYFLOAT) at every request of the
    budget: each fell back to the local check and no spend reached Redis until the next resync."""
    async def main() -> None:
        link = await started_link(URL, prefix, ping_s=0.05)
        budgets = SharedBudgets(BudgetManager([AGENT]), link)
        with _raw_redis() as raw:
            raw.hset(budget_key(link, AGENT), "spent", value)
        try:
            first = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.3)
            assert not isinstance(first, SharedReservation)  # unknown, not $0: the local check (no ledger here)
            first.settle(0.0)
            await _await_counter(link, AGENT, (0.0, 0.0))  # the rebuild it started repairs the counter
            for _ in range(2):
                held = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.3)
                assert held.held
                held.settle(0.2)
                await budgets.drain()
            assert await _counter(link, AGENT) == (pytest.approx(0.4), 0.0)
        finally:
            await link.aclose()

    anyio.run(main)


@pytest.mark.parametrize("value", ["abc", "1e400", "nan", "-inf"])
def test_a_malformed_spend_while_up_never_lets_a_budget_spent_in_the_ledger_through(tmp_path: Any, prefix: str,
                                                                                     value: str) -> None:
    """A spend in Redis no finite number is unknown, not $0: a reserve must not count from $0 against it (that
    would hand the whole budget out again); the counter is rebuilt from the ledger (the resync)."""
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    ledger.record(LedgerRecord(request_id="r1", agent="a", model="m", prompt="x", cost_usd=0.8))
    ledger.flush_sync(timeout=10)

    async def main() -> None:
        link = RedisLink(URL, prefix=prefix, timeout_s=2.0, ping_s=0.05)
        budgets = SharedBudgets(BudgetManager([AGENT], ledger), link)
        link.on_resync(budgets.rebuild)  # as the gateway does
        await link.start()
        try:
            assert link.up
            assert await _counter(link, AGENT) == (pytest.approx(0.8), 0.0)
            with _raw_redis() as raw:
                raw.hset(budget_key(link, AGENT), "spent", value)
            with pytest.raises(Exception, match="budget"):
                await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.5)
            await _await_counter(link, AGENT, (pytest.approx(0.8), 0.0))  # a rebuild repairs it from the ledger
            assert link.up
            assert await _counter(link, AGENT) == (pytest.approx(0.8), 0.0)
            with pytest.raises(Exception, match="budget"):
                await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.5)
            held = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.1)
            assert held.held
            held.settle(0.1)
            await budgets.drain()
            assert await _counter(link, AGENT) == (pytest.approx(0.9), 0.0)
        finally:
            await link.aclose()

    anyio.run(main)
    ledger.close_sync()


def test_a_malformed_spend_is_not_restarted_at_zero_while_the_ledger_cannot_be_read(tmp_path: Any,
                                                                                   prefix: str) -> None:
    """The rebuild it starts cannot read the ledger: the counter stays unknown (requests on the local check)."""
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    ledger.record(LedgerRecord(request_id="r1", agent="a", model="m", prompt="x", cost_usd=0.8))
    ledger.flush_sync(timeout=10)
    manager = BudgetManager([AGENT], ledger)

    async def main() -> None:
        link = await started_link(URL, prefix, ping_s=0.05)
        budgets = SharedBudgets(manager, link)
        await budgets.rebuild()
        manager.ledger_spend = lambda: None  # type: ignore[method-assign]  # the ledger unreadable from now on
        key = budget_key(link, AGENT)
        try:
            with _raw_redis() as raw:
                raw.hset(key, "spent", "abc")
                for _ in range(3):
                    with pytest.raises(Exception, match="budget"):
                        await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.5)
                    await anyio.sleep(0.1)
                assert raw.hget(key, "spent") == b"abc"
        finally:
            await link.aclose()

    anyio.run(main)
    ledger.close_sync()


def test_a_reservation_is_settled_by_the_backend_that_took_it_across_an_outage(prefix: str) -> None:
    """Taken in Redis, released while Redis is away: this process's counters are untouched and Redis gets it once
    back; taken in the process while Redis was away, released once it is back: the process's counters get it, not
    Redis's (the reservation object is the token: a `SharedReservation` settles in Redis, a local one locally)."""
    async def main() -> None:
        link = await started_link(URL, prefix, ping_s=0.05)
        local = BudgetManager([AGENT])
        budgets = SharedBudgets(local, link)
        shared = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.3)
        assert isinstance(shared, SharedReservation)
        real = link.eval

        async def away(*_: object) -> Any:
            raise RedisUnavailable("down")

        link.eval = away  # type: ignore[method-assign]
        taken_locally = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.2)
        assert not isinstance(taken_locally, SharedReservation)
        shared.release()
        await budgets.drain()  # missed: kept for the next flush
        assert [(spent, reserved) for _, spent, reserved in local.usage()] == [(0.0, pytest.approx(0.2))]
        link.eval = real  # type: ignore[method-assign]
        taken_locally.release()
        assert [(spent, reserved) for _, spent, reserved in local.usage()] == [(0.0, 0.0)]
        assert await _counter(link, AGENT) == (0.0, pytest.approx(0.3))  # the local release did not touch Redis
        await budgets.flush()  # the missed release goes with the next flush
        assert await _counter(link, AGENT) == (0.0, 0.0)
        await link.aclose()

    anyio.run(main)


def test_a_settle_counts_its_cost_in_full_and_a_replay_of_settled_ids_leaves_the_ttls(prefix: str) -> None:
    """The settle script added Lua's tostring of the cost (14 digits: 0.12345678901235 for 0.123456789012345678),
    and the replay of an id settled already renewed the period's keys to the replay's TTL (32 days). Now the cost
    goes in with 17 digits, and a replay that settles nothing leaves the TTLs (the batched settle renews them, as
    before)."""
    from switchman.state._budgets import _keys
    from switchman.state._redis_budget_lua import FAIL, REPAIR, SETTLE_MANY

    keys = _keys(f"{prefix}{{budget:agent:t}}")
    cost = 0.123456789012345678
    with _raw_redis() as raw:
        settle = raw.register_script(SETTLE_MANY)
        assert settle(keys=keys, args=[REPAIR, 86_400 * 32, 3_600_000, "r1", cost]) == 1
        assert float(raw.hget(keys[0], "spent")) == cost
        kept = [key for key in keys if raw.exists(key)]
        for key in kept:
            raw.expire(key, 50)
        assert settle(keys=keys, args=[REPAIR, 86_400 * 32, 3_600_000, "r1", cost]) == 0  # settled already
        assert all(0 < raw.ttl(key) <= 50 for key in kept)
        assert float(raw.hget(keys[0], "spent")) == cost
        assert settle(keys=keys, args=[FAIL, 3600, 3_600_000, "r1", cost]) == 0  # the batched settle renews them
        assert all(raw.ttl(key) > 50 for key in kept)
        assert settle(keys=keys, args=[FAIL, 3600, 3_600_000, "r2", cost, "r3", cost]) == 2
        assert float(raw.hget(keys[0], "spent")) == cost + (cost + cost)


def test_a_shrink_after_a_growth_redis_never_held_gives_back_only_what_redis_holds(prefix: str) -> None:
    """A growth Redis could not take (its call failed: the local check let it through) is not in Redis: shrinking
    from it gives back only what Redis holds beyond the new estimate — here nothing, so Redis keeps the 0.2 it held
    and another request that would take the budget past its $0.5 is refused. Before, the shrink gave back 0.1 of a
    growth Redis never held: Redis held 0.1, and a reserve of 0.4 put $0.7 against the $0.5."""
    half = BudgetConfig(scope="agent", name="a", usd=0.5)

    async def main() -> None:
        link = await started_link(URL, prefix, ping_s=0.05)
        budgets = SharedBudgets(BudgetManager([half]), link)
        held = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.2)
        assert isinstance(held, SharedReservation)
        gate = _Gate(link, nth=1, fail=True)  # the growth's call fails before Redis runs it
        assert await held.aresize(0.4)  # the local check lets it through
        assert gate.calls == 1
        assert await held.aresize(0.3)
        assert await _counter(link, half) == (0.0, pytest.approx(0.2))
        with pytest.raises(BudgetLimitError):
            await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.4)
        assert await held.aresize(0.1)  # what Redis holds beyond the estimate goes back
        assert await _counter(link, half) == (0.0, pytest.approx(0.1))
        held.release()
        await budgets.drain()
        assert await _counter(link, half) == (0.0, 0.0)
        await link.aclose()

    anyio.run(main)


def test_per_slot_a_shrink_after_a_growth_one_slot_timed_out_gives_back_only_what_redis_is_known_to_hold(
    prefix: str,
) -> None:
    """As on a Cluster: a growth ran in the key's slot but timed out, so the agent's slot's growth went back and the
    local check let the growth through. Redis is known to hold the first estimate only (the key's slot may hold the
    growth too: stricter): a shrink to above it gives nothing back, in either slot. Before, it gave back the part of
    the growth the agent's slot no longer held, and another request took that room."""
    async def main() -> None:
        link = await started_link(URL, prefix, ping_s=0.05)
        budgets = SharedBudgets(BudgetManager([AGENT, KEY]), link)
        budgets.per_slot = True
        held = await budgets.areserve(agent="a", key_id="k", route=None, estimated_usd=0.2)
        assert isinstance(held, SharedReservation)
        _Gate(link, nth=2, fail_after_run=True)  # the key's slot ran the growth, then the call timed out
        assert await held.aresize(0.4)
        await budgets.drain()
        assert (await _counter(link, AGENT), await _counter(link, KEY)) == (
            (0.0, pytest.approx(0.2)), (0.0, pytest.approx(0.4)))
        assert await held.aresize(0.3)
        assert (await _counter(link, AGENT), await _counter(link, KEY)) == (
            (0.0, pytest.approx(0.2)), (0.0, pytest.approx(0.4)))
        with pytest.raises(BudgetLimitError):  # 0.2 + 0.85 past the agent's $1
            await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.85)
        held.release()
        await budgets.drain()
        for budget in (AGENT, KEY):
            assert await _counter(link, budget) == (0.0, 0.0), budget.scope
        await link.aclose()

    anyio.run(main)
