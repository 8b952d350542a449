"""A key revoked with `switchman keys revoke` is refused by every replica within a second (Redis pub/sub), long
before the replicas would re-read the keys table themselves (every 60 s here)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy.engine import Engine

from switchman.ledger import KeyStore
from switchman.testing import FakeUpstream, RedisServer

from .cluster import ASK, Cluster
from .conftest import ENV
from .test_replicas import config_data


@pytest.fixture(scope="module")
def keyed(upstream: FakeUpstream, ledger_schema: tuple[Engine, str, str], redis_server: RedisServer,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str, str]]:
    """Three replicas, authentication on (a key exists before they start): (cluster, key id, secret)."""
    _, _, ledger_url = ledger_schema
    store = KeyStore(ledger_url)
    info, secret = store.create("ci-bot")
    store.close()
    data = config_data(upstream, ledger_url, redis_server.url)
    data["server"]["key_refresh_s"] = 60.0
    with Cluster(data, replicas=3, tmp=tmp_path_factory.mktemp("keyed"), env=ENV) as running:
        yield running, info.id, secret


def status(cluster: Cluster, index: int, secret: str) -> int:
    return httpx.post(cluster[index].base + "/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "auto", "messages": ASK, "max_tokens": 8}).status_code


def test_a_revoked_key_fails_on_every_replica_within_a_second(keyed: tuple[Cluster, str, str]) -> None:
    cluster, key_id, secret = keyed
    assert [status(cluster, i, secret) for i in range(3)] == [200, 200, 200]
    assert status(cluster, 0, "sk-sw-not-a-key-0000000000000000") == 401  # authentication is on
    revoke = subprocess.run(
        [sys.executable, "-c", "from switchman.cli import app; app()", "keys", "revoke", key_id,
         "--config", str(cluster.config)], env={**os.environ, **ENV}, capture_output=True, text=True, timeout=120)
    revoked_at = time.monotonic()
    assert revoke.returncode == 0, revoke.stderr

    def first_refusal(index: int) -> float:
        """Seconds from the revocation to this replica's first 401 (each replica polled on its own, so one
        slow round trip elsewhere does not count against it); inf if it still accepts the key after 10 s."""
        while time.monotonic() - revoked_at < 10.0:
            if status(cluster, index, secret) == 401:
                return time.monotonic() - revoked_at
        return float("inf")

    with ThreadPoolExecutor(max_workers=3) as pool:
        refused = dict(enumerate(pool.map(first_refusal, range(3))))
    assert all(seconds <= 1.0 for seconds in refused.values()), f"seconds to the first 401 per replica: {refused}"
