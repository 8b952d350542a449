"""The shared backends on a real 3-primary Redis Cluster (`redis+cluster://`): every Lua script touches one slot,
pipelines span slots, the response cache, revocations and test clean-up work across primaries, and the single-Redis
tests of sessions, budgets, rate limits, health and online counts pass unchanged on the Cluster."""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import pytest
from clock_support import Clock

from switchman.learn import TrainedRouter
from switchman.state import (
    RedisCache,
    RedisLink,
    RedisUnavailable,
    RevocationFeed,
    is_redis_cluster,
    publish_revocation,
    redis_sync_client,
)
from switchman.testing import RedisClusterServer, forget_prefix, unique_prefix

from . import test_redis_health, test_redis_online, test_shared_backends

#: Every Lua script the shared backends run, by name.
SCRIPTS = {
    "budgets.reserve": "switchman.state._redis_budget_lua:RESERVE",
    "budgets.settle": "switchman.state._redis_budget_lua:SETTLE_MANY",
    "budgets.rebuild": "switchman.state._redis_budget_lua:REBUILD",
    "sessions.put": "switchman.state._sessions:_PUT",
    "sessions.mark": "switchman.state._sessions:_MARK",
    "limits.admit": "switchman.state._redis_limits:_ADMIT",
    "limits.refund": "switchman.state._redis_limits:_REFUND",
    "health.record": "switchman.state._redis_health:_RECORD",
    "online.push": "switchman.state._redis_online:_PUSH",
}


def _script(where: str) -> str:
    import importlib

    module, _, name = where.partition(":")
    source = getattr(importlib.import_module(module), name)
    assert isinstance(source, str)
    return source


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServer]:
    with RedisClusterServer() as server:
        yield server


class Calls:
    """What the links ran while a test went: each script's keys, and calls that failed."""

    def __init__(self) -> None:
        self.evals: list[tuple[str, list[str]]] = []
        self.failed = 0


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Record every script call (script and keys: `eval` goes through `eval_soon`) and every call that raised
    RedisUnavailable."""
    seen = Calls()
    eval_soon, run = RedisLink.eval_soon, RedisLink.run

    def recording_eval(self: RedisLink, source: str, keys: Any, args: Any) -> Any:
        seen.evals.append((source, list(keys)))
        return eval_soon(self, source, keys, args)

    async def counting_run(self: RedisLink, action: Callable[[Any], Awaitable[Any]], **options: Any) -> Any:
        try:
            return await run(self, action, **options)
        except RedisUnavailable:
            seen.failed += 1
            raise

    monkeypatch.setattr(RedisLink, "eval_soon", recording_eval)
    monkeypatch.setattr(RedisLink, "run", counting_run)
    return seen


def _one_slot_each(calls: Calls) -> set[str]:
    """Assert every recorded script call's keys share one slot; the names of the scripts seen."""
    from redis.crc import key_slot

    names = {_script(where): name for name, where in SCRIPTS.items()}
    seen = set()
    for source, keys in calls.evals:
        assert keys, names.get(source)
        slots = {key_slot(key.encode()) for key in keys}
        assert len(slots) == 1, (names.get(source), keys, slots)
        seen.add(names.get(source, "unknown"))
    return seen


def test_every_script_reaches_keys_only_through_its_keys_argument() -> None:
    """A key built inside a script would escape the slot check the Cluster makes on KEYS: none is (an index worked
    out in the script, as the budget reserve's `KEYS[b + 1]` over several budgets, still names a key of KEYS)."""
    for name, where in SCRIPTS.items():
        source = _script(where)
        targets = re.findall(r"redis\.p?call\(\s*'(\w+)'\s*(?:,\s*([^,)]+))?", source)
        assert targets, name
        for command, first in targets:
            if command.upper() == "TIME":
                continue
            assert re.fullmatch(r"KEYS\[[\w +*()-]+\]", first.strip()), (name, command, first)  # KEYS[b + 1]


def test_the_url_scheme_picks_the_cluster_client(cluster: RedisClusterServer) -> None:
    from redis.asyncio.cluster import RedisCluster

    assert is_redis_cluster(cluster.url) and is_redis_cluster("rediss+cluster://:pw@h:7000")
    assert not is_redis_cluster("redis://127.0.0.1:6379/0")
    link = RedisLink(cluster.url)
    assert isinstance(link.client, RedisCluster) and link.cluster
    assert link.display_url == cluster.url
    assert "pw" not in RedisLink("redis+cluster://:pw@127.0.0.1:7000").display_url
    import redis.asyncio

    plain = RedisLink("redis://127.0.0.1:6379/0").client
    assert type(plain) is redis.asyncio.Redis and not RedisLink("redis://127.0.0.1:6379/0").cluster


