"""Logging what repeats without flooding the log: a repeating job's failures once per streak, not once per try;
a bad value once, not at every read of it.

    streak = FailureStreak(logger, "budget refresh failed; trying again every %g s", "budget refresh works again")
    try: refresh()
    except Exception: streak.failed(every_s)
    else: streak.succeeded()

A background loop that retries every few seconds must survive a failure and say so, but a traceback per try
would bury the log: the first failure of a streak is logged with its traceback, the recovery (when a message
is given) as one line.

    malformed = OnceLog()
    if malformed.first(row_id): logger.warning("row %s left out: malformed", row_id)

A value read again and again (a malformed row, a counter another writer broke) is logged the first time only.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

__all__ = ["FailureStreak", "OnceLog"]

#: Distinct values a OnceLog remembers (then it logs no new one): bounds its memory, and the log, under a stream
#: of distinct bad values (another writer's, or a hostile one).
ONCE_LIMIT = 1024
_logger = logging.getLogger(__name__)


class FailureStreak:
    """Whether a repeating job is failing now; logs the start (with the traceback) and the end of each streak."""

    __slots__ = ("_failed", "_logger", "_recovered", "_traceback", "failing")

    def __init__(self, logger: logging.Logger, failed: str, recovered: str | None = None, *,
                 traceback: bool = True) -> None:
        self._logger = logger
        self._failed = failed
        self._recovered = recovered
        self._traceback = traceback  # False: the start is one warning line (the message says all there is)
        self.failing = False

    def failed(self, *args: object) -> None:
        """Call from the `except` block of a failed try: logged (with the traceback) when it starts a streak."""
        if not self.failing:
            if self._traceback:
                self._logger.exception(self._failed, *args)
            else:
                self._logger.warning(self._failed, *args)
        self.failing = True

    def succeeded(self) -> None:
        """A try went through: the end of a streak is logged when a recovery message was given."""
        if self.failing and self._recovered is not None:
            self._logger.warning("%s", self._recovered)
        self.failing = False


class OnceLog:
    """The values already logged, so each is logged once: at most `limit` of them, after which no new one is.

    Stopping (rather than forgetting the oldest) keeps both memory and the log bounded when the bad values never
    repeat; by then the log holds `limit` examples of the problem.
    """

    __slots__ = ("_seen", "full", "limit")

    def __init__(self, limit: int = ONCE_LIMIT) -> None:
        self._seen: set[Hashable] = set()
        self.limit = limit
        self.full = False

    def first(self, value: Hashable) -> bool:
        """Whether to log `value` now: true the first time it is seen, while fewer than `limit` are held.

        The first value refused for the limit is logged here, once, so a reader knows later ones go unlogged."""
        if value in self._seen:
            return False
        if len(self._seen) >= self.limit:
            if not self.full:
                self.full = True
                _logger.warning("%d distinct values were logged once each; further new ones are not logged (first "
                                "unlogged: %.200r)", self.limit, value)
            return False
        self._seen.add(value)
        return True
