"""Rollups the ledger writer keeps next to the request rows, so reports never scan the rows.

Three tables, updated in the same transaction as the rows they summarise (a report never sees a
row without its rollup, or the reverse):

    switchman_rollup     sums per time bucket and slice: the whole traffic, per route, agent, model,
                         key, and per agent and model; requests, errors, refusals, tokens, cost,
                         baseline cost, latency and TTFT sums, fallbacks, escalations, the live and
                         shadow routers' predictions. Kept per hour and per UTC day, so a 30-day
                         window reads ~30 daily rows and two edges of hourly ones per slice value.
    switchman_latency    a log histogram of answered requests' latency per bucket and model (and
                         for all models): buckets 2^(1/4) apart, so a percentile read from it is
                         within ±9%, over any window, without sorting rows
    switchman_sessions   one row per session: agent, first and last request, requests, escalations

A batch is summed in memory per (hour, route, agent, model, key, status) first, the slices derived
from those groups, and then upserted (``INSERT ... ON CONFLICT DO UPDATE`` adding to what is
there) in key order, so concurrent writers on Postgres never deadlock. Absent names are stored
as '' (a NULL would never conflict). A ledger made before these tables existed gets them filled
from its rows once, in the transaction that creates them (`ensure_rollup`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

from sqlalchemy import BigInteger, Column, Connection, Dialect, Engine, Float, Index, Integer, MetaData, Table, Text, inspect
from sqlalchemy.schema import CreateIndex, CreateTable

from ._db import REQUESTS, migrate, up_to_date
from ._record import LedgerRecord
from ._rows import decode, executemany

__all__ = [
    "ALL_MODELS",
    "COUNT_MEASURES",
    "DAY",
    "HOUR",
    "LATENCY",
    "LATENCY_STEP",
    "MEASURES",
    "ROLLUP",
    "SESSIONS",
    "SLICES",
    "Fact",
    "RollupBatch",
    "bucket_bounds",
    "bucket_of",
    "day_of",
    "ensure_rollup",
    "fact",
    "hour_of",
]

logger = logging.getLogger("switchman.ledger")

ROLLUP_METADATA = MetaData()
#: The slices the rollup keeps, and the record fields each is keyed by.
SLICES: dict[str, tuple[str, ...]] = {
    "all": (), "route": ("route",), "agent": ("agent",), "model": ("model",), "key": ("key_id",),
    "agent_model": ("agent", "model"),
}
#: Each slice's two names as positions in a group's ("", route, agent, model, key_id).
_NAME_AT = {"route": 1, "agent": 2, "model": 3, "key_id": 4}
_SLICE_PICKS: tuple[tuple[str, int, int], ...] = tuple(
    (name, _NAME_AT[fields[0]] if fields else 0, _NAME_AT[fields[1]] if len(fields) > 1 else 0)
    for name, fields in SLICES.items()
)
#: Time grains: an hour and a UTC day, in seconds.
HOUR, DAY = 3600, 86_400
#: What the rollup sums per bucket and slice value.
MEASURES = (
    "requests", "errors", "refused", "input_tokens", "output_tokens", "cost_usd", "baseline_cost_usd",
    "latency_ms_sum", "ttft_ms_sum", "ttft_n", "fallbacks", "escalations", "quality_n", "quality_sum", "shadow_n",
    "shadow_cost_usd", "shadow_quality_n", "shadow_quality_sum", "shadowed_cost_usd", "shadowed_quality_n",
    "shadowed_quality_sum",
)
COUNT_MEASURES = frozenset({"requests", "errors", "refused", "input_tokens", "output_tokens", "ttft_n", "fallbacks",
                            "escalations", "quality_n", "shadow_n", "shadow_quality_n", "shadowed_quality_n"})
#: Ratio between neighbouring latency buckets is 2 ** (1 / LATENCY_STEP).
LATENCY_STEP = 4
_MAX_BUCKET = 120  # 2 ** 30 ms: anything slower shares the last bucket
_SLOWEST = 2.0 ** (_MAX_BUCKET / LATENCY_STEP)
_TIME_LIMIT = 2.0 ** 62  # seconds: the hour of any time inside is a BIGINT
_COUNT_LIMIT = 2 ** 53  # tokens per record: summed exactly as floats, a batch of them still a BIGINT
_ERRORS = frozenset({"error", "stream_error"})
_REFUSED = frozenset({"rejected_budget", "bad_request", "rejected_rate_limit"})
_COUNT_INDEXES = tuple(index for index, name in enumerate(MEASURES) if name in COUNT_MEASURES)

ROLLUP = Table(
    "switchman_rollup",
    ROLLUP_METADATA,
    Column("slice", Text, nullable=False),
    Column("grain", Integer, nullable=False),
    Column("bucket", BigInteger, nullable=False),
    Column("v1", Text, nullable=False),
    Column("v2", Text, nullable=False),
    *(Column(name, BigInteger if name in COUNT_MEASURES else Float, nullable=False) for name in MEASURES),
    Index("ux_switchman_rollup_key", "slice", "grain", "bucket", "v1", "v2", unique=True),
)

LATENCY = Table(
    "switchman_latency",
    ROLLUP_METADATA,
    Column("model", Text, nullable=False),
    Column("grain", Integer, nullable=False),
    Column("bucket", BigInteger, nullable=False),
    Column("latency_bucket", Integer, nullable=False),
    Column("n", BigInteger, nullable=False),
    Index("ux_switchman_latency_key", "model", "grain", "bucket", "latency_bucket", unique=True),
)

SESSIONS = Table(
    "switchman_sessions",
    ROLLUP_METADATA,
    Column("session", Text, primary_key=True),
    Column("agent", Text, nullable=False),
    Column("first_time", Float, nullable=False),
    Column("last_time", Float, nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("escalations", BigInteger, nullable=False),
    # Covering: the agents page counts a window's sessions per agent from the index alone.
    Index("ix_switchman_sessions_recent", "last_time", "agent", "requests", "escalations"),
)
#: Latency rows for every model together carry this model name.
ALL_MODELS = ""


def hour_of(moment: float) -> int:
    """The start (epoch seconds) of the hour that contains `moment`."""
    return int(moment // HOUR) * HOUR


def day_of(moment: float) -> int:
    """The start (epoch seconds) of the UTC day that contains `moment`."""
    return int(moment // DAY) * DAY


def bucket_of(latency_ms: float) -> int:
    """The latency histogram bucket of a duration: [2^(b/4), 2^((b+1)/4)) ms; under 1 ms is bucket 0."""
    if not latency_ms > 1.0:  # also NaN
        return 0
    if latency_ms >= _SLOWEST:  # also infinity (whose log2 no int holds)
        return _MAX_BUCKET
    return min(int(math.log2(latency_ms) * LATENCY_STEP), _MAX_BUCKET)


def bucket_bounds(bucket: int) -> tuple[float, float]:
    """The latency range [low, high) of a histogram bucket, in ms."""
    return float(2.0 ** (bucket / LATENCY_STEP)), float(2.0 ** ((bucket + 1) / LATENCY_STEP))


#: What the rollups need of one record, coerced to plain values (see `fact`).
Fact = tuple[Any, ...]


def fact(rec: LedgerRecord) -> Fact:
    """The rollup's view of a record; ValueError/TypeError if a field cannot be coerced (as `encode`), and
    ValueError for a time no hour bucket holds (NaN, infinite, beyond 2**62 s) or a token count beyond 2**53
    (an int no float sum or BIGINT holds): refused here, not in the batch's sums or the database driver."""
    moment = float(rec.time)
    if not math.isfinite(moment):
        raise ValueError(f"time is not finite: {moment}")
    if not -_TIME_LIMIT < moment < _TIME_LIMIT:  # its hour would be a bucket no BIGINT holds
        raise ValueError(f"time out of range: {moment}")
    tin, tout = int(rec.input_tokens), int(rec.output_tokens)
    if not (-_COUNT_LIMIT < tin < _COUNT_LIMIT and -_COUNT_LIMIT < tout < _COUNT_LIMIT):
        raise ValueError(f"token count out of range: {tin}, {tout}")  # the float sums, or a BIGINT, could not hold it
    model, chosen = rec.model, None
    for name, quality, _ in rec.scores:
        if name == model and quality is not None:
            chosen = float(quality)
    cost, baseline, ttft, session = rec.cost_usd, rec.baseline_cost_usd, rec.ttft_ms, rec.session
    fallbacks = len(rec.fallback_chain)
    if rec.shadow_model is None:
        shadow, shadow_cost, shadow_quality = False, 0.0, None
    else:
        shadow, shadow_cost = True, float(rec.shadow_cost_usd or 0.0)
        shadow_quality = None if rec.shadow_quality is None else float(rec.shadow_quality)
    return (
        moment, str(rec.route or ""), str(rec.agent or ""), str(model or ""), str(rec.key_id or ""),
        str(rec.status), tin, tout, float(cost),
        float(cost if baseline is None else baseline), float(rec.latency_ms),
        None if ttft is None else float(ttft), fallbacks - 1 if fallbacks else 0,
        1 if rec.escalated else 0, chosen, shadow, shadow_cost, shadow_quality,
        None if session is None else str(session),
    )