def test_a_node_url_keeps_the_seed_credentials_and_options() -> None:
    from switchman.state._redis_client import node_url, plain_url

    assert plain_url("rediss+cluster://u:p@h:7000?ssl_cert_reqs=none") == "rediss://u:p@h:7000?ssl_cert_reqs=none"
    assert node_url("rediss+cluster://u:p@h:7000?ssl_cert_reqs=none", "10.0.0.7", 7002) == \
        "rediss://u:p@10.0.0.7:7002?ssl_cert_reqs=none"
    assert node_url("redis+cluster://h:7000", "::1", 7001) == "redis://[::1]:7001"


def test_backends_pass_on_the_cluster_with_one_slot_per_script(
    cluster: RedisClusterServer, calls: Calls, monkeypatch: pytest.MonkeyPatch, clock: Clock,
) -> None:
    """The single-Redis tests of rate limits, budgets and sessions, on the Cluster: same results, no failed call,
    every script's keys in one slot."""
    monkeypatch.setattr(test_shared_backends, "URL", cluster.url)
    for test in (test_shared_backends.test_rate_limit_buckets_are_shared_and_report_what_openai_sends,
                 test_shared_backends.test_budget_reserve_refuse_settle_and_rebuild,
                 test_shared_backends.test_session_states_are_shared_with_their_ttl,
                 test_shared_backends.test_session_writes_are_ordered_by_turns_and_feedback_marks_in_one_step):
        prefix = unique_prefix()
        test(prefix)
        forget_prefix(cluster.url, prefix)
    monkeypatch.setattr(test_redis_health, "SHARED_URL", cluster.url)
    for health_test in (test_redis_health.test_failures_on_two_replicas_open_the_circuit_on_both,
                        test_redis_health.test_a_latency_mark_measured_on_one_replica_serves_the_other,
                        test_redis_health.test_a_batch_of_outcomes_counts_the_failures_after_its_last_answer):
        health_test(Clock())
    assert calls.failed == 0
    seen = _one_slot_each(calls)
    # health.record runs inside a pipeline (one key each); the rebuilds and replays only at a resync; online.push
    # in the online-count tests; limits.refund only when a later slot refuses
    assert seen == set(SCRIPTS) - {"health.record", "budgets.rebuild", "online.push", "limits.refund"}, seen


def test_a_budget_rebuild_after_a_resync_touches_one_slot_a_budget(cluster: RedisClusterServer, calls: Calls) -> None:
    from switchman._config import BudgetConfig
    from switchman.ledger import BudgetManager
    from switchman.state import SharedBudgets

    budgets = [BudgetConfig(scope="agent", name="a", usd=1.0), BudgetConfig(scope="route", name="r", usd=2.0)]
    prefix = unique_prefix()

    async def main() -> None:
        link = RedisLink(cluster.url, prefix=prefix, timeout_s=2.0)
        shared = SharedBudgets(BudgetManager(budgets), link)
        link.on_resync(shared.rebuild)
        await link.start()
        assert link.up
        assert (await shared.areserve(agent="a", key_id=None, route="r", estimated_usd=0.5)).held
        await link.aclose()

    anyio.run(main)
    assert calls.failed == 0
    assert "budgets.rebuild" in _one_slot_each(calls)


def test_online_counts_are_shared_on_the_cluster(cluster: RedisClusterServer, monkeypatch: pytest.MonkeyPatch,
                                                 math_greeting_router: TrainedRouter) -> None:
    monkeypatch.setattr(test_redis_online, "SHARED_URL", cluster.url)
    prefix = unique_prefix()
    try:
        test_redis_online.test_feedback_on_one_replica_reaches_the_others(math_greeting_router, prefix)
    finally:
        forget_prefix(cluster.url, prefix)


def test_a_pipeline_spans_the_primaries_and_entities_spread_over_them(cluster: RedisClusterServer) -> None:
    """Keys of 30 entities land on every primary; one non-transactional pipeline writes and reads them all."""
    prefix = unique_prefix()

    async def main() -> None:
        link = RedisLink(cluster.url, prefix=prefix, timeout_s=2.0)
        await link.start()
        keys = [link.key(f"session:s{i}") for i in range(30)]

        async def both(r: Any) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            for i, key in enumerate(keys):
                pipe.set(key, str(i))
            for key in keys:
                pipe.get(key)
            return list(await pipe.execute())

        replies = await link.run(both)
        assert replies[30:] == [str(i).encode() for i in range(30)]
        owners = {link.client.get_node_from_key(key).port for key in keys}
        assert owners == set(cluster.ports)  # all three primaries hold some
        await link.aclose()

    anyio.run(main)
    found = _keys_by_node(cluster, prefix)
    assert sum(found.values()) == 30 and all(found[port] > 0 for port in cluster.ports), found
    forget_prefix(cluster.url, prefix)
    assert sum(_keys_by_node(cluster, prefix).values()) == 0  # the clean-up visited every primary


