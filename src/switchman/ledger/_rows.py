"""How ledger records become rows, and the cheapest way to insert a batch of them per backend.

The writer shares the GIL with the gateway's event loop, so its CPU per row matters more than its
wall time. SQLAlchemy's Core insert spends ~15 µs of CPU per row on bind processing; handing the
driver ready-made tuples costs ~5 µs on SQLite (one `executemany`) and ~3 µs on Postgres (one
`COPY ... FROM STDIN`, which is also three times faster on the wall clock than INSERT). Values are
coerced to plain str/int/float and the row's missing values to `null` here, so the driver never meets
a type it cannot adapt and a bad row shows up either as a ValueError/TypeError here or as the
database's DataError. Flags are 1/0 (SQLite stores a bool as that integer; Postgres's COPY reads 1/0
as true/false).

On SQLite a missing value is NaN (`SQLITE_NULL`), not None: SQLite has no NaN and stores a bound NaN
as NULL, so the row is the same, but Python's sqlite3 binds an exact float directly where it sends
None (and bool) through its adapter lookup, which ends in a failed attribute lookup that formats and
discards an AttributeError: ~1 µs per value, and a gateway's row has about twenty missing values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from json.encoder import encode_basestring as _quote
from typing import Any

import orjson
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

from ._db import REQUESTS
from ._record import CandidateEstimate, LedgerRecord

__all__ = ["FIELDS", "SQLITE_NULL", "BulkInsert", "as_logged", "decode", "encode", "executemany"]

FIELDS: tuple[str, ...] = tuple(LedgerRecord.__dataclass_fields__)
_TUPLE_FIELDS = ("candidates", "fallback_chain", "tags")
#: A missing value as bound on SQLite: stored as NULL (see the module's docstring). Its own NaN object, not
#: `math.nan`, so a caller's real NaN (which SQLite refuses where a value is required) is never taken for it.
SQLITE_NULL = float("nan")
_FLAGS = (FIELDS.index("tokens_estimated"), FIELDS.index("escalated"))


def as_logged(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row's values as a log line shows them: missing ones None, flags True/False (as `LedgerRecord` holds
    them), so the value that made the database refuse a row is not lost among twenty bound NaNs."""
    values = [None if value is SQLITE_NULL else value for value in row]
    for index in _FLAGS:
        values[index] = bool(values[index])
    return tuple(values)


#: The JSON of tuples of strings seen lately (a route's candidates, a fallback chain, tags repeat row after row).
_JSON_LISTS: dict[tuple[str, ...], str] = {}
_JSON_LISTS_MAX = 4096


def _json_list(value: Any) -> str:
    """A tuple of strings as a JSON array (json.dumps costs 4x more for these short lists).

    Remembered per tuple: a lookup costs a tenth of building the text. Only tuples of strings are kept (a
    tuple of strings never equals one of numbers, so a lookup never answers for the other).
    """
    if not value:
        return "[]"
    try:
        return _JSON_LISTS[value]
    except (KeyError, TypeError):  # not seen lately; or not hashable (a list)
        pass
    try:
        text = "[" + ",".join([_quote(item) for item in value]) + "]"
    except TypeError:
        return "[" + ",".join([_quote(str(item)) for item in value]) + "]"
    if type(value) is tuple:
        if len(_JSON_LISTS) >= _JSON_LISTS_MAX:
            _JSON_LISTS.clear()
        _JSON_LISTS[value] = text
    return text


def _json_pairs(value: tuple[tuple[Any, ...], ...], null: float | None) -> str | float | None:
    """Decision evidence (short tuples of str/float/None) as a JSON array of arrays; `null` when empty."""
    if not value:
        return null
    return orjson.dumps(value).decode()


def _scores(value: Any) -> tuple[CandidateEstimate, ...]:
    if not value:
        return ()
    return tuple(
        (str(m), None if q is None else float(q), None if c is None else float(c)) for m, q, c in value
    )


