"""Two gateway replicas sharing a real 3-primary Redis Cluster (`server.redis_url: redis+cluster://...`):
sessions, a budget, an rpm limit, a revocation and circuit-breaker health hold across them, as they do on one Redis
(the single-Redis tests, run against the Cluster), with no failed Redis call and keys spread over every primary."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from switchman.state import RedisLink, RedisUnavailable
from switchman.testing import FakeUpstream, RedisClusterServer

from . import test_shared_state as single
from .test_shared_state import Replicas, replica_config, start_replicas


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServer]:
    with RedisClusterServer() as server:
        yield server


@pytest.fixture
def on_cluster(cluster: RedisClusterServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The single-Redis tests' Redis is the Cluster; yields the count of Redis calls that failed meanwhile."""
    monkeypatch.setattr(single, "SHARED_REDIS", cluster.url)
    failed = [0]
    run = RedisLink.run

    async def counting_run(self: RedisLink, action, **options):  # type: ignore[no-untyped-def]
        try:
            return await run(self, action, **options)
        except RedisUnavailable:
            failed[0] += 1
            raise

    monkeypatch.setattr(RedisLink, "run", counting_run)
    yield failed


@pytest.fixture
def replicas(upstream: FakeUpstream, tmp_path: Path, on_cluster: list[int], cluster: RedisClusterServer,
             prefix: str) -> Iterator[Replicas]:
    upstream.clear()
    data = replica_config(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}", cluster.url, prefix)
    with ExitStack() as stack:
        yield start_replicas(stack, data)
    upstream.clear()


@pytest.fixture
def prefix(cluster: RedisClusterServer) -> Iterator[str]:
    from switchman.testing import forget_prefix, unique_prefix

    prefix = unique_prefix()
    yield prefix
    forget_prefix(cluster.url, prefix)


def _keys_by_primary(cluster: RedisClusterServer, prefix: str) -> dict[int, list[bytes]]:
    import redis

    found = {}
    for port in cluster.ports:
        with redis.Redis(host="127.0.0.1", port=port) as node:
            found[port] = sorted(node.scan_iter(prefix + "*"))
    return found


def test_sessions_and_a_budget_hold_across_replicas_on_the_cluster(
    replicas: Replicas, upstream: FakeUpstream, on_cluster: list[int], cluster: RedisClusterServer, prefix: str,
) -> None:
    assert all(g.redis is not None and g.redis.up and g.redis.cluster for g in replicas.gateways)
    single.test_a_session_keeps_its_model_and_escalation_across_replicas(replicas)
    single.test_negative_feedback_on_one_replica_escalates_the_session_on_the_other(replicas)
    single.test_concurrent_reservations_never_overspend_a_shared_budget(replicas, upstream)
    assert on_cluster[0] == 0
    found = _keys_by_primary(cluster, prefix)
    assert all(found[port] for port in cluster.ports), found  # sessions, budgets and health on every primary
    assert any(b"{budget:agent:pool}" in key for keys in found.values() for key in keys)
    assert sum(b"{session:" in key for keys in found.values() for key in keys) >= 2


def test_an_rpm_limit_holds_across_replicas_on_the_cluster(
    upstream: FakeUpstream, tmp_path: Path, on_cluster: list[int], prefix: str,
) -> None:
    single.test_an_rpm_limit_holds_across_replicas(upstream, tmp_path, prefix)
    assert on_cluster[0] == 0


def test_a_revoked_key_is_refused_by_every_replica_on_the_cluster(
    upstream: FakeUpstream, tmp_path: Path, on_cluster: list[int], prefix: str,
) -> None:
    single.test_a_revoked_key_is_refused_by_every_replica_at_once(upstream, tmp_path, prefix)
    assert on_cluster[0] == 0


def test_an_open_circuit_on_one_replica_is_seen_by_the_other_on_the_cluster(
    replicas: Replicas, upstream: FakeUpstream, on_cluster: list[int],
) -> None:
    """The cheap model fails on replica 0 until its circuit opens; replica 1, which sent it nothing, routes around it."""
    import time

    health = [g.dispatcher.health for g in replicas.gateways]
    upstream.inject("server_error", model="cheap", times=None)
    try:
        for _ in range(8):
            replicas.chat(0, headers={"X-Switchman-Session": f"s-{uuid.uuid4().hex[:8]}"})
        deadline = time.monotonic() + 10
        while health[1].state(_cheap_key(replicas)) != "open":
            assert time.monotonic() < deadline, "replica 1 never saw the circuit open"
            time.sleep(0.05)
    finally:
        upstream.clear()
    answer = replicas.chat(1)
    assert answer.status_code == 200 and answer.headers["x-switchman-model"] != "cheap"
    assert on_cluster[0] == 0


def _cheap_key(replicas: Replicas) -> str:
    """The health key replica 0 opened for the cheap model (its only unhealthy one)."""
    opened = replicas.gateways[0].dispatcher.health.unhealthy()
    assert len(opened) == 1, opened
    return next(iter(opened))


def test_a_primary_killed_mid_way_costs_no_request_and_counters_come_back(
    upstream: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A Cluster of the test's own; one primary killed between requests: zero 5xx, each replica degrades (log line,
    metric); restarted empty, both resync and the budget counter is the ledger's spend again."""
    import logging
    import time

    import httpx

    from switchman.state import redis_sync_client

    caplog.set_level(logging.WARNING, "switchman.state")
    headers = {"X-Switchman-Agent": "pool", "X-Switchman-Session": f"s-{uuid.uuid4().hex[:8]}"}
    with RedisClusterServer() as own, ExitStack() as stack:
        data = replica_config(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}", own.url, "sm:")
        replicas = start_replicas(stack, data)
        before = [replicas.chat(i, headers=headers, max_tokens=20) for i in range(4)]
        counter_key = single._counter_key("pool")
        with redis_sync_client(own.url) as client:
            owner = client.get_node_from_key(counter_key).port
        own.kill_node(own.ports.index(owner))  # the primary holding the budget's counter
        during = [replicas.chat(i, headers=headers, max_tokens=20) for i in range(10)]
        assert [r.status_code for r in before + during] == [200] * 14
        for url in replicas.urls:
            assert "switchman_redis_up 0.0" in httpx.get(url + "/metrics").text
        spent = sum(r.cost_usd for r in replicas.ledger_rows() if r.agent == "pool")
        own.restart_node(own.ports.index(owner))
        deadline = time.monotonic() + 30
        while not all(g.redis is not None and g.redis.up for g in replicas.gateways):
            assert time.monotonic() < deadline, "the replicas did not notice the Cluster is whole again"
            time.sleep(0.05)
        with redis_sync_client(own.url) as client:
            counter = client.hgetall(counter_key)  # rebuilt from the ledger on the restarted (empty) primary
        assert float(counter[b"spent"]) == pytest.approx(spent, rel=1e-6) and float(counter[b"reserved"]) == 0.0
        after = [replicas.chat(i, headers=headers, max_tokens=20) for i in range(2)]
        assert [r.status_code for r in after] == [200, 200]
    lines = [r.getMessage() for r in caplog.records if "redis unavailable" in r.getMessage()]
    assert len(lines) == 2 and all(line.endswith("; degrading to local state") for line in lines), lines
