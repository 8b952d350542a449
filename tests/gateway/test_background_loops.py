"""Background loops outlive one bad value: a malformed key row, a listener's bug, a failed budget refresh."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from switchman.gateway._keyring import Keyring
from switchman.ledger import KeyStore


def _run_loop(loop: Coroutine[Any, Any, Any], enough: Callable[[], bool]) -> bool:
    """Run a background loop until `enough()` (3 s at most), then cancel it: whether it was still running."""
    async def main() -> bool:
        task = asyncio.get_running_loop().create_task(loop)
        for _ in range(300):
            await asyncio.sleep(0.01)
            if enough() or task.done():
                break
        running = not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return running

    return asyncio.run(main())


@pytest.mark.parametrize("change", ["budget_period = 'week'", "budget_usd = -1", "created = 1e300"])
def test_a_malformed_key_row_is_left_out_and_the_other_keys_still_read(
        tmp_path: Path, change: str, caplog: pytest.LogCaptureFixture) -> None:
    """Before, its ValueError (a budget no BudgetConfig takes, a time no datetime holds) escaped every key refresh:
    the gateway kept its old key set for good (new keys and revocations unseen), or could not start."""
    url = f"sqlite:///{tmp_path / 'keys.sqlite3'}"
    store = KeyStore(url)
    bad, _ = store.create("bad", budget_usd=5.0)
    good, good_secret = store.create("good", budget_usd=5.0)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE switchman_keys SET {change} WHERE id = :id"), {"id": bad.id})
    engine.dispose()
    keyring = Keyring(store)

    async def main() -> None:
        with caplog.at_level(logging.WARNING, logger="switchman.ledger"):
            assert await keyring.refresh() is True
        found = await keyring.verify(good_secret)
        assert found is not None and found.id == good.id
        assert keyring.keys is not None and [b.name for b in keyring.keys.budgets()] == [good.id]
        assert any(bad.id in r.getMessage() and "malformed" in r.getMessage() for r in caplog.records)

    try:
        asyncio.run(main())
    finally:
        keyring.close()


def _keyring_with_a_buggy_listener(tmp_path: Path, *, failures: int) -> tuple[Keyring, list[int]]:
    """A keyring over one key, refreshed every 10 ms, whose listener raises on its first `failures` calls (counted)."""
    store = KeyStore(f"sqlite:///{tmp_path / 'keys.sqlite3'}")
    store.create("k")
    keyring = Keyring(store, refresh_s=0.01)
    calls: list[int] = []

    def listener(_: object) -> None:
        calls.append(1)
        if len(calls) <= failures:
            raise RuntimeError("a listener's bug")

    keyring.on_change(listener)
    return keyring, calls


def test_the_key_refresh_loop_outlives_a_listener_that_raises(tmp_path: Path) -> None:
    """Before, one raising listener (e.g. key budgets a reload could not take) ended `Keyring.run` for good, and
    the lifespan's `await task` at shutdown re-raised it before the ledger was flushed."""
    keyring, calls = _keyring_with_a_buggy_listener(tmp_path, failures=1)

    try:
        assert _run_loop(keyring.run(), lambda: len(calls) >= 3)
    finally:
        keyring.close()
    assert len(calls) >= 3


class _FlakyBudgets:
    """Budgets whose first refresh fails (a database error the ledger does not catch, a bug)."""

    def __init__(self) -> None:
        self.refreshes = 0

    def usage(self) -> list[object]:
        return [object()]

    def refresh(self) -> bool:
        self.refreshes += 1
        if self.refreshes == 1:
            raise RuntimeError("a transient failure")
        return True


def _run_budget_loop(budgets: _FlakyBudgets, *, refreshes: int) -> bool:
    """The gateway's budget refresh loop (every 10 ms) over `budgets` until it refreshed `refreshes` times: whether
    it was still running."""
    from types import SimpleNamespace

    from switchman.gateway import Gateway

    gateway = SimpleNamespace(budgets=budgets)
    return _run_loop(Gateway.refresh_budgets(gateway, every_s=0.01),  # type: ignore[arg-type]
                     lambda: budgets.refreshes >= refreshes)


def test_the_budget_refresh_loop_outlives_a_failed_refresh(caplog: pytest.LogCaptureFixture) -> None:
    """Before, one raising refresh ended `refresh_budgets` for good (workers stopped counting each other's spend),
    and the lifespan's `await task` at shutdown re-raised it before the ledger was flushed."""
    budgets = _FlakyBudgets()
    with caplog.at_level(logging.ERROR, logger="switchman.gateway"):
        assert _run_budget_loop(budgets, refreshes=3)
    assert budgets.refreshes >= 3
    assert any("budget refresh" in r.getMessage() for r in caplog.records)


class _BrokenBudgets(_FlakyBudgets):
    """Budgets whose refreshes fail five times in a row, then work."""

    def refresh(self) -> bool:
        self.refreshes += 1
        if self.refreshes <= 5:
            raise RuntimeError("a persistent failure")
        return True


def test_a_persistent_budget_refresh_failure_is_logged_once_and_its_end_too(caplog: pytest.LogCaptureFixture) -> None:
    """A traceback at every tick (every 5 s) for a failure that lasts would bury the log: one per failing streak."""
    budgets = _BrokenBudgets()
    with caplog.at_level(logging.INFO, logger="switchman.gateway"):
        assert _run_budget_loop(budgets, refreshes=7)
    assert budgets.refreshes >= 7
    failed = [r for r in caplog.records if "budget refresh" in r.getMessage() and "failed" in r.getMessage()]
    assert len(failed) == 1
    assert any("budget refresh" in r.getMessage() and "works again" in r.getMessage() for r in caplog.records)


def test_a_persistent_key_refresh_failure_is_logged_once_per_streak(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    keyring, calls = _keyring_with_a_buggy_listener(tmp_path, failures=5)

    try:
        with caplog.at_level(logging.INFO, logger="switchman.gateway"):
            assert _run_loop(keyring.run(), lambda: len(calls) >= 7)
    finally:
        keyring.close()
    assert len(calls) >= 7
    assert len([r for r in caplog.records if "refresh failed" in r.getMessage()]) == 1
    assert any("works again" in r.getMessage() for r in caplog.records)
