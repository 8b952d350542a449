"""sync_every: a replica's background sync goes on after failures, logging each streak once (FailureStreak)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from switchman.state._sync_loop import sync_every


def test_a_failing_sync_is_logged_once_per_streak_and_its_recovery_once(caplog: pytest.LogCaptureFixture) -> None:
    outcomes = [False, False, False, True, True, False, True]  # False: the sync raises
    calls: list[bool] = []

    async def main() -> None:
        stopping = asyncio.Event()

        async def sync() -> None:
            ok = outcomes[len(calls)]
            calls.append(ok)
            if len(calls) == len(outcomes):
                stopping.set()
            if not ok:
                raise ConnectionError("redis went away")

        await asyncio.wait_for(sync_every(sync, 0.001, stopping, "health"), timeout=10)

    with caplog.at_level(logging.WARNING, logger="switchman.state"):
        asyncio.run(main())
    assert calls == outcomes  # every failure was survived
    assert [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records] == [
        (logging.ERROR, "redis health sync failed; trying again in 0.00 s", True),
        (logging.WARNING, "redis health sync works again", False),
        (logging.ERROR, "redis health sync failed; trying again in 0.00 s", True),
        (logging.WARNING, "redis health sync works again", False),
    ]


def test_a_name_with_a_percent_sign_is_logged_as_written(caplog: pytest.LogCaptureFixture) -> None:
    outcomes = [False, True]
    calls: list[bool] = []

    async def main() -> None:
        stopping = asyncio.Event()

        async def sync() -> None:
            calls.append(outcomes[len(calls)])
            if len(calls) == len(outcomes):
                stopping.set()
            if not calls[-1]:
                raise ConnectionError("redis went away")

        await asyncio.wait_for(sync_every(sync, 0.001, stopping, "50% sample"), timeout=10)

    with caplog.at_level(logging.WARNING, logger="switchman.state"):
        asyncio.run(main())
    assert [r.getMessage() for r in caplog.records] == [
        "redis 50% sample sync failed; trying again in 0.00 s", "redis 50% sample sync works again"]
