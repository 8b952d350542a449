"""A key revoked with `switchman keys revoke` is refused by every replica within a second (Redis pub/sub), long
before the replicas would re-read the keys table themselves (every 60 s here)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

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
    refused: dict[int, float] = {}
    while len(refused) < 3 and time.monotonic() - revoked_at < 1.0:
        for i in set(range(3)) - set(refused):
            if status(cluster, i, secret) == 401:
                refused[i] = time.monotonic() - revoked_at
    assert sorted(refused) == [0, 1, 2], f"refused within 1 s by {refused} only"