def encode(rec: LedgerRecord, null: float | None = None) -> tuple[Any, ...]:
    """One record as a tuple of plain values in `FIELDS` order, missing ones as `null` (None, or SQLite's
    `SQLITE_NULL`); ValueError/TypeError if it cannot be."""
    agent, session, key_id, route, model = rec.agent, rec.session, rec.key_id, rec.route, rec.model
    reason, strategy, error = rec.reason, rec.strategy, rec.error
    baseline, ttft = rec.baseline_cost_usd, rec.ttft_ms
    return (
        float(rec.time),
        str(rec.request_id),
        null if agent is None else str(agent),
        null if session is None else str(session),
        null if key_id is None else str(key_id),
        null if route is None else str(route),
        null if model is None else str(model),
        null if reason is None else str(reason),
        null if strategy is None else str(strategy),
        _json_list(rec.candidates),
        int(rec.input_tokens),
        int(rec.output_tokens),
        1 if rec.tokens_estimated else 0,
        float(rec.cost_usd),
        null if baseline is None else float(baseline),
        float(rec.latency_ms),
        null if ttft is None else float(ttft),
        str(rec.status),
        null if error is None else str(error),
        _json_list(rec.fallback_chain),
        _json_list(rec.tags),
        null if rec.prompt is None else str(rec.prompt),
        null if rec.shadow_model is None else str(rec.shadow_model),
        null if rec.shadow_quality is None else float(rec.shadow_quality),
        null if rec.shadow_cost_usd is None else float(rec.shadow_cost_usd),
        null if rec.cluster is None else int(rec.cluster),
        null if rec.api is None else str(rec.api),
        null if rec.deployment is None else str(rec.deployment),
        null if rec.cache is None else str(rec.cache),
        null if rec.task is None else str(rec.task),
        _json_pairs(rec.scores, null),
        _json_pairs(rec.excluded, null),
        1 if rec.escalated else 0,
    )


def decode(row: Any) -> LedgerRecord:
    """A selected row back into a record."""
    values = {name: getattr(row, name) for name in FIELDS}
    for name in _TUPLE_FIELDS:
        values[name] = tuple(values[name] or ())
    values["scores"] = _scores(values["scores"])
    values["excluded"] = tuple((str(m), str(why)) for m, why in values["excluded"] or ())
    values["escalated"] = bool(values["escalated"])
    return LedgerRecord(**values)


def executemany(conn: Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """`sql` for each of `rows` on the connection's own DBAPI cursor, in its transaction (SQLite: the driver
    begins one before the first write, as it does for SQLAlchemy's own cursors). What fails raises the driver's
    error, not SQLAlchemy's wrapper of it."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(sql, rows)
    finally:
        cursor.close()


#: What the driver raises for a value it cannot bind, before the database sees it: the row is bad, not the database
#: away (`Ledger.record` never raises, so an SDK caller's lone surrogate or huge int gets this far).
_UNBINDABLE: tuple[type[Exception], ...] = (UnicodeEncodeError, OverflowError)


class BulkInsert:
    """Inserts encoded rows in one transaction: `executemany` on SQLite, `COPY` on Postgres."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dbapi = engine.dialect.loaded_dbapi
        columns = ", ".join(FIELDS)
        self._copy = engine.dialect.name == "postgresql"
        #: What `encode` should give for a missing value on this backend.
        self.null: float | None = None if self._copy else SQLITE_NULL
        if self._copy:
            self._sql = f"COPY {REQUESTS.name} ({columns}) FROM STDIN"
        else:
            placeholder = "?" if engine.dialect.paramstyle == "qmark" else "%s"
            self._sql = f"INSERT INTO {REQUESTS.name} ({columns}) VALUES ({', '.join([placeholder] * len(FIELDS))})"

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """What a failed insert can raise: SQLAlchemy's errors, the driver's own (COPY), OSError, and a value the
        driver cannot bind (a lone surrogate: UnicodeEncodeError; an int past 64 bits: OverflowError)."""
        return (SQLAlchemyError, self._dbapi.Error, OSError, *_UNBINDABLE)

    def __call__(self, rows: Sequence[tuple[Any, ...]], then: Callable[[Connection], None] | None = None, *,
                 wrapped: bool = False) -> None:
        """Insert `rows`, then run `then` in the same transaction (the rollups of those rows).

        On SQLite the rows go straight to the driver's cursor (SQLAlchemy's statement execution costs ~55k
        instructions a call, ~1.4k a gateway row); `wrapped` sends them through SQLAlchemy instead, whose error
        carries the row's values (the one-by-one retry logs them when the insert refused the row; a refusal by the
        rollups, which still go to the cursor, names the constraint only)."""
        with self._engine.begin() as conn:
            if self._copy:
                raw: Any = conn.connection.dbapi_connection  # a psycopg Connection
                with raw.cursor() as cursor, cursor.copy(self._sql) as copy:
                    for row in rows:
                        copy.write_row(row)
            elif wrapped:
                conn.exec_driver_sql(self._sql, list(rows))
            else:
                executemany(conn, self._sql, rows)
            if then is not None:
                then(conn)

    def is_bad_row(self, exc: BaseException) -> bool:
        """The database (or driver) refused a row's values, as opposed to being unavailable."""
        if isinstance(exc, _UNBINDABLE):
            return True
        if isinstance(exc, DataError | IntegrityError | self._dbapi.DataError | self._dbapi.IntegrityError):
            return True
        return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)