class RollupBatch:
    """The rollup rows of a batch of records, summed in memory; `write` adds them in the database."""

    __slots__ = ("groups", "latency", "sessions")

    def __init__(self, facts: Iterable[Fact] = ()) -> None:
        #: (hour, route, agent, model, key, status) → sums in MEASURES order
        self.groups: dict[tuple[Any, ...], list[float]] = {}
        self.latency: dict[tuple[str, int, int], int] = {}  # (model, hour, latency bucket) → n
        self.sessions: dict[str, list[Any]] = {}
        self.add_all(facts)

    def add(self, item: Fact) -> None:
        """Count one record (its `fact`)."""
        self.add_all((item,))

    def add_all(self, facts: Iterable[Fact]) -> None:
        """Count records (their `fact`s). One loop with its look-ups made once, not a method call per record: the
        writer counts every row it writes here. `bucket_of`, `min` and `max` are spelled out (the same results)."""
        groups, latencies, sessions = self.groups, self.latency, self.sessions
        get_group, get_latency, get_session = groups.get, latencies.get, sessions.get
        width, errors, refused, log2 = len(MEASURES), _ERRORS, _REFUSED, math.log2
        for (moment, route, agent, model, key_id, status, tin, tout, cost, baseline, latency, ttft, fallbacks,
             escalated, quality, shadow, shadow_cost, shadow_quality, session) in facts:
            hour = int(moment // HOUR) * HOUR
            key = (hour, route, agent, model, key_id, status)
            sums = get_group(key)
            if sums is None:
                sums = groups[key] = [0.0] * width
                sums[1] = float(status in errors)  # per request of this group: fixed by its status
                sums[2] = float(status in refused)
            sums[0] += 1
            sums[3] += tin
            sums[4] += tout
            sums[5] += cost
            sums[6] += baseline
            sums[7] += latency
            if ttft is not None:
                sums[8] += ttft
                sums[9] += 1
            if fallbacks:  # adding 0 would change nothing
                sums[10] += fallbacks
            if escalated:
                sums[11] += escalated
            if quality is not None:
                sums[12] += 1
                sums[13] += quality
            if shadow:
                sums[14] += 1
                sums[15] += shadow_cost
                if shadow_quality is not None:
                    sums[16] += 1
                    sums[17] += shadow_quality
                sums[18] += cost
                if quality is not None:
                    sums[19] += 1
                    sums[20] += quality
            if status == "ok" and model:
                if not latency > 1.0:  # bucket_of: also NaN
                    bucket = 0
                elif latency >= _SLOWEST:  # also infinity
                    bucket = _MAX_BUCKET
                else:
                    bucket = int(log2(latency) * LATENCY_STEP)
                    if bucket > _MAX_BUCKET:
                        bucket = _MAX_BUCKET
                lat_key = (model, hour, bucket)
                latencies[lat_key] = get_latency(lat_key, 0) + 1
            if session is not None:
                state = get_session(session)
                if state is None:
                    sessions[session] = [agent, moment, moment, 1, escalated]
                else:
                    if agent:
                        state[0] = agent
                    if moment < state[1]:  # min(state[1], moment)
                        state[1] = moment
                    if moment > state[2]:  # max(state[2], moment)
                        state[2] = moment
                    state[3] += 1
                    state[4] += escalated

    def slices(self) -> dict[tuple[str, int, int, str, str], list[float]]:
        """The groups summed into every slice, per hour and per day.

        Read only: a slice row made of a single group is that group's own list (no copy per slice and grain).
        """
        rows: dict[tuple[str, int, int, str, str], list[float]] = {}
        get = rows.get
        for (hour, route, agent, model, key_id, _), sums in self.groups.items():
            if sums[1] or sums[2]:  # the error/refusal flags become counts
                sums = sums.copy()
                if sums[1]:
                    sums[1] = sums[0]
                if sums[2]:
                    sums[2] = sums[0]
            day = hour // DAY * DAY
            names = ("", route, agent, model, key_id)
            for name, first, second in _SLICE_PICKS:
                v1, v2 = names[first], names[second]
                for row_key in ((name, HOUR, hour, v1, v2), (name, DAY, day, v1, v2)):
                    found = get(row_key)
                    rows[row_key] = sums if found is None else [a + b for a, b in zip(found, sums, strict=True)]
        return rows

    def latency_rows(self) -> dict[tuple[str, int, int, int], int]:
        """The latency histogram per model and for all models, per hour and per day."""
        rows: dict[tuple[str, int, int, int], int] = {}
        for (model, hour, bucket), n in self.latency.items():
            day = hour // DAY * DAY
            for name in (model, ALL_MODELS):
                for grain, start in ((HOUR, hour), (DAY, day)):
                    key = (name, grain, start, bucket)
                    rows[key] = rows.get(key, 0) + n
        return rows

    def write(self, conn: Connection) -> None:
        """Add the batch to the rollup tables (inside the caller's transaction)."""
        sql = _upserts(conn.dialect)
        if self.groups:
            slices = self.slices()
            typed: dict[int, list[float | int]] = {}  # per list: slice rows of one group share theirs
            rows = []
            for key in sorted(slices):
                sums = slices[key]
                values = typed.get(id(sums))
                if values is None:
                    values = typed[id(sums)] = _typed(sums)
                rows.append((*key, *values))
            _upsert(conn, sql[0], rows)
        if self.latency:
            _upsert(conn, sql[1], [(*key, n) for key, n in sorted(self.latency_rows().items())])
        if self.sessions:
            _upsert(conn, sql[2], [(sid, *values) for sid, values in sorted(self.sessions.items())])


def _typed(sums: list[float]) -> list[float | int]:
    """The sums as bound: counts as int, the rest as summed."""
    values: list[float | int] = list(sums)
    for index in _COUNT_INDEXES:
        values[index] = int(values[index])
    return values


_SQL_CACHE: dict[str, tuple[str, str, str]] = {}


def _upsert(conn: Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """Add `rows` (keys unique within a batch): Postgres gets one statement of column arrays, SQLite executemany."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(sql, tuple(list(column) for column in zip(*rows, strict=True)))
    else:
        executemany(conn, sql, rows)


def _upserts(dialect: Dialect) -> tuple[str, str, str]:
    """INSERT ... ON CONFLICT DO UPDATE statements for the three tables, in the driver's own SQL.

    On Postgres the rows arrive as one array per column (`SELECT * FROM unnest(...)`): a fixed
    statement the server prepares once, instead of hundreds of parameter sets parsed per batch.
    """
    cached = _SQL_CACHE.get(dialect.name)
    if cached is not None:
        return cached
    postgres = dialect.name == "postgresql"
    least, greatest = ("least", "greatest") if postgres else ("min", "max")

    def insert(table: Table, conflict: tuple[str, ...], updates: list[str]) -> str:
        names = [c.name for c in table.columns]
        if postgres:
            arrays = ", ".join(f"%s::{c.type.compile(dialect=dialect)}[]" for c in table.columns)
            rows = f"SELECT * FROM unnest({arrays})"
        else:
            rows = f"VALUES ({', '.join(['?'] * len(names))})"
        return (f"INSERT INTO {table.name} ({', '.join(names)}) {rows} "
                f"ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {', '.join(updates)}")

    r, s = ROLLUP.name, SESSIONS.name
    statements = (
        insert(ROLLUP, ("slice", "grain", "bucket", "v1", "v2"), [f"{m} = {r}.{m} + excluded.{m}" for m in MEASURES]),
        insert(LATENCY, ("model", "grain", "bucket", "latency_bucket"), [f"n = {LATENCY.name}.n + excluded.n"]),
        insert(SESSIONS, ("session",), [
            "agent = CASE WHEN excluded.agent = '' THEN " + s + ".agent ELSE excluded.agent END",
            f"first_time = {least}({s}.first_time, excluded.first_time)",
            f"last_time = {greatest}({s}.last_time, excluded.last_time)",
            f"requests = {s}.requests + excluded.requests",
            f"escalations = {s}.escalations + excluded.escalations",
        ]),
    )
    _SQL_CACHE[dialect.name] = statements
    return statements


def ensure_rollup(engine: Engine, *, chunk: int = 20_000) -> None:
    """Create the rollup tables (and indexes) where missing, filled from the rows already in the ledger.

    A schema change like the ledger's own tables (`migrate`): one transaction under the schema lock (Postgres's
    advisory lock, SQLite's BEGIN IMMEDIATE), tried again with a growing pause after a lost race. Creation and
    backfill being one transaction, rows written meanwhile by another process are counted once: in the backfill,
    or by their own writer after the tables exist. (Before, the lock was not taken: makers on Postgres raced on the
    catalog and tried again at once, and a replica's rollups could be made while another changed the schema.)
    """
    migrate(engine, lambda conn: up_to_date(conn, ROLLUP_METADATA), lambda conn: _make_rollup(conn, chunk))


def _make_rollup(conn: Connection, chunk: int) -> None:
    if inspect(conn).has_table(ROLLUP.name, schema=ROLLUP.schema):  # made before (or while we waited for the lock)
        _create_indexes(conn)  # indexes added since the tables were made
        return
    for table in ROLLUP_METADATA.sorted_tables:
        conn.execute(CreateTable(table, if_not_exists=True))
    _create_indexes(conn)
    _backfill(conn, chunk)


def _create_indexes(conn: Connection) -> None:
    for table in ROLLUP_METADATA.sorted_tables:
        for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
            conn.execute(CreateIndex(index, if_not_exists=True))


def _backfill(conn: Connection, chunk: int) -> None:
    last_id, total, skipped = 0, 0, 0
    while True:
        rows = conn.execute(
            REQUESTS.select().where(REQUESTS.c.id > last_id).order_by(REQUESTS.c.id).limit(chunk)
        ).all()
        if not rows:
            break
        facts = []
        for row in rows:
            try:
                facts.append(fact(decode(row)))
            except (AttributeError, TypeError, ValueError, OverflowError) as exc:  # as the writer refuses it
                skipped += 1
                logger.error("ledger rollups leave out row %s: %s", row.id, exc)
        RollupBatch(facts).write(conn)
        last_id, total = rows[-1].id, total + len(rows)
    if total:
        logger.info("ledger rollups built from %d existing rows (%d left out as invalid)", total - skipped, skipped)
