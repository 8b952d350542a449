"""FailureStreak: a retried job's failures logged once per streak (with the traceback), its recovery once."""

from __future__ import annotations

import logging

import pytest

from switchman._streaks import FailureStreak, OnceLog


def _try(streak: FailureStreak, ok: bool) -> None:
    try:
        if not ok:
            raise OSError("disk full")
    except OSError:
        streak.failed(5)
    else:
        streak.succeeded()


def test_a_streak_is_logged_at_its_start_and_its_end(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("switchman.test-streaks")
    streak = FailureStreak(logger, "job failed; again every %g s", "job works again")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        for ok in (True, False, False, False, True, True, False, True):
            _try(streak, ok)
    assert [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records] == [
        (logging.ERROR, "job failed; again every 5 s", True),
        (logging.WARNING, "job works again", False),
        (logging.ERROR, "job failed; again every 5 s", True),
        (logging.WARNING, "job works again", False),
    ]
    assert not streak.failing


def test_without_a_recovery_message_only_failures_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("switchman.test-streaks")
    streak = FailureStreak(logger, "job failed; again every %g s")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        for ok in (False, True, False):
            _try(streak, ok)
    assert [r.getMessage() for r in caplog.records] == ["job failed; again every 5 s"] * 2
    assert streak.failing


def test_a_value_is_logged_the_first_time_only() -> None:
    once = OnceLog()
    assert [once.first(v) for v in ("a", "b", "a", None, "b", None)] == [True, True, False, True, False, False]


def test_distinct_values_past_the_limit_are_not_logged_nor_kept(caplog: pytest.LogCaptureFixture) -> None:
    """A stream of bad values that never repeat (another writer's, a hostile one): memory and log stay bounded,
    and the log says once that further new values go unlogged."""
    once = OnceLog(limit=3)
    with caplog.at_level(logging.WARNING, logger="switchman._streaks"):
        assert [once.first(n) for n in range(10_000)] == [True] * 3 + [False] * 9_997
    assert once.first(0) is False and len(once._seen) == 3
    said = [r.getMessage() for r in caplog.records if r.name == "switchman._streaks"]
    assert len(said) == 1 and "further new ones are not logged" in said[0] and "first unlogged: 3" in said[0]
