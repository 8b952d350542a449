"""The spend ledger: one row per request, written off the request path in batches.

`Ledger.record(rec)` appends to an in-memory queue and returns; it never blocks and never raises.
After `start()`, a daemon writer thread wakes every `flush_interval` seconds (or as soon as
`batch_size` rows are waiting) and inserts what is queued, one transaction per batch; the same
transaction adds the batch to the rollups reports read (`_rollup`, read through `ledger.views`). A thread
rather than an asyncio task, so the same ledger serves the gateway's event loop, the synchronous
SDK and plain scripts. Nothing is written before `start()` (or `flush()`/`close()`).

When the database is down, locked or missing its table, the batch stays in memory and is retried
with backoff (the table is recreated if it went away); the queue holds up to `max_queued` rows, and
rows beyond that are counted in `stats.dropped` and logged. `close()` writes everything queued
before it returns, or gives up after `close_timeout` seconds (10): the rows still in memory then go to a
file in `spill_dir` (`_spill`: one JSON line per row, fsynced), and the next ledger started with that
`spill_dir` writes them from its writer thread (a row already in the database is not inserted twice) and
deletes the file. Without a `spill_dir`, or when the directory cannot be used, they are logged as lost.

Durability: a row is in memory for at most `flush_interval` plus one write before it is committed,
so a process killed with SIGKILL loses the rows of the requests answered in that window (SIGTERM
loses none: shutdown flushes, or spills what the database would not take); killed while the
database is away, it loses every row still in memory. Who needs no window at all waits for the
row: `record` returns a ticket and `await committed(ticket)` returns once that row is committed (the
writer is woken at once, and every row waiting then goes in the same transaction).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import StatementError

from ._db import FEEDBACK, REQUESTS, create_ledger_engine, create_tables, display_url, resolve_url
from ._record import LedgerRecord, LedgerStats, SpendBy, SpendRow
from ._rollup import Fact, RollupBatch, ensure_rollup, fact
from ._replayer import Replayer
from ._rows import BulkInsert, as_logged, decode, encode
from ._spill import SpillDir, resolve_spill_dir
from ._views import LedgerViews

__all__ = ["CONFIGURED", "Ledger"]

logger = logging.getLogger("switchman.ledger")

_GROUP_COLUMNS = {
    "agent": REQUESTS.c.agent,
    "model": REQUESTS.c.model,
    "key": REQUESTS.c.key_id,
    "route": REQUESTS.c.route,
}


class _Configured(enum.Enum):
    CONFIGURED = "configured"


#: `close(timeout=CONFIGURED)`: the ledger's own `close_timeout`.
CONFIGURED = _Configured.CONFIGURED


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _epoch(moment: datetime | float) -> float:
    if isinstance(moment, datetime):
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    return float(moment)


class Ledger:
    """Request records in SQLite or Postgres, written in batches by a background thread.

    ledger = Ledger.from_url("sqlite:///ledger.sqlite3")
    ledger.start_sync()            # or: await ledger.start()
    ledger.record(LedgerRecord(model="gpt-4o-mini", cost_usd=0.0004))
    ledger.close_sync()            # or: await ledger.close(); writes everything queued

    `close_timeout`: how long a close waits for an unreachable database; `spill_dir`: where the rows it could
    not write then go (and are replayed from at start); None: nowhere (logged as lost).
    """

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.05,
        max_queued: int = 100_000,
        max_retry_interval: float = 2.0,
        close_timeout: float = 10.0,
        spill_dir: str | Path | None = None,
    ) -> None:
        if not (isinstance(close_timeout, int | float) and math.isfinite(close_timeout) and close_timeout >= 0):
            raise ValueError(
                f"the ledger's close timeout must be a finite number of seconds >= 0, not {close_timeout!r}")
        self.url = url
        self._close_timeout = float(close_timeout)
        self._engine: Engine = create_ledger_engine(url)
        self._insert = BulkInsert(self._engine)
        #: The folder is named now; nothing in it is touched until a close spills or the writer replays.
        folder = resolve_spill_dir(spill_dir) if spill_dir else None  # None: no home to expand ~ in (warned)
        self._replayer = Replayer(self, None if folder is None else SpillDir(folder, url))
        self._take = threading.Lock()  # the writer takes rows off the queue, or close takes what is left: not both
        self._left_taken = False
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_queued = max_queued
        self._max_retry_interval = max_retry_interval
        self._queue: deque[LedgerRecord] = deque()
        self._pending: list[tuple[tuple[Any, ...], Fact]] = []  # the batch being written, encoded
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._busy = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._abandon = False
        self._closed = False
        self._schema_ready = False
        self._written = 0
        self._appended = 0  # tickets given out (rows queued, in order)
        self._taken = 0  # rows the writer took off the queue
        self._settled = 0  # rows written (or refused as invalid): tickets up to this are done
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._dropped = 0
        self._dropping = False  # records are being dropped now (logged once per streak, until the queue drains)
        self._discarded = 0
        self._write_errors = 0
        self._outage_logged = False

    @classmethod
    def from_url(cls, url: str | None = None, **options: Any) -> Ledger:
        """A ledger at `url`; None means $SWITCHMAN_LEDGER_URL, else SQLite in the user data dir."""
        return cls(resolve_url(url), **options)

    def __repr__(self) -> str:
        return f"Ledger({display_url(self.url)!r})"

    # -- lifecycle -------------------------------------------------------------------------------

    def start_sync(self) -> None:
        """Start the writer thread (idempotent). The database need not be reachable yet."""
        with self._lock:
            if self._thread is not None or self._closing:
                return
            self._thread = threading.Thread(target=self._run, name="switchman-ledger-writer", daemon=True)
            self._thread.start()

    async def start(self) -> None:
        """Start the writer thread (idempotent)."""
        self.start_sync()

    def flush_sync(self, timeout: float | None = None) -> bool:
        """Wait until every record queued so far is written; False if `timeout` passed first."""
        self.start_sync()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._busy or self._queue or self._pending:
                if self._thread is None or not self._thread.is_alive():
                    return False
                self._wake.set()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(0.1 if remaining is None else min(remaining, 0.1))
        return True

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record queued so far is written; False if `timeout` passed first."""
        return await asyncio.to_thread(self.flush_sync, timeout)

    def close_sync(self, timeout: float | None | _Configured = CONFIGURED) -> None:
        """Write everything queued, stop the writer and release connections.

        If the database stays unreachable for `timeout` seconds (default: the ledger's `close_timeout`), the rows
        still in memory are spilled to `spill_dir` (or logged as lost) and the ledger closes anyway (None waits
        for as long as it takes).
        """
        if timeout is CONFIGURED:
            timeout = self._close_timeout
        with self._lock:
            self._closing = True
            thread = self._thread
        if thread is None and (self._queue or self._pending):
            thread = threading.Thread(target=self._run, name="switchman-ledger-writer", daemon=True)
            self._thread = thread
            thread.start()
        if thread is not None:
            self._wake.set()
            thread.join(timeout)
            if thread.is_alive():
                self._abandon = True
                self._wake.set()
                thread.join(1.0)
        with self._lock:
            self._closed = True
        try:
            if not self._abandon and (thread is None or not thread.is_alive()):
                self._drain()  # rows recorded as the writer stopped (before `_closed`): written, not spilled
            self._spill_left(thread if thread is not None and thread.is_alive() else None)
        except Exception:  # noqa: BLE001 (logged) a close never raises: what follows must still run
            logger.exception("ledger %s: the rows left at shutdown could not be spilled", display_url(self.url))
        finally:
            self._engine.dispose()

    async def close(self, timeout: float | None | _Configured = CONFIGURED) -> None:
        """Write everything queued, stop the writer and release connections."""
        await asyncio.to_thread(self.close_sync, timeout)

    def _spill_left(self, writer: threading.Thread | None) -> None:
        """The rows the writer did not commit, to a spill file (or logged as lost): `Replayer.spill_left`.

        Taken under `_take`: once `_abandon` is set the writer takes no more rows off the queue.
        """
        with self._take:
            if self._left_taken:  # a second close: spilled (or logged) by the first
                return
            self._left_taken = True
            pending = list(self._pending)  # one step: the writer may shrink it (outside _take) as we copy
            queued = list(self._queue)
        self._replayer.spill_left(pending, queued, writer)

    # -- the hot path ----------------------------------------------------------------------------

    def record(self, rec: LedgerRecord) -> int:
        """Queue one record for writing; never blocks, never raises. Returns its ticket (0: dropped)."""
        queue = self._queue
        if len(queue) >= self._max_queued:
            self._drop()
            return 0
        with self._lock:
            if self._closed:  # checked under the lock close sets it with: no row lands after close took the rest
                ticket = 0
            else:
                queue.append(rec)
                self._appended += 1
                ticket = self._appended
        if not ticket:
            self._drop()
            return 0
        if len(queue) >= self._batch_size:
            self._wake.set()
        return ticket

    async def committed(self, ticket: int, timeout: float | None = None) -> bool:
        """Wait until the row with this ticket is committed; False if `timeout` passed first (it stays queued)."""
        if ticket <= self._settled:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (ticket, asyncio.get_running_loop(), future)
        with self._lock:
            self._waiters.append(waiter)
        self.start_sync()
        self._wake.set()  # write now, together with whatever else is waiting
        if ticket <= self._settled:  # written while registering
            self._release()
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            return False
        return True

    def _release(self) -> None:
        """Wake the waiters whose rows are committed (called by the writer thread)."""
        settled = self._settled
        with self._lock:
            done = [w for w in self._waiters if w[0] <= settled]
            if not done:
                return
            self._waiters = [w for w in self._waiters if w[0] > settled]
        for _, loop, future in done:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:  # its loop is closed (a wait cancelled, then its asyncio.run ended): none to wake
                pass

    def _drop(self) -> None:
        with self._lock:
            self._dropped += 1
            first, self._dropping = not self._dropping, True
        if first and self._closed:
            logger.error("ledger closed: dropping records that arrive after close()")
        elif first:
            logger.error("ledger queue full (%d rows): dropping records until the database returns", self._max_queued)

    @property
    def stats(self) -> LedgerStats:
        """A snapshot of the writer's counters."""
        return LedgerStats(
            queued=len(self._queue) + len(self._pending),
            written=self._written,
            dropped=self._dropped,
            discarded=self._discarded,
            write_errors=self._write_errors,
            spilled=self._replayer.spilled,
            replayed=self._replayer.replayed,
        )

    # -- the writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        delay, replayer = self._flush_interval, self._replayer
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            ok = self._drain()
            if ok and replayer.due and not self._closing:
                ok = replayer.step()
                if ok and replayer.due:
                    self._wake.set()  # more spilled rows: go on at once (live rows first, each turn)
            if ok:
                delay = self._flush_interval
            else:
                delay = min(max(delay * 2, self._flush_interval), self._max_retry_interval)
            if self._abandon or (self._closing and ok and not self._queue):
                replayer.give_back()
                return

    def _drain(self) -> bool:
        """Write everything queued; False when the database failed (rows stay pending)."""
        with self._idle:
            self._busy = True
        try:
            while True:
                if not self._pending:
                    queue, pending, null = self._queue, self._pending, self._insert.null
                    with self._take:
                        if self._abandon:  # close spilled what is queued: writing it too would duplicate it
                            return False
                        while queue and len(pending) < self._batch_size:
                            rec = queue.popleft()
                            self._taken += 1
                            try:
                                pending.append((encode(rec, null), fact(rec)))
                            except (AttributeError, TypeError, ValueError, OverflowError) as exc:
                                self._discard(getattr(rec, "request_id", "?"), exc)
                if not self._pending:
                    self._settled = self._taken
                    self._release()
                    if self._dropping and not self._closed:
                        self._dropping = False
                        logger.warning("ledger queue drained: keeping records again (%d dropped so far)", self._dropped)
                    return True
                if self._abandon or not self._write_batch(self._pending):
                    return False
                self._pending.clear()
                self._settled = self._taken
                self._release()
        finally:
            with self._idle:
                self._busy = False
                self._idle.notify_all()

    def _write_batch(self, batch: list[tuple[tuple[Any, ...], Fact]]) -> bool:
        try:
            self._ensure_schema()
        except self._insert.errors as exc:
            return self._failed(exc)
        try:
            self._insert([row for row, _ in batch], RollupBatch(item for _, item in batch).write)
        except self._insert.errors as exc:
            return self._write_one_by_one(batch) if self._insert.is_bad_row(exc) else self._failed(exc)
        self._written += len(batch)
        self._recovered()
        return True

    def _write_one_by_one(self, batch: list[tuple[tuple[Any, ...], Fact]]) -> bool:
        """A batch the database refused as invalid: keep the good rows, log and discard the bad."""
        done = 0
        try:
            for row, item in batch:
                try:
                    self._insert([row], RollupBatch((item,)).write, wrapped=True)
                except self._insert.errors as exc:
                    if not self._insert.is_bad_row(exc):
                        return self._failed(exc)
                    if isinstance(exc, StatementError):  # its message shows the row: as the record holds it
                        exc.params = as_logged(row)
                    self._discard(row[1], exc)
                else:
                    self._written += 1
                done += 1
        finally:
            del batch[:done]  # never write a row twice when the retry comes
        self._recovered()
        return True

    def _discard(self, request_id: object, exc: BaseException) -> None:
        self._discarded += 1
        logger.error("ledger refused record %s: %s", request_id, exc)

    def _recovered(self) -> None:
        if self._outage_logged:
            logger.warning("ledger %s is back: writing queued rows", display_url(self.url))
            self._outage_logged = False

    def _failed(self, exc: BaseException) -> bool:
        self._write_errors += 1
        self._schema_ready = False
        if not self._outage_logged:
            logger.warning(
                "ledger %s unavailable (%s); %d rows kept in memory and retried",
                display_url(self.url),
                type(exc).__name__,
                len(self._queue) + len(self._pending),
            )
            self._outage_logged = True
        return False

    def _ensure_schema(self) -> None:
        if not self._schema_ready:
            create_tables(self._engine)
            ensure_rollup(self._engine)
            self._schema_ready = True

    # -- reading ---------------------------------------------------------------------------------

    @property
    def views(self) -> LedgerViews:
        """Totals, timelines, latency percentiles and the request log, for reports and the dashboard."""
        return LedgerViews(self._engine, self._ensure_schema)

    def count(self) -> int:
        """Rows written so far (queued records not included)."""
        self._ensure_schema()
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(REQUESTS)).scalar_one())

    def records(self, *, since: datetime | float | None = None, limit: int | None = None) -> list[LedgerRecord]:
        """Written records in time order, optionally from `since` on and at most `limit` of them."""
        self._ensure_schema()
        query = select(REQUESTS).order_by(REQUESTS.c.time, REQUESTS.c.id)
        if since is not None:
            query = query.where(REQUESTS.c.time >= _epoch(since))
        if limit is not None:
            query = query.limit(limit)
        with self._engine.connect() as conn:
            return [decode(row) for row in conn.execute(query)]

    def query_spend(
        self, by: SpendBy = "model", since: datetime | float = 0.0, until: datetime | float | None = None
    ) -> list[SpendRow]:
        """Spend per agent, model, key or route from `since` on, most expensive first.

        A record without a `baseline_cost_usd` counts at its own cost in the baseline.
        """
        if by not in _GROUP_COLUMNS:
            raise ValueError(f"cannot group spend by {by!r}: use one of {', '.join(_GROUP_COLUMNS)}")
        self._ensure_schema()
        group = _GROUP_COLUMNS[by]
        cost = func.coalesce(func.sum(REQUESTS.c.cost_usd), 0.0)
        query = (
            select(
                group,
                func.count(),
                func.coalesce(func.sum(REQUESTS.c.input_tokens), 0),
                func.coalesce(func.sum(REQUESTS.c.output_tokens), 0),
                cost,
                func.coalesce(func.sum(func.coalesce(REQUESTS.c.baseline_cost_usd, REQUESTS.c.cost_usd)), 0.0),
            )
            .where(REQUESTS.c.time >= _epoch(since))
            .group_by(group)
            .order_by(cost.desc(), group)
        )
        if until is not None:
            query = query.where(REQUESTS.c.time < _epoch(until))
        with self._engine.connect() as conn:
            return [
                SpendRow(name, int(n), int(tin), int(tout), float(usd), float(base))
                for name, n, tin, tout, usd, base in conn.execute(query)
            ]

    def find(self, request_id: str, *, key_id: str | None = None) -> LedgerRecord | None:
        """The written record of one request (of one key's requests, given `key_id`), None when there is none (yet)."""
        if "\x00" in request_id or (key_id is not None and "\x00" in key_id):
            return None  # no id holds a NUL, and PostgreSQL refuses to compare one (a DataError)
        self._ensure_schema()
        query = select(REQUESTS).where(REQUESTS.c.request_id == request_id)
        if key_id is not None:
            query = query.where(REQUESTS.c.key_id == key_id)
        query = query.order_by(REQUESTS.c.id.desc()).limit(1)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else decode(row)

    def feedback_scores(self, *, since: datetime | float | None = None) -> dict[str, float]:
        """The latest score per request that has feedback (a later score revises an earlier one)."""
        self._ensure_schema()
        query = select(FEEDBACK.c.request_id, FEEDBACK.c.score).order_by(FEEDBACK.c.id)
        if since is not None:
            query = query.where(FEEDBACK.c.time >= _epoch(since))
        with self._engine.connect() as conn:
            return {str(rid): float(score) for rid, score in conn.execute(query)}

    def add_feedback(self, request_id: str, score: float, comment: str | None = None, *,
                     scored: LedgerRecord | None = None) -> None:
        """Store a quality score (and optional comment) for an earlier request.

        `scored`: the request it scores (as `find` gave it, for one key); without it, the latest with that id.
        Its route, model, agent and key are copied to the feedback row.
        """
        self._ensure_schema()
        with self._engine.begin() as conn:
            if scored is not None:
                route, model, agent, key_id = scored.route, scored.model, scored.agent, scored.key_id
            else:
                names = select(REQUESTS.c.route, REQUESTS.c.model, REQUESTS.c.agent, REQUESTS.c.key_id).where(
                    REQUESTS.c.request_id == request_id).order_by(REQUESTS.c.id.desc()).limit(1)
                found = conn.execute(names).first()
                route, model, agent, key_id = found if found is not None else (None, None, None, None)
            conn.execute(FEEDBACK.insert(), [{"time": time.time(), "request_id": request_id, "score": score,
                                              "comment": comment, "route": route, "model": model, "agent": agent,
                                              "key_id": key_id}])

    def feedback_by_key(self, *, since: datetime | float | None = None) -> dict[tuple[str, str | None], float]:
        """The latest score per scored request, keyed by (request id, key id; None: no key), in one query.

        Two keys may have chosen the same request id (X-Request-Id): each key's score belongs to its own request,
        and one key scoring its request does not revise the other's score.
        """
        self._ensure_schema()
        query = select(FEEDBACK.c.request_id, FEEDBACK.c.key_id, FEEDBACK.c.score).order_by(FEEDBACK.c.id)
        if since is not None:
            query = query.where(FEEDBACK.c.time >= _epoch(since))
        with self._engine.connect() as conn:
            return {(str(rid), key): float(score) for rid, key, score in conn.execute(query)}

    def feedback(self, request_id: str) -> list[tuple[float, str | None]]:
        """The (score, comment) pairs stored for a request, oldest first."""
        self._ensure_schema()
        query = (
            select(FEEDBACK.c.score, FEEDBACK.c.comment)
            .where(FEEDBACK.c.request_id == request_id)
            .order_by(FEEDBACK.c.id)
        )
        with self._engine.connect() as conn:
            return [(float(score), comment) for score, comment in conn.execute(query)]
