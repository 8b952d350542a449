"""What the shared backends' scripts cost inside Redis, counted by `INFO commandstats` on a redis-server of the
test's own (the counts are exact, whatever the machine's load): a script that reads a field twice, or once per
field where one command would do, is caught here."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from switchman._config import BudgetConfig
from switchman.ledger import BudgetManager, period_bounds
from switchman.state import SharedBudgets, SharedReservation
from switchman.testing import RedisServer

from .redis_support import started_link

AGENT = BudgetConfig(scope="agent", name="a", usd=1.0)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as own:
        yield own


def _stats(server: RedisServer) -> dict[str, int]:
    """Calls per command since the last reset (`hget`, `evalsha`, ...)."""
    import redis

    raw = redis.Redis(port=server.port)
    try:
        found: Any = raw.info("commandstats")
    finally:
        raw.close()
    return {name.removeprefix("cmdstat_"): int(entry["calls"]) for name, entry in found.items()}


def _reset(server: RedisServer) -> None:
    import redis

    raw = redis.Redis(port=server.port)
    try:
        raw.config_resetstat()
    finally:
        raw.close()


def test_a_reserve_reads_spent_once(server: RedisServer) -> None:
    """The reserve script reads the counter hash's `spent` once (it read it twice: 4 HGETs a reserve, now 3 —
    `spent`, `reserved`, the reservation's held amount)."""
    async def main() -> None:
        link = await started_link(server.url, "counts:", ping_s=60.0)
        budgets = SharedBudgets(BudgetManager([AGENT]), link)
        await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.01)  # script loaded
        _reset(server)
        for _ in range(10):
            await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.01)
        stats = _stats(server)
        assert stats["hget"] == 30, stats
        await link.aclose()

    anyio.run(main)


def test_an_online_push_costs_one_command_a_field(server: RedisServer, math_greeting_router: Any) -> None:
    """A push adds each field with one HINCRBYFLOAT and reads none beforehand (it read each with an HGET first:
    2 commands a field, now 1), in one script call."""
    from switchman._config import OnlineOptions
    from switchman.learn import LearnedStrategy, OnlineStrategy, get_embedder
    from switchman.state import RedisOnlineCounts

    options = OnlineOptions(enabled=True, exploration=0.05, clusters=2, prior_strength=2.0)
    strategy = OnlineStrategy(LearnedStrategy(math_greeting_router, get_embedder(math_greeting_router.embedder)),
                              options)
    models = math_greeting_router.model_names

    async def main() -> None:
        link = await started_link(server.url, "counts:", ping_s=60.0)
        shared = RedisOnlineCounts(link, "r", strategy)
        await shared.sync()  # script loaded
        _reset(server)
        for cluster in (0, 1):
            for model in models:
                assert strategy.observe(cluster, model, 1.0)
        await shared.sync()
        fields = 2 * 2 * len(models)  # a and b, per cluster and model
        stats = _stats(server)
        assert stats.get("hget", 0) == 0 and stats["hincrbyfloat"] == fields, stats
        assert stats.get("evalsha", 0) + stats.get("eval", 0) == 1, stats
        await link.aclose()

    anyio.run(main)


def test_budgets_run_three_scripts_whatever_a_spend_no_number_calls_for(server: RedisServer) -> None:
    """Reserve, settle (batched, and the rebuild's replay of a settle Redis missed) and rebuild are three scripts;
    what a spend that is no number calls for is an argument, not a script of its own (there were six: the replay
    and the two 'keep it while the ledger cannot be read' cases had theirs)."""
    import redis

    async def main() -> None:
        raw = redis.Redis(port=server.port)
        raw.script_flush()
        link = await started_link(server.url, "counts:", ping_s=60.0)
        budgets = SharedBudgets(BudgetManager([AGENT]), link)
        reservation = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.01)
        reservation.settle(0.01)
        await budgets.drain()
        missed = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.01)
        assert isinstance(missed, SharedReservation)
        budgets._unsent.append((_counter_key(budgets, AGENT), missed.id, 0.02, time.monotonic(), None))  # noqa: SLF001
        await budgets.rebuild()  # replays it, then raises the counters to the ledger's (none here)
        assert budgets._unsent == []  # noqa: SLF001
        assert raw.hget(_counter_key(budgets, AGENT), "spent") == b"0.03"
        assert raw.info("memory")["number_of_cached_scripts"] == 3
        raw.close()
        await link.aclose()

    anyio.run(main)


def _counter_key(budgets: SharedBudgets, budget: BudgetConfig) -> str:
    start, _ = period_bounds(time.time(), budget.period)
    return budgets._key(budget, start)  # noqa: SLF001


@pytest.mark.parametrize("scopes", [2, 3])
def test_a_reserve_under_several_budgets_is_one_script(server: RedisServer, scopes: int) -> None:
    """Held or refused, a request under two or three budgets (agent, key, route) is one script on one Redis (it was
    one a budget, and a refusal's give-back one more a budget in the next settle batch) and reads each budget's
    `spent` once."""
    defined = [BudgetConfig(scope="agent", name="s", usd=1.0), BudgetConfig(scope="key", name="s", usd=1.0),
               BudgetConfig(scope="route", name="s", usd=1.0)][:scopes]
    names: dict[str, Any] = {"agent": "s", "key_id": "s", "route": "s" if scopes == 3 else None}

    async def main() -> None:
        link = await started_link(server.url, "counts:", ping_s=60.0)
        budgets = SharedBudgets(BudgetManager(defined), link)
        await budgets.areserve(**names, estimated_usd=0.0)  # script loaded
        _reset(server)
        for _ in range(10):
            await budgets.areserve(**names, estimated_usd=0.01)
        await budgets.drain()
        held = _stats(server)
        assert held.get("evalsha", 0) + held.get("eval", 0) == 10 and held["hget"] == 30 * scopes, held
        _reset(server)
        for _ in range(10):
            with pytest.raises(Exception, match="budget"):
                await budgets.areserve(**names, estimated_usd=2.0)
        await budgets.drain()
        refused = _stats(server)
        assert refused.get("evalsha", 0) + refused.get("eval", 0) == 10, refused
        await link.aclose()

    anyio.run(main)
