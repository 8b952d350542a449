"""The ledger's rows across a shutdown the database did not survive: spilled at close, replayed at the next start.

`Ledger.close` hands the rows its writer did not commit to `Replayer.spill` (one fsynced JSONL file in
`spill_dir`, `_spill`); the next ledger's writer thread calls `Replayer.step` between its live batches until
`due` turns False, each step inserting one chunk of a claimed file that the database does not hold yet, through
the ledger's own write path (its batching, refusals and backoff). Kept apart from `Ledger` so the ledger is the
queue and its writer, and this is what a restart owes it.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ._db import REQUESTS, display_url
from ._record import LedgerRecord
from ._rollup import Fact, fact
from ._rows import encode
from ._spill import Claim, SpillDir, Written, spilled

if TYPE_CHECKING:
    from ._ledger import Ledger

__all__ = ["Replayer"]

logger = logging.getLogger("switchman.ledger")

#: The most spilled rows a replay looks up and inserts at once (SQLite's bound parameters are limited).
_REPLAY_CHUNK = 500


def _release_after(writer: threading.Thread, written: Written) -> None:
    writer.join()
    written.release()


class Replayer:
    """One ledger's spill directory (None: none, rows left at close are logged as lost) and the replay of it.

    `spilled`/`replayed` count rows spilled at close and spilled rows written at start (for `Ledger.stats`);
    `due` says the writer should go on calling `step`.
    """

    def __init__(self, ledger: Ledger, spill: SpillDir | None) -> None:
        self.spill = spill
        self.due = spill is not None  # spilled files may wait: the writer looks once it runs
        self.spilled = 0
        self.replayed = 0  # spilled rows written at start (counted in the ledger's `written` too)
        self._ledger = ledger
        self._replaying: Claim | None = None

    # -- at close --------------------------------------------------------------------------------

    def spill_left(self, pending: list[tuple[tuple[Any, ...], Fact]], queued: list[LedgerRecord],
                   writer: threading.Thread | None) -> None:
        """The rows the writer did not commit, to a spill file (or logged as lost).

        `pending` (the writer's batch in flight) is spilled too: a write that still commits after this makes the
        replay find those rows present; the file stays locked while that abandoned `writer` runs, so no ledger
        replays it before (which would write those rows twice).
        """
        if not pending and not queued:
            return
        ledger = self._ledger
        where, left = display_url(ledger.url), len(pending) + len(queued)
        if self.spill is None:
            logger.error("ledger %s unreachable at shutdown: %d rows not written", where, left)
            return
        try:
            written = self.spill.write(self._spill_rows(pending, queued))
        except OSError as exc:
            logger.error("ledger %s unreachable at shutdown and its spill directory %s unusable (%s): %d rows not "
                         "written", where, self.spill.path, exc.strerror or exc, left)
            return
        self.spilled += written.rows
        ledger._discarded += written.refused
        if writer is None:
            written.release()
        else:  # released when the abandoned writer ends (its last batch committed or failed), or with the process
            threading.Thread(target=_release_after, args=(writer, written), name="switchman-ledger-spill-hold",
                             daemon=True).start()
        logger.warning("ledger %s unreachable at shutdown: %d rows spilled to %s (written at the next start)",
                       where, written.rows, written.path)

    def _spill_rows(self, pending: list[tuple[tuple[Any, ...], Fact]],
                    queued: list[LedgerRecord]) -> Iterator[dict[str, Any]]:
        """The rows left, one by one as they are written out; one that cannot be encoded is logged and left out."""
        discard = self._ledger._discard
        for row, _ in pending:
            try:
                yield spilled(row)
            except Exception as exc:  # noqa: BLE001 (logged) one odd row must not lose the others
                discard(row[1], exc)
        for rec in queued:
            try:
                yield spilled(encode(rec))
            except Exception as exc:  # noqa: BLE001 (logged) as above
                discard(getattr(rec, "request_id", "?"), exc)

    # -- at start (the writer thread) ------------------------------------------------------------

    def step(self) -> bool:
        """Insert the next chunk of spilled rows (claiming a file first, reading it a chunk at a time); False
        when the database failed (the chunk is kept for the retry).

        An unusable spill directory or unreadable file is logged and the replay given up: the writer lives on."""
        assert self.spill is not None
        claim = self._replaying
        try:
            if claim is None:
                claim = self.spill.claim()
                if claim is None:
                    self.due = False
                    return True
                self._replaying = claim
            if not claim.chunk:
                claim.chunk = claim.read(min(self._ledger._batch_size, _REPLAY_CHUNK))
        except OSError as exc:
            logger.error("ledger spill directory %s unusable (%s): spilled rows not replayed", self.spill.path,
                         exc.strerror or exc)
            return self._stop()
        except Exception:  # noqa: BLE001 (logged) a file no one foresaw must not end the writer of live rows
            logger.exception("ledger spill directory %s: spilled rows not replayed", self.spill.path)
            return self._stop()
        if claim.chunk:
            return self._insert_new(claim)
        self._replaying = None
        try:
            claim.finish()
        except OSError as exc:
            logger.error("ledger spill file %s replayed but not deleted (%s): the next start skips its rows again",
                         claim.claimed, exc.strerror or exc)
        logger.warning("ledger replayed %s (rows spilled at an earlier shutdown): %d written, %d in the ledger "
                       "already, %d refused by the database, %d unreadable lines skipped", claim.name,
                       claim.inserted, claim.present, claim.discarded, claim.skipped)
        return True

    def give_back(self) -> None:
        """The writer stops mid-replay: the claimed file goes back to be replayed at the next start."""
        claim, self._replaying = self._replaying, None
        if claim is None:
            return
        try:
            claim.release()
        except OSError as exc:
            logger.error("ledger spill file %s not given back (%s): a later start takes it once this process ends",
                         claim.claimed, exc.strerror or exc)

    def _stop(self) -> bool:
        self.due = False
        self.give_back()
        return True

    def _insert_new(self, claim: Claim) -> bool:
        """Insert the rows of `claim.chunk` the database does not hold yet; False when it failed. What is settled
        either way (found present, refused, written before a one-by-one write failed half-way) leaves the chunk and
        is counted once; the rest is looked up again at the retry, so a row committed meanwhile is not inserted twice.

        A row is skipped only while the database holds more rows of its (request id, time) than this file's
        rows of that key met so far (`claim.seen`): twins are each written once, across chunks too."""
        ledger, chunk = self._ledger, claim.chunk
        insert = ledger._insert
        try:
            ledger._ensure_schema()
            try:
                present = self._present(chunk)
            except insert.errors as exc:
                if not insert.is_bad_row(exc):
                    raise
                present = self._present_alone(chunk, claim)
        except insert.errors as exc:
            return ledger._failed(exc)
        seen = claim.seen
        batch: list[tuple[tuple[Any, ...], Fact]] = []
        batched: list[LedgerRecord] = []  # the records of `batch`, in its order
        for rec in chunk:
            key = (rec.request_id, rec.time)
            if present[key] > seen[key]:
                seen[key] += 1
                claim.present += 1
                continue
            try:
                batch.append((encode(rec, insert.null), fact(rec)))
            except (AttributeError, TypeError, ValueError, OverflowError) as exc:
                seen[key] += 1
                claim.discarded += 1
                ledger._discard(rec.request_id, exc)
                continue
            batched.append(rec)
        written, discarded = ledger._written, ledger._discarded
        ok = not batch or ledger._write_batch(batch)
        settled = len(batched) - len(batch)  # a failed one-by-one write drops the rows it settled from `batch`
        if ok:
            settled = len(batched)
        for rec in batched[:settled]:
            seen[rec.request_id, rec.time] += 1
        claim.chunk = batched[settled:]
        claim.inserted += ledger._written - written
        claim.discarded += ledger._discarded - discarded
        self.replayed += ledger._written - written
        return ok

    def _present_alone(self, chunk: list[LedgerRecord], claim: Claim) -> Counter[tuple[str, float]]:
        """`_present` key by key, for a chunk whose look-up the driver or database refused a value of (a lone
        surrogate in a request id): a row whose own look-up is refused cannot be inserted either, so it is
        discarded and taken out of the chunk (a retry neither counts it again nor mistakes it for an outage)."""
        insert, present = self._ledger._insert, Counter[tuple[str, float]]()
        refused: dict[tuple[str, float], BaseException] = {}
        for key, rec in {(rec.request_id, rec.time): rec for rec in chunk}.items():
            try:
                present.update(self._present([rec]))
            except insert.errors as exc:
                if not insert.is_bad_row(exc):
                    raise
                refused[key] = exc
        for rec in chunk:
            if (rec.request_id, rec.time) in refused:
                claim.discarded += 1
                self._ledger._discard(rec.request_id, refused[rec.request_id, rec.time])
        chunk[:] = [rec for rec in chunk if (rec.request_id, rec.time) not in refused]
        return present

    def _present(self, chunk: list[LedgerRecord]) -> Counter[tuple[str, float]]:
        """How many rows of each (request id, time) of `chunk` the database holds (looked up by request id and
        the chunk's time span: a client's ids repeat)."""
        ids = sorted({rec.request_id for rec in chunk})
        times = [rec.time for rec in chunk if -math.inf < rec.time < math.inf]  # a NaN would make the span NULL
        if not times:  # (a row of no finite time is in no database: `fact` refuses it)
            return Counter()
        query = select(REQUESTS.c.request_id, REQUESTS.c.time).where(
            REQUESTS.c.request_id.in_(ids), REQUESTS.c.time.between(min(times), max(times)))
        with self._ledger._engine.connect() as conn:
            return Counter((str(rid), float(moment)) for rid, moment in conn.execute(query))
