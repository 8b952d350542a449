"""Logging a repeating job's failures once per streak, not once per try.

    streak = FailureStreak(logger, "budget refresh failed; trying again every %g s", "budget refresh works again")
    try: refresh()
    except Exception: streak.failed(every_s)
    else: streak.succeeded()

A background loop that retries every few seconds must survive a failure and say so, but a traceback per try
would bury the log: the first failure of a streak is logged with its traceback, the recovery (when a message
is given) as one line.
"""

from __future__ import annotations

import logging

__all__ = ["FailureStreak"]


class FailureStreak:
    """Whether a repeating job is failing now; logs the start (with the traceback) and the end of each streak."""

    __slots__ = ("_failed", "_logger", "_recovered", "failing")

    def __init__(self, logger: logging.Logger, failed: str, recovered: str | None = None) -> None:
        self._logger = logger
        self._failed = failed
        self._recovered = recovered
        self.failing = False

    def failed(self, *args: object) -> None:
        """Call from the `except` block of a failed try: logged (with the traceback) when it starts a streak."""
        if not self.failing:
            self._logger.exception(self._failed, *args)
        self.failing = True

    def succeeded(self) -> None:
        """A try went through: the end of a streak is logged when a recovery message was given."""
        if self.failing and self._recovered is not None:
            self._logger.warning(self._recovered)
        self.failing = False