def _keys_by_node(cluster: RedisClusterServer, prefix: str) -> dict[int, int]:
    """Keys under the prefix on each primary, not counting the link's markers (one per primary, see RedisLink)."""
    import redis

    counts = {}
    for port in cluster.ports:
        with redis.Redis(port=port) as node:
            counts[port] = sum(1 for key in node.scan_iter(prefix + "*") if b"{switchman-link-" not in key)
    return counts


def test_the_response_cache_on_the_cluster(cluster: RedisClusterServer) -> None:
    prefix = unique_prefix()

    async def main() -> None:
        cache = RedisCache(cluster.url, prefix=prefix, timeout_s=2.0)
        for i in range(12):
            await cache.set(f"entry-{i}", f"answer {i}".encode(), ttl_s=60)
        assert [await cache.get(f"entry-{i}") for i in range(12)] == [f"answer {i}".encode() for i in range(12)]
        assert await cache.get("absent") is None and cache.failures == 0
        await cache.aclose()

    anyio.run(main)
    found = _keys_by_node(cluster, prefix)
    assert sum(found.values()) == 12 and len([n for n in found.values() if n]) >= 2, found
    forget_prefix(cluster.url, prefix)


def test_revocations_reach_a_subscriber_on_any_node(cluster: RedisClusterServer) -> None:
    """Published through the Cluster client (gateway) and the blocking one (`keys revoke`): heard on each
    subscription, whichever node it picked."""
    prefix = unique_prefix()
    dropped: list[str] = []

    async def main() -> None:
        # generous timeouts: a stall of a loaded CI machine must not take the link down mid-test
        link = RedisLink(cluster.url, prefix=prefix, timeout_s=2.0, ping_s=0.5)
        await link.start()
        feeds = [RevocationFeed(link) for _ in range(3)]
        try:
            async with anyio.create_task_group() as tg:
                for feed in feeds:
                    tg.start_soon(feed.run, dropped.append)
                try:
                    with anyio.fail_after(20):
                        while any(feed.subscriptions == 0 for feed in feeds):
                            await anyio.sleep(0.01)
                        assert await feeds[0].publish("k-1")
                        assert await anyio.to_thread.run_sync(lambda: publish_revocation(cluster.url, prefix, "k-2"))
                        while len(dropped) < 6:
                            await anyio.sleep(0.01)
                finally:  # a failure still ends the subscriptions (no socket left to a later test)
                    for feed in feeds:
                        feed.stop()
        finally:
            await link.aclose()

    anyio.run(main)
    assert sorted(dropped) == ["k-1"] * 3 + ["k-2"] * 3
    assert not publish_revocation("redis+cluster://127.0.0.1:1", prefix, "k-3", timeout_s=0.2)


def test_a_cluster_link_resyncs_with_a_fresh_client(cluster: RedisClusterServer) -> None:
    """After an outage the link reads the slot map afresh (client closed, initialised again) before calls resume."""
    prefix = unique_prefix()

    async def main() -> None:
        link = RedisLink(cluster.url, prefix=prefix, timeout_s=0.5, ping_s=0.05)
        await link.start()
        await link.run(lambda r: r.set(link.key("x"), b"1"))
        closed = []
        aclose = link.client.aclose

        async def recording_aclose() -> None:
            closed.append(1)
            await aclose()

        link.client.aclose = recording_aclose
        link.up = False  # as after an outage
        assert await link.check()
        assert closed == [1] and len(link.client.get_primaries()) == 3  # closed, then the slot map read again
        assert await link.run(lambda r: r.get(link.key("x"))) == b"1"
        await link.aclose()

    anyio.run(main)
    with redis_sync_client(cluster.url) as client:
        assert client.get(f"{prefix}{{x}}") == b"1"
    forget_prefix(cluster.url, prefix)


def test_the_helper_is_exported_next_to_redis_server() -> None:
    from switchman import testing

    assert "RedisClusterServer" in testing.__all__ and inspect.isclass(testing.RedisClusterServer)


