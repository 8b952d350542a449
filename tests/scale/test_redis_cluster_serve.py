"""Three `switchman serve` processes sharing a real 3-primary Redis Cluster (`redis_url: redis+cluster://...`) and
one Postgres ledger: the multi-replica tests of spend, budgets, sessions, rate limits and health pass as on one
Redis, and a key revoked with `switchman keys revoke` (given the Cluster URL) fails on every replica within a
second."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from switchman.ledger import KeyStore
from switchman.testing import FakeUpstream, RedisClusterServer

from . import test_replicas as single
from . import test_revocation
from .cluster import Cluster
from .conftest import ENV


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterServer]:
    with RedisClusterServer() as server:
        yield server


@pytest.fixture(scope="module")
def cluster(upstream: FakeUpstream, ledger_schema: tuple[Engine, str, str], redis_cluster: RedisClusterServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from single.serve_on(redis_cluster.url, upstream, ledger_schema, tmp_path_factory, "on-cluster")


def test_the_replicas_share_state_on_the_cluster(cluster: Cluster) -> None:
    assert "redis+cluster://" in cluster.config.read_text()
    assert [replica.metric("switchman_redis_up") for replica in cluster] == [1.0, 1.0, 1.0]


def test_each_answer_has_one_ledger_row_and_spend_adds_up(cluster: Cluster,
                                                           ledger_schema: tuple[Engine, str, str]) -> None:
    single.test_each_answer_has_one_ledger_row_and_spend_adds_up(cluster, ledger_schema)


def test_a_budget_is_not_overspent_across_replicas(cluster: Cluster, ledger_schema: tuple[Engine, str, str]) -> None:
    single.test_a_budget_is_not_overspent_across_replicas(cluster, ledger_schema)


def test_sessions_keep_their_model_across_replicas_and_an_escalation_holds(cluster: Cluster) -> None:
    single.test_sessions_keep_their_model_across_replicas_and_an_escalation_holds(cluster)


def test_an_rpm_limit_holds_across_replicas(cluster: Cluster) -> None:
    single.test_an_rpm_limit_holds_across_replicas(cluster)


def test_a_deployment_failing_on_one_replica_is_set_aside_on_all(cluster: Cluster, upstream: FakeUpstream) -> None:
    single.test_a_deployment_failing_on_one_replica_is_set_aside_on_all(cluster, upstream)


def test_a_revoked_key_fails_on_every_replica_within_a_second(
    cluster: Cluster, upstream: FakeUpstream, ledger_schema: tuple[Engine, str, str],
    redis_cluster: RedisClusterServer, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Replicas of their own (authentication on: a key exists before they start); `keys revoke` reads the Cluster
    URL from their configuration."""
    _, _, ledger_url = ledger_schema
    store = KeyStore(ledger_url)
    info, secret = store.create("ci-bot-cluster")
    store.close()
    data = single.config_data(upstream, ledger_url, redis_cluster.url)
    data["server"]["key_refresh_s"] = 60.0
    with Cluster(data, replicas=3, tmp=tmp_path_factory.mktemp("keyed-on-cluster"), env=ENV) as keyed:
        test_revocation.test_a_revoked_key_fails_on_every_replica_within_a_second((keyed, info.id, secret))
