"""Virtual keys: create, verify, revoke, list; the secret never reaches the database."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ledger_support import TcpProxy, pg_url_for
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from switchman._config import BudgetConfig
from switchman.ledger import KEY_PREFIX, KeyStore, Ledger, LedgerRecord


@pytest.fixture
def open_store() -> Iterator[Callable[..., KeyStore]]:
    made: list[KeyStore] = []

    def make(url: str) -> KeyStore:
        store = KeyStore(url)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def test_create_verify_revoke(open_store: Callable[..., KeyStore], db_url: str) -> None:
    store = open_store(db_url)
    assert not store.has_keys()
    info, secret = store.create("ci-bot")
    other, other_secret = store.create("notebook")
    assert secret.startswith(KEY_PREFIX) and len(secret) == len(KEY_PREFIX) + 43
    assert secret != other_secret and info.id != other.id
    assert store.has_keys()

    assert store.verify(secret) == info
    assert store.verify(other_secret) == other
    assert store.verify(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert store.verify(secret + "x") is None
    assert store.verify(secret[len(KEY_PREFIX) :]) is None
    assert store.verify("") is None
    assert store.verify("sk-sw-") is None

    assert store.revoke(info.id)
    assert store.verify(secret) is None
    assert not store.revoke(info.id)  # already revoked
    assert not store.revoke("key-nope")
    assert store.verify(other_secret) == other
    assert store.has_keys()
    assert store.revoke(other.id)
    assert not store.has_keys()
    assert store.auth_enabled()  # keys were created here once: authentication stays on


def test_a_snapshot_verifies_in_memory_and_a_new_one_sees_changes(
    open_store: Callable[..., KeyStore], sqlite_url: str
) -> None:
    gateway = open_store(sqlite_url)
    cli = open_store(sqlite_url)
    assert not gateway.snapshot().auth_enabled
    info, secret = cli.create("bot", budget_usd=1.0, agents=["a", "b"], default_agent="a")
    before = gateway.snapshot()
    assert before.auth_enabled and before.verify(secret) == info and len(before) == 1
    assert info.agents == ("a", "b") and info.default_agent == "a"
    assert before.budgets() == [BudgetConfig(scope="key", name=info.id, usd=1.0)]
    cli.update(info.id, budget_usd=3.0, agents=None)
    cli.revoke(info.id)
    assert before.verify(secret) == info  # a snapshot is a moment's view
    after = gateway.snapshot()
    assert after.verify(secret) is None and after.budgets() == [] and after.auth_enabled
    assert after.with_lookup("zzzzzzzz", []).verify(secret) is None


def test_binding_a_key_to_agents_is_checked(open_store: Callable[..., KeyStore], sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    with pytest.raises(ValueError, match="not one of the key's agents"):
        store.create("x", agents=["a"], default_agent="b")
    info, _ = store.create("x", default_agent="b")
    assert info.agents is None and info.default_agent == "b"
    with pytest.raises(ValueError, match="not one of the key's agents"):
        store.update(info.id, agents=["a"])
    assert store.update(info.id, agents=["a", "b"]).agents == ("a", "b")
    with pytest.raises(ValueError, match="no active key"):
        store.update("key-missing", budget_usd=1.0)


def test_list_shows_prefix_status_and_budget(open_store: Callable[..., KeyStore], sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    a, secret_a = store.create("alpha", budget_usd=5.0)
    b, _ = store.create("beta", budget_usd=50.0, budget_period="month")
    c, _ = store.create("gamma")
    store.revoke(b.id)
    listed = {k.id: k for k in store.list()}
    assert [k.name for k in store.list()] == ["alpha", "beta", "gamma"]
    assert listed[a.id].prefix == secret_a[: len(KEY_PREFIX) + 4] + "…"
    assert [listed[x.id].revoked for x in (a, b, c)] == [False, True, False]
    assert listed[a.id].created.tzinfo is not None
    assert store.get(a.id) == listed[a.id]
    assert store.get("key-missing") is None
    assert store.budgets() == [BudgetConfig(scope="key", name=a.id, usd=5.0, period="day")]
    with pytest.raises(ValueError, match="non-empty name"):
        store.create("  ")
    with pytest.raises(ValueError, match="more than"):
        store.create("x", budget_usd=0)


def test_sqlite_file_never_holds_a_secret(
    open_store: Callable[..., KeyStore], open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str
) -> None:
    store = open_store(sqlite_url)
    pairs = [store.create(f"key-{i}") for i in range(5)]
    secrets = [secret for _, secret in pairs]
    store.revoke(pairs[0][0].id)
    assert [store.verify(secret) is not None for secret in secrets] == [False, True, True, True, True]
    ledger = open_ledger(sqlite_url)
    info = store.verify(secrets[1])
    assert info is not None
    ledger.record(LedgerRecord(key_id=info.id, model="m"))
    ledger.close_sync()
    store.close()
    files = list(sqlite_path.parent.iterdir())  # the database and any -wal / -shm files
    blob = b"".join(f.read_bytes() for f in files)
    assert info.id.encode() in blob  # the check can see what is there...
    for secret in secrets:
        assert secret.encode() not in blob  # ...and the secrets are not
        assert secret[len(KEY_PREFIX) :].encode() not in blob
        assert secret[-20:].encode() not in blob


def test_postgres_rows_never_hold_a_secret(
    open_store: Callable[..., KeyStore], pg_url: str, pg_admin: tuple[Engine, str], pg_schema: str
) -> None:
    store = open_store(pg_url)
    pairs = [store.create(f"key-{i}") for i in range(3)]
    with pg_admin[0].connect() as conn:
        rows = conn.execute(text(f"select t::text from {pg_schema}.switchman_keys t")).scalars().all()
    dump = "\n".join(rows)
    assert len(rows) == 3
    for info, secret in pairs:
        assert info.id in dump
        assert secret not in dump
        assert secret[-20:] not in dump


def test_a_snapshot_fails_loudly_while_the_database_is_down(
    open_store: Callable[..., KeyStore], pg_proxy: TcpProxy, pg_admin: tuple[Engine, str], pg_schema: str
) -> None:
    pg_proxy.start()
    store = open_store(pg_url_for(pg_admin[1], pg_schema, port=pg_proxy.port))
    info, secret = store.create("bot")
    held = store.snapshot()
    pg_proxy.stop()
    with pytest.raises(OperationalError):
        store.snapshot()  # the gateway's Keyring keeps serving from `held` meanwhile
    assert held.verify(secret) == info
    pg_proxy.start()
    assert store.snapshot().verify(secret) == info


def test_many_processes_creating_the_tables_at_once(open_store: Callable[..., KeyStore], db_url: str) -> None:
    """Gateway workers start together: each creates the tables it finds missing, and none may fail."""
    stores = [open_store(db_url) for _ in range(6)]
    start = threading.Barrier(len(stores))
    failures: list[BaseException] = []

    def worker(store: KeyStore) -> None:
        start.wait()
        try:
            store.has_keys()
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert stores[0].create("after")[0].name == "after"