def test_the_documented_cluster_settings_load_and_pick_the_cluster_client() -> None:
    from pathlib import Path

    import yaml

    from switchman._config import parse_config

    doc = (Path(__file__).resolve().parents[2] / "docs" / "scale-out.md").read_text(encoding="utf-8")
    section = doc.split("### Redis Cluster", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    config = parse_config(yaml.safe_load(block.group(1)))
    link = RedisLink.from_config(config.server)
    assert link is not None and link.cluster and "secret" not in link.display_url
    assert config.cache.redis_url is not None and is_redis_cluster(config.cache.redis_url)


def test_a_connection_redis_py_lost_under_a_call_is_an_outage_not_a_500(cluster: RedisClusterServer) -> None:
    """redis-py's asyncio Cluster can write on a connection another task just disconnected (its writer is None:
    an AttributeError inside redis-py, seen while a primary failed over mid-load). The link takes it as a lost
    connection (RedisUnavailable, the caller degrades), and still lets an AttributeError of its caller's own through."""
    from redis.asyncio.connection import Connection

    from switchman.state import RedisUnavailable

    async def main() -> None:
        link = RedisLink(cluster.url, prefix=unique_prefix(), timeout_s=2.0)
        await link.start()
        try:
            async def ours(_: Any) -> None:
                raise AttributeError("a bug of the caller")

            with pytest.raises(AttributeError, match="a bug of the caller"):
                await link.run(ours)

            async def lost(_: Any) -> None:  # the redis-py frame of the failover: a write with no writer
                await Connection()._send_packed_command([b"*1\r\n$4\r\nPING\r\n"])

            with pytest.raises(RedisUnavailable):
                await link.run(lost)
            assert not link.up  # degraded until the watcher finds the cluster again
        finally:
            await link.aclose()

    anyio.run(main)


def test_a_primary_killed_right_after_start_fails_over() -> None:
    """The cluster the tests start is ready only once each replica holds its primary's data: a primary killed
    at once is replaced by its replica (before, a replica still waiting out the diskless-sync delay could never
    be promoted, and the cluster stayed down: the failover test's `wait_serving` timed out in a full run)."""
    with RedisClusterServer(primaries=3, replicas=1) as server:
        victim = server.node_for("{victim}")
        server.kill_node(victim)
        deadline = time.monotonic() + 30
        while server.node_for("{victim}") == victim and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.node_for("{victim}") != victim  # its replica was promoted
        server.wait_serving(seconds=30)


def _scripts_on_a_prefix(cluster: RedisClusterServer, calls: Calls,
                         body: Callable[[RedisLink], Awaitable[None]]) -> set[str]:
    """`body` run with a link on a prefix of its own on the Cluster: no call failed; the scripts it ran (each with
    its keys in one slot)."""
    prefix = unique_prefix()

    async def main() -> None:
        link = RedisLink(cluster.url, prefix=prefix, timeout_s=2.0)
        await link.check()
        try:
            await body(link)
        finally:
            await link.aclose()

    try:
        anyio.run(main)
    finally:
        forget_prefix(cluster.url, prefix)
    assert calls.failed == 0
    return _one_slot_each(calls)


def test_limits_of_two_slots_are_admitted_per_slot_and_a_refusal_gives_back(cluster: RedisClusterServer,
                                                                            calls: Calls) -> None:
    """A key's and an agent's buckets hash to two slots: one script each (never a cross-slot script), and the key's
    take is given back when the agent's refuses."""
    from switchman.state import RateLimit, RedisRateLimiter

    key, agent = ("key:k", RateLimit(rpm=5)), ("agent:a", RateLimit(rpm=1))

    async def body(link: RedisLink) -> None:
        limiter = RedisRateLimiter(link)
        assert limiter.per_slot
        assert all(a.admitted for a in await limiter.admit_all([key, agent], 10))
        assert not any(a.admitted for a in await limiter.admit_all([key, agent], 10))
        assert (await limiter.admit(*key, 10)).remaining_requests == 3  # the refused request took nothing

    assert "limits.admit" in _scripts_on_a_prefix(cluster, calls, body)


def test_budgets_of_two_slots_are_held_per_slot_and_a_refusal_gives_back(cluster: RedisClusterServer,
                                                                        calls: Calls) -> None:
    """An agent's and a key's budget hash to two slots: one reserve script each (never a cross-slot script), and
    the agent's hold is given back when the key's budget refuses."""
    from switchman._config import BudgetConfig
    from switchman._exceptions import BudgetLimitError
    from switchman.ledger import BudgetManager
    from switchman.state import SharedBudgets

    agent, key = BudgetConfig(scope="agent", name="a", usd=1.0), BudgetConfig(scope="key", name="k", usd=0.5)

    async def body(link: RedisLink) -> None:
        budgets = SharedBudgets(BudgetManager([agent, key]), link)
        assert budgets.per_slot
        held = await budgets.areserve(agent="a", key_id="k", route=None, estimated_usd=0.4)
        with pytest.raises(BudgetLimitError, match="key budget 'k' exceeded"):
            await budgets.areserve(agent="a", key_id="k", route=None, estimated_usd=0.3)
        await budgets.drain()
        alone = await budgets.areserve(agent="a", key_id=None, route=None, estimated_usd=0.6)  # 0.4 + 0.6 fits $1
        assert alone.held
        held.settle(0.1)
        alone.release()
        await budgets.drain()

    assert {"budgets.reserve", "budgets.settle"} <= _scripts_on_a_prefix(cluster, calls, body)
