"""Budgets: reservations under concurrency, settle/release, period rollover, downgrade, startup load."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from switchman._config import BudgetConfig
from switchman._exceptions import BudgetExceededError
from switchman import BudgetLimitError
from switchman.ledger import BudgetManager, Ledger, LedgerRecord, period_bounds


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, moment: datetime) -> None:
        self.now = moment.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = moment.timestamp()


def budget(**fields: object) -> BudgetConfig:
    return BudgetConfig.model_validate({"scope": "agent", "name": "bot", **fields})


def reserve(manager: BudgetManager, usd: float, *, agent: str | None = "bot", model: str | None = None):  # type: ignore[no-untyped-def]
    return manager.reserve(agent=agent, key_id=None, route=None, estimated_usd=usd, model=model)


def test_reject_names_the_budget_and_its_numbers() -> None:
    manager = BudgetManager([budget(usd=1.0)])
    held = reserve(manager, 0.6)
    reserve(manager, 0.3).settle(0.25)
    with pytest.raises(BudgetLimitError) as info:
        reserve(manager, 0.2)
    err = info.value
    assert isinstance(err, BudgetExceededError)
    assert (err.scope, err.name, err.limit_usd) == ("agent", "bot", 1.0)
    assert err.spent_usd == pytest.approx(0.25)
    assert err.reserved_usd == pytest.approx(0.6)
    message = str(err)
    for part in ("agent budget 'bot'", "$1.0000 per day", "spent $0.2500", "reserved $0.6000", "$0.2000", "UTC"):
        assert part in message
    held.release()
    reserve(manager, 0.2)  # fits once the 0.6 is released


def test_settle_replaces_the_estimate_and_is_idempotent() -> None:
    manager = BudgetManager([budget(usd=1.0)])
    r = reserve(manager, 0.9)
    with pytest.raises(BudgetExceededError):
        reserve(manager, 0.2)
    r.settle(0.1)
    r.settle(0.1)  # a second settle changes nothing
    r.release()  # nor does a release after it
    [(_, spent, reserved)] = manager.usage()
    assert (spent, reserved) == (pytest.approx(0.1), 0.0)
    reserve(manager, 0.85)  # 0.1 + 0.85 ≤ 1
    with pytest.raises(BudgetExceededError):
        reserve(manager, 0.1)


def test_requests_no_budget_applies_to_pass_freely() -> None:
    manager = BudgetManager([budget(usd=0.01)])
    r = reserve(manager, 100.0, agent="someone-else")
    assert r.downgrade_to is None and r.budgets == ()
    r.settle(100.0)
    assert manager.usage()[0][1] == 0.0


def test_every_matching_scope_holds_the_estimate() -> None:
    budgets = [
        BudgetConfig(scope="agent", name="bot", usd=10.0),
        BudgetConfig(scope="key", name="key-1", usd=1.0),
        BudgetConfig(scope="route", name="default", usd=10.0),
        BudgetConfig(scope="route", name="other", usd=0.001),
    ]
    manager = BudgetManager(budgets)
    r = manager.reserve(agent="bot", key_id="key-1", route="default", estimated_usd=0.7)
    assert {b.scope for b in r.budgets} == {"agent", "key", "route"}
    with pytest.raises(BudgetLimitError) as info:  # the key budget is the tight one
        manager.reserve(agent="bot", key_id="key-1", route="default", estimated_usd=0.7)
    assert info.value.scope == "key"
    r.settle(0.5)
    usage = {(b.scope, b.name): (spent, reserved) for b, spent, reserved in manager.usage()}
    assert usage[("agent", "bot")] == (0.5, 0.0)
    assert usage[("key", "key-1")] == (0.5, 0.0)
    assert usage[("route", "other")] == (0.0, 0.0)


def test_concurrent_reservations_cannot_all_pass_one_check() -> None:
    """Twenty threads reserve $0.30 against $1.00 before any settles: exactly three may pass.

    A check-then-act budget (compare spent so far, charge on settle) lets all twenty through,
    since nothing has been spent when they check.
    """
    manager = BudgetManager([budget(usd=1.0)])
    threads_n = 20
    all_reserved = threading.Barrier(threads_n)
    outcomes: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            r = reserve(manager, 0.3)
        except BudgetExceededError:
            r = None
        all_reserved.wait()  # every thread has checked before anyone settles
        if r is not None:
            r.settle(0.3)
        with lock:
            outcomes.append(r is not None)

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(True) == 3
    [(_, spent, reserved)] = manager.usage()
    assert spent == pytest.approx(0.9)
    assert reserved == 0.0


def test_concurrent_stress_never_overshoots() -> None:
    limit = 5.0
    manager = BudgetManager([budget(usd=limit), BudgetConfig(scope="route", name="r", usd=3.0)])
    settled = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(300):
            estimate = rng.uniform(0.001, 0.2)
            try:
                r = manager.reserve(agent="bot", key_id=None, route=rng.choice(["r", "s"]), estimated_usd=estimate)
            except BudgetExceededError:
                continue
            if rng.random() < 0.2:
                r.release()
            else:
                actual = estimate * rng.uniform(0.5, 1.0)  # actual cost never above the estimate
                r.settle(actual)
                with lock:
                    settled.append(actual)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    usage = {b.name: (spent, reserved) for b, spent, reserved in manager.usage()}
    assert usage["bot"][0] == pytest.approx(sum(settled))
    assert usage["bot"][0] <= limit + 1e-9
    assert usage["r"][0] <= 3.0 + 1e-9
    assert usage["bot"][1] == pytest.approx(0.0, abs=1e-9) and usage["r"][1] == pytest.approx(0.0, abs=1e-9)
    assert usage["bot"][0] > limit * 0.8  # the budget was actually contended, not trivially respected


def test_day_budget_rolls_over_at_utc_midnight() -> None:
    clock = Clock(datetime(2025, 5, 4, 23, 59, tzinfo=UTC))
    manager = BudgetManager([budget(usd=1.0)], clock=clock)
    reserve(manager, 0.8).settle(0.8)
    with pytest.raises(BudgetLimitError) as info:
        reserve(manager, 0.5)
    assert info.value.resets_at == datetime(2025, 5, 5, tzinfo=UTC).timestamp()
    clock.set(datetime(2025, 5, 5, 0, 0, 1, tzinfo=UTC))
    reserve(manager, 0.5).settle(0.5)
    assert manager.usage()[0][1] == pytest.approx(0.5)


def test_month_budget_rolls_over_across_year_end() -> None:
    clock = Clock(datetime(2024, 12, 31, 12, tzinfo=UTC))
    manager = BudgetManager([budget(usd=2.0, period="month")], clock=clock)
    reserve(manager, 1.5).settle(1.5)
    clock.set(datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC))
    with pytest.raises(BudgetExceededError):
        reserve(manager, 1.0)
    clock.set(datetime(2025, 1, 1, tzinfo=UTC))
    reserve(manager, 1.0)
    assert period_bounds(datetime(2024, 2, 29, 5, tzinfo=UTC).timestamp(), "month") == (
        datetime(2024, 2, 1, tzinfo=UTC).timestamp(),
        datetime(2024, 3, 1, tzinfo=UTC).timestamp(),
    )


def test_reservation_held_across_rollover_is_released_cleanly() -> None:
    clock = Clock(datetime(2025, 5, 4, 23, 59, tzinfo=UTC))
    manager = BudgetManager([budget(usd=1.0)], clock=clock)
    r = reserve(manager, 0.9)
    clock.set(datetime(2025, 5, 5, 0, 1, tzinfo=UTC))
    with pytest.raises(BudgetExceededError):  # still in flight: still held
        reserve(manager, 0.2)
    r.settle(0.4)  # charged to the day it finished in
    [(_, spent, reserved)] = manager.usage()
    assert (spent, reserved) == (pytest.approx(0.4), 0.0)


def test_downgrade_returns_the_cheaper_model_then_lets_it_through() -> None:
    budgets = [
        budget(usd=1.0, on_exceed="downgrade", downgrade_to="small"),
        BudgetConfig(scope="route", name="default", usd=1.5),
    ]
    manager = BudgetManager(budgets)

    def ask(model: str, usd: float):  # type: ignore[no-untyped-def]
        return manager.reserve(agent="bot", key_id=None, route="default", estimated_usd=usd, model=model)

    ask("large", 0.9).settle(0.9)
    r = ask("large", 0.3)
    assert r.downgrade_to == "small"
    assert r.budgets == ()  # holds nothing: the caller reserves again for the cheaper model
    assert sum(reserved for _, _, reserved in manager.usage()) == 0.0
    again = ask("small", 0.05)  # over the agent budget, but already on its downgrade model
    assert again.downgrade_to is None
    again.settle(0.05)
    usage = {b.name: spent for b, spent, _ in manager.usage()}
    assert usage == {"bot": pytest.approx(0.95), "default": pytest.approx(0.95)}
    ask("small", 0.5).settle(0.5)
    with pytest.raises(BudgetLimitError) as info:  # the route budget still rejects
        ask("small", 0.1)
    assert info.value.scope == "route"


def test_downgrade_without_a_target_rejects() -> None:
    manager = BudgetManager([budget(usd=0.1, on_exceed="downgrade")])
    with pytest.raises(BudgetLimitError):
        reserve(manager, 0.2, model="large")


def test_spend_so_far_is_loaded_from_the_ledger(open_ledger: Callable[..., Ledger], db_url: str) -> None:
    now = datetime(2025, 6, 15, 12, tzinfo=UTC)
    today, yesterday, last_month = now.timestamp(), now.timestamp() - 86400, now.timestamp() - 20 * 86400
    ledger = open_ledger(db_url)
    for t, agent, key, route, cost in [
        (today, "bot", "key-1", "default", 0.40),
        (today - 3600, "bot", None, "default", 0.30),
        (yesterday, "bot", "key-1", "default", 5.00),
        (last_month, "bot", "key-1", "default", 50.00),
        (today, "other", "key-1", "default", 0.20),
    ]:
        ledger.record(LedgerRecord(time=t, agent=agent, key_id=key, route=route, cost_usd=cost))
    ledger.close_sync()

    budgets = [
        BudgetConfig(scope="agent", name="bot", usd=1.0),
        BudgetConfig(scope="agent", name="bot", usd=10.0, period="month"),
        BudgetConfig(scope="key", name="key-1", usd=1.0),
        BudgetConfig(scope="route", name="default", usd=100.0),
    ]
    manager = BudgetManager(budgets, open_ledger(db_url), clock=Clock(now))
    spent = {(b.scope, b.name, b.period): s for b, s, _ in manager.usage()}
    assert spent == {
        ("agent", "bot", "day"): pytest.approx(0.70),
        ("agent", "bot", "month"): pytest.approx(5.70),
        ("key", "key-1", "day"): pytest.approx(0.60),
        ("route", "default", "day"): pytest.approx(0.90),
    }
    with pytest.raises(BudgetLimitError) as info:
        manager.reserve(agent="bot", key_id="key-1", route="default", estimated_usd=0.35)
    assert info.value.scope == "agent"  # 0.70 + 0.35 > 1.00


def test_budgets_start_from_zero_when_the_ledger_is_down(
    open_ledger: Callable[..., Ledger], caplog: pytest.LogCaptureFixture
) -> None:
    ledger = open_ledger("postgresql://nobody@127.0.0.1:1/none")
    manager = BudgetManager([budget(usd=1.0)], ledger)
    assert manager.usage()[0][1] == 0.0
    assert "budgets start from zero" in caplog.text


def test_refresh_counts_what_other_workers_spent(open_ledger: Callable[..., Ledger], db_url: str) -> None:
    clock = Clock(datetime(2025, 6, 15, 12, tzinfo=UTC))
    budgets = [budget(usd=1.0)]
    worker_a = BudgetManager(budgets, open_ledger(db_url), clock=clock)
    ledger_b = open_ledger(db_url)
    worker_b = BudgetManager(budgets, ledger_b, clock=clock)

    worker_b.reserve(agent="bot", key_id=None, route=None, estimated_usd=0.8).settle(0.7)
    ledger_b.record(LedgerRecord(time=clock(), agent="bot", cost_usd=0.7))
    assert ledger_b.flush_sync(timeout=30)
    reserve(worker_a, 0.5).release()  # before refreshing, worker A does not know about B's spend

    assert worker_a.refresh()
    with pytest.raises(BudgetLimitError) as info:
        reserve(worker_a, 0.5)
    assert info.value.spent_usd == pytest.approx(0.7)
    reserve(worker_a, 0.25).settle(0.25)
    assert worker_a.refresh()  # never lowers what the worker itself counted
    assert worker_a.usage()[0][1] == pytest.approx(0.95)
    assert not BudgetManager(budgets).refresh()  # no ledger: nothing to read
