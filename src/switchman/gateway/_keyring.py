"""The gateway's view of its virtual keys: a KeySet kept in memory and refreshed off the request path.

    keyring = Keyring(KeyStore(url))
    await keyring.refresh()                   # at startup; then `await keyring.run()` in the background
    info = await keyring.verify(secret)       # KeyInfo or None

Known keys are checked against the set in memory: no query per request. The whole set is re-read
every `refresh_s` seconds, so revocations, budget and agent changes made by another process apply
within that interval. A key the set does not know may be newer than the set: it is looked up by its
indexed prefix, once for all the requests presenting it at the same time (single flight), a miss is
remembered for `negative_ttl_s`, and at most `lookups_per_s` such lookups run per second in total,
so a flood of invalid keys costs a bounded trickle of queries instead of one query each.

Every read runs in one dedicated thread with a deadline: while the database hangs or is down the
last good set keeps serving (revocations then apply when it is back), a request waits at most
`wait_s` for a lookup, and no thread piles up behind a stuck one.

Authentication, once seen on (`KeySet.auth_enabled`), stays on for the life of the process; the
database remembers it across restarts. Until the first read succeeds it is assumed on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from .._streaks import FailureStreak
from ..ledger import KeyInfo, KeySet, KeyStore, lookup_of
from ._limiter import AddressLimiter

__all__ = ["Keyring"]

logger = logging.getLogger("switchman.gateway")

T = TypeVar("T")
_MAX_NEGATIVE = 10_000


class Keyring:
    """Virtual keys for one gateway process: verified in memory, refreshed in the background."""

    def __init__(
        self, store: KeyStore, *, refresh_s: float = 5.0, negative_ttl_s: float = 5.0, lookups_per_s: float = 10.0,
        wait_s: float = 1.0, read_timeout_s: float = 10.0, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.negative_ttl_s = negative_ttl_s
        self.wait_s = wait_s
        self.read_timeout_s = read_timeout_s
        self.clock = clock
        self.keys: KeySet | None = None
        self._auth_seen = False
        self._refreshing: asyncio.Future[bool] | None = None
        self._lookups: dict[str, asyncio.Future[None]] = {}
        self._negative: OrderedDict[str, float] = OrderedDict()
        self._budget = AddressLimiter(burst=max(int(lookups_per_s), 1), per_s=lookups_per_s, clock=clock)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="switchman-keys")
        self._running: concurrent.futures.Future[Any] | None = None
        self._listeners: list[Callable[[KeySet], None]] = []
        self._failing = False
        #: Database reads made so far (full sets and single-key lookups).
        self.reads = 0

    def on_change(self, listener: Callable[[KeySet], None]) -> None:
        """Call `listener(keys)` after every successful full read (e.g. to update key budgets)."""
        self._listeners.append(listener)

    @property
    def auth_enabled(self) -> bool:
        """Whether authentication is on: seen on once, or not known yet (fail closed)."""
        return self._auth_seen or self.keys is None or self.keys.auth_enabled

    # -- verifying -------------------------------------------------------------------------------
    async def verify(self, secret: str) -> KeyInfo | None:
        """The active key for a secret, or None; an unknown key may wait (briefly) for one shared lookup."""
        keys = self.keys
        info = keys.verify(secret) if keys is not None else None
        if info is not None and info.id in self.store.revoked_here:
            return None  # revoked in this process (the dashboard): refused at once, not at the next refresh
        lookup = lookup_of(secret)
        if info is not None or lookup is None or keys is None:
            return info
        now = self.clock()
        if self._negative.get(lookup, 0.0) > now:
            return None
        pending = self._lookups.get(lookup)
        if pending is None:
            if not self._budget.allowed("*"):
                return None  # over the lookup budget: the periodic refresh will find a new key
            self._budget.spend("*")
            pending = self._lookups[lookup] = asyncio.ensure_future(self._lookup(lookup))
            pending.add_done_callback(lambda _: self._lookups.pop(lookup, None))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.wait_s):  # not wait_for: on 3.11 it can swallow a cancellation
                await asyncio.shield(pending)
        keys = self.keys
        info = keys.verify(secret) if keys is not None else None
        return None if info is None or info.id in self.store.revoked_here else info

    async def _lookup(self, lookup: str) -> None:
        rows = await self._in_thread(self.store.rows_for, lookup)
        if rows is None:
            return
        if self.keys is not None:
            self.keys = self.keys.with_lookup(lookup, rows)
        if not any(row["revoked"] is None for row in rows):
            self._negative[lookup] = self.clock() + self.negative_ttl_s
            self._negative.move_to_end(lookup)
            while len(self._negative) > _MAX_NEGATIVE:
                self._negative.popitem(last=False)

    def drop(self, key_id: str) -> None:
        """Refuse a key from now on: another replica revoked it (the next refresh reads the revocation)."""
        self.store.revoked_here.add(key_id)

    # -- reading ---------------------------------------------------------------------------------
    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T | None:
        """`function(*args)` in the keys thread within the read deadline; None when the database failed."""
        if self._running is not None and not self._running.done():
            self._failed("a previous read has not returned")  # the database hangs: don't queue behind it
            return None
        self.reads += 1
        self._running = running = self._executor.submit(function, *args)
        try:
            async with asyncio.timeout(self.read_timeout_s):
                result: T = await asyncio.wrap_future(running)
        except TimeoutError:
            self._failed(f"no answer within {self.read_timeout_s:g} s")
            return None
        except (SQLAlchemyError, OSError) as exc:
            self._failed(type(exc).__name__)
            return None
        if self._failing:
            logger.warning("virtual keys are readable again")
            self._failing = False
        return result

    def refresh(self) -> asyncio.Future[bool]:
        """Read the whole key set now, or join the read in flight; resolves to False when the database failed."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh())
        return self._refreshing

    async def _refresh(self) -> bool:
        keys = await self._in_thread(self.store.snapshot)
        if keys is None:
            return False
        self.keys = keys
        self._auth_seen = self._auth_seen or keys.auth_enabled
        self._negative.clear()
        for listener in self._listeners:
            listener(keys)
        return True

    def _failed(self, why: str) -> None:
        if not self._failing:
            state = "the last good key set" if self.keys is not None else "no key set (authentication assumed on)"
            logger.warning("cannot read virtual keys (%s); serving from %s", why, state)
            self._failing = True

    async def run(self) -> None:
        """Refresh every `refresh_s` seconds, for ever (cancel the task to stop)."""
        streak = FailureStreak(logger, "virtual keys: the refresh failed; trying again every %g s",
                               "virtual keys: the refresh works again")
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 (logged by the streak) a listener's bug must not end the refreshes
                streak.failed(self.refresh_s)
            else:
                streak.succeeded()

    def close(self) -> None:
        """Stop the reading thread (a read stuck on a hung database is abandoned) and release connections."""
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.store.close()
