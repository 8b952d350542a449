"""Read-only views of the ledger for reports and the dashboard: totals, series, percentiles, the log.

Totals, series and percentiles come from the rollups (`_rollup`): a window reads daily rows for its
whole UTC days and hourly rows for the hours at its edges, so a 30-day overview of a million
requests reads about a hundred rows per slice value. Windows are whole hours (one starts at the
top of the hour that contains its start). The request log reads the request rows through the
(column, id) indexes, newest first, a page at a time.

    views = ledger.views
    views.totals(since=time.time() - 86400)                      # one Totals for the window
    views.totals(since=t, by=("agent", "model"))                  # one per agent and model (its mix)
    views.timeline(since=t, step_s=86400)                         # TimelinePoint per day
    views.search(RequestFilter(agent="triage", status="error"))   # RequestPage, newest first
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any

from sqlalchemy import Connection, Engine, Table, and_, case, func, literal, or_, select
from sqlalchemy.sql.elements import ColumnElement

from ._db import FEEDBACK, REQUESTS
from ._record import LedgerRecord, Saving
from ._rollup import (
    ALL_MODELS,
    COUNT_MEASURES,
    DAY,
    HOUR,
    LATENCY,
    MEASURES,
    ROLLUP,
    SESSIONS,
    bucket_bounds,
    day_of,
    hour_of,
)
from ._rows import decode

__all__ = [
    "ERROR_STATUSES",
    "REFUSED_STATUSES",
    "FeedbackSummary",
    "LatencySummary",
    "LedgerViews",
    "RequestFilter",
    "RequestPage",
    "SessionSummary",
    "TimelinePoint",
    "Totals",
]

#: Statuses that count as errors (an upstream or stream failure), and as refusals (budget, bad input).
ERROR_STATUSES = ("error", "stream_error")
REFUSED_STATUSES = ("rejected_budget", "bad_request", "rejected_rate_limit")
#: The request log reads id ranges of this many rows first, doubling up to the second.
_FIRST_RANGE, _MAX_RANGE = 20_000, 160_000
#: How far out of time order rows can be written (several writers, each batching).
_ORDER_SLACK_S = 600.0
#: The groupings `totals` offers: `by` → the rollup slice that holds them.
_SLICE_OF = {(): "all", ("route",): "route", ("agent",): "agent", ("model",): "model", ("key",): "key",
             ("agent", "model"): "agent_model"}


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


@dataclass(frozen=True, slots=True)
class Totals(Saving):
    """Sums over a window, for everything or for one group (`group` maps dimension → value or None)."""

    group: Mapping[str, str | None] = field(default_factory=dict)
    requests: int = 0
    errors: int = 0
    refused: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    baseline_cost_usd: float = 0.0
    latency_ms_sum: float = 0.0
    ttft_ms_sum: float = 0.0
    ttft_n: int = 0
    fallbacks: int = 0
    escalations: int = 0
    quality_n: int = 0
    quality_sum: float = 0.0
    shadow_n: int = 0
    shadow_cost_usd: float = 0.0
    shadow_quality_n: int = 0
    shadow_quality_sum: float = 0.0
    shadowed_cost_usd: float = 0.0
    shadowed_quality_n: int = 0
    shadowed_quality_sum: float = 0.0

    @property
    def error_rate(self) -> float | None:
        """Errors per request (0..1); None without requests."""
        return _ratio(self.errors, self.requests)

    @property
    def mean_latency_ms(self) -> float | None:
        """Mean latency over every request in the group."""
        return _ratio(self.latency_ms_sum, self.requests)

    @property
    def mean_ttft_ms(self) -> float | None:
        """Mean time to first token over the streamed requests."""
        return _ratio(self.ttft_ms_sum, self.ttft_n)

    @property
    def predicted_quality(self) -> float | None:
        """Mean quality the live strategy predicted for the models it chose (learned routes only)."""
        return _ratio(self.quality_sum, self.quality_n)

    @property
    def shadow_quality(self) -> float | None:
        """Mean quality the shadow router predicted for its own choices."""
        return _ratio(self.shadow_quality_sum, self.shadow_quality_n)

    @property
    def shadowed_quality(self) -> float | None:
        """Mean quality the live strategy predicted on the same (shadowed) requests."""
        return _ratio(self.shadowed_quality_sum, self.shadowed_quality_n)


@dataclass(frozen=True, slots=True)
class TimelinePoint(Saving):
    """Sums over one step of a timeline, starting at `start` (epoch seconds)."""

    start: float
    requests: int = 0
    errors: int = 0
    cost_usd: float = 0.0
    baseline_cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency percentiles of answered requests, read from the log histogram (within ±9%)."""

    n: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """An agent's sessions that were active in a window."""

    agent: str | None
    sessions: int
    requests: int
    escalations: int
    escalated_sessions: int


@dataclass(frozen=True, slots=True)
class FeedbackSummary:
    """Feedback scores given in a window, for one route and model."""

    route: str | None
    model: str | None
    n: int
    mean_score: float


@dataclass(frozen=True, slots=True)
class RequestFilter:
    """Which requests the log shows; None means any. `since`/`until` are epoch seconds."""

    agent: str | None = None
    key_id: str | None = None
    route: str | None = None
    model: str | None = None
    status: str | None = None
    session: str | None = None
    since: float | None = None
    until: float | None = None


@dataclass(frozen=True, slots=True)
class RequestPage:
    """One page of the request log, newest first; pass `next_before` to get the next (older) page.

    `complete` is False when the search stopped on its time budget before filling the page: older
    matches may exist, and `next_before` continues from where it stopped.
    """

    rows: Sequence[tuple[int, LedgerRecord]]
    next_before: int | None
    complete: bool = True


def _slice(by: Sequence[str], where: Mapping[str, str | None]) -> tuple[str, dict[str, str]]:
    """The slice that groups by `by`, and the v1/v2 columns `where` constrains."""
    name = _SLICE_OF.get(tuple(by))
    if name is None:
        raise ValueError(f"cannot group by {tuple(by)!r}: use one of {', '.join(map(str, _SLICE_OF))}")
    columns = {dim: f"v{i + 1}" for i, dim in enumerate(by)}
    unknown = set(where) - set(columns)
    if unknown:
        raise ValueError(f"cannot filter totals by {sorted(unknown)} when grouping by {tuple(by)!r}")
    return name, {columns[dim]: value or "" for dim, value in where.items()}


def _window(table: Table, since: float, until: float | None) -> ColumnElement[bool]:
    """Rows of [since, until): whole UTC days from the daily grain, the hours at the edges from the hourly.

    Without `until` the window runs to now, and the current day's daily row already holds all of it.
    """
    start = hour_of(since)
    first_day = -(-start // DAY) * DAY  # the first midnight at or after the start
    c = table.c
    hourly = c.grain == HOUR
    if until is None:
        return or_(and_(hourly, c.bucket >= start, c.bucket < first_day), and_(c.grain == DAY, c.bucket >= first_day))
    last_day = day_of(until)
    if first_day >= last_day:
        return and_(hourly, c.bucket >= start, c.bucket < until)
    hours = and_(hourly, c.bucket >= start, c.bucket < until, or_(c.bucket < first_day, c.bucket >= last_day))
    return or_(hours, and_(c.grain == DAY, c.bucket >= first_day, c.bucket < last_day))


def _older_than(conn: Connection, row_id: int, since: float) -> bool:
    """Whether the row just below `row_id` is older than `since` by more than writers' batches drift."""
    moment = conn.execute(select(REQUESTS.c.time).where(REQUESTS.c.id < row_id).order_by(REQUESTS.c.id.desc())
                          .limit(1)).scalar()
    return moment is not None and float(moment) < since - _ORDER_SLACK_S


def _percentile(counts: Sequence[tuple[int, int]], q: float) -> float | None:
    """The q-quantile of a latency histogram, interpolated within its bucket (exact to the bucket, ±9%)."""
    total = sum(n for _, n in counts)
    if not total:
        return None
    rank, seen = q * total, 0
    for bucket, n in counts:
        if seen + n >= rank:
            low = 0.0 if bucket == 0 else bucket_bounds(bucket)[0]
            high = bucket_bounds(bucket)[1]
            return low + (high - low) * max(rank - seen, 0.0) / n
        seen += n
    return bucket_bounds(counts[-1][0])[1]


class LedgerViews:
    """Queries over a ledger's rollups and request rows (each call opens and closes one connection)."""

    def __init__(self, engine: Engine, ensure_schema: Callable[[], None]) -> None:
        self._engine = engine
        self._ensure_schema = ensure_schema

    def totals(
        self, *, since: float, until: float | None = None, by: Sequence[str] = (),
        where: Mapping[str, str | None] | None = None,
    ) -> list[Totals]:
        """Sums over [since, until) per group of `by`, dearest first.

        `by` is (), ("route",), ("agent",), ("model",), ("key",) or ("agent", "model"); with no `by`, one
        Totals for the whole window (even when it is empty). `where` keeps only the groups whose
        dimensions (among `by`) have these values (None: the dimension was absent).
        """
        self._ensure_schema()
        name, constraints = _slice(by, where or {})
        r = ROLLUP.c
        values = [r.v1, r.v2][: len(by)]
        sums: list[Any] = [func.coalesce(func.sum(r[m]), 0) for m in MEASURES]
        query = select(*values, *sums).where(r.slice == name, _window(ROLLUP, since, until))
        for column, value in constraints.items():
            query = query.where(r[column] == value)
        if values:
            cost = sums[MEASURES.index("cost_usd")]
            query = query.group_by(*values).order_by(cost.desc(), *values)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        result = []
        for row in rows:
            group = {dim: (row[i] or None) for i, dim in enumerate(by)}
            numbers: dict[str, Any] = {k: int(v) if k in COUNT_MEASURES else float(v)
                                       for k, v in zip(MEASURES, row[len(values):], strict=True)}
            result.append(Totals(group=group, **numbers))
        return result

    def timeline(self, *, since: float, step_s: int, until: float | None = None) -> list[TimelinePoint]:
        """Sums per `step_s` (a multiple of an hour) from the hour of `since` to `until` (default now)."""
        if step_s < HOUR or step_s % HOUR:
            raise ValueError("a timeline step must be a whole number of hours")
        self._ensure_schema()
        start = hour_of(since)
        end = until if until is not None else time.time()
        r = ROLLUP.c
        slot = ((r.bucket - literal(start)) // literal(step_s)).label("slot")
        query = (
            select(slot, func.sum(r.requests), func.sum(r.errors), func.sum(r.cost_usd), func.sum(r.baseline_cost_usd))
            .where(r.slice == "all", r.grain == HOUR, r.bucket >= start, r.bucket < end)
            .group_by(slot)
        )
        with self._engine.connect() as conn:
            found = {int(s): (int(n), int(e), float(c), float(b)) for s, n, e, c, b in conn.execute(query)}
        steps = max(math.ceil((end - start) / step_s), 1)
        return [TimelinePoint(start + i * step_s, *found.get(i, (0, 0, 0.0, 0.0))) for i in range(steps)]

    def latency(self, *, since: float, until: float | None = None,
                by_model: bool = False) -> dict[str | None, LatencySummary]:
        """p50/p95/p99 of answered requests over the window: under None for all, and per model if asked."""
        self._ensure_schema()
        c = LATENCY.c
        clause = _window(LATENCY, since, until)
        if not by_model:
            clause = and_(c.model == ALL_MODELS, clause)
        query = select(c.model, c.latency_bucket, func.sum(c.n)).where(clause).group_by(c.model, c.latency_bucket)
        counts: dict[str | None, dict[int, int]] = {None: {}}
        with self._engine.connect() as conn:
            for model, bucket, n in conn.execute(query):
                counts.setdefault(model or None, {})[int(bucket)] = int(n)
        result = {}
        for name, histogram in counts.items():
            ordered = sorted(histogram.items())
            result[name] = LatencySummary(sum(histogram.values()), _percentile(ordered, 0.5),
                                          _percentile(ordered, 0.95), _percentile(ordered, 0.99))
        return result

    def sessions(self, *, since: float) -> list[SessionSummary]:
        """Per agent: sessions with a request since `since`, their requests and escalations."""
        self._ensure_schema()
        s = SESSIONS.c
        query = (
            select(s.agent, func.count(), func.sum(s.requests), func.sum(s.escalations),
                   func.sum(case((s.escalations > 0, 1), else_=0)))
            .where(s.last_time >= since).group_by(s.agent).order_by(func.count().desc(), s.agent)
        )
        with self._engine.connect() as conn:
            return [SessionSummary(agent or None, int(n), int(r or 0), int(e or 0), int(x or 0))
                    for agent, n, r, e, x in conn.execute(query)]

    def feedback(self, *, since: float) -> list[FeedbackSummary]:
        """Feedback given since `since`, per route and model of the request it scored."""
        self._ensure_schema()
        f = FEEDBACK.c
        query = (select(f.route, f.model, func.count(), func.avg(f.score)).where(f.time >= since)
                 .group_by(f.route, f.model).order_by(f.route, f.model))
        with self._engine.connect() as conn:
            return [FeedbackSummary(route, model, int(n), float(mean)) for route, model, n, mean in conn.execute(query)]

    def values(self, *, since: float) -> dict[str, list[str]]:
        """The routes, agents, models and keys seen since the day of `since` (for the log's filters)."""
        self._ensure_schema()
        r = ROLLUP.c
        query = (select(r.slice, r.v1).where(r.grain == DAY, r.bucket >= day_of(since), r.v1 != "",
                                              r.slice.in_(("route", "agent", "model", "key")))
                 .distinct().order_by(r.slice, r.v1))
        result: dict[str, list[str]] = {"route": [], "agent": [], "model": [], "key": []}
        with self._engine.connect() as conn:
            for name, value in conn.execute(query):
                result[str(name)].append(str(value))
        return result

    def search(self, where: RequestFilter = RequestFilter(), *, limit: int = 50, before: int | None = None,
               budget_s: float = 0.1) -> RequestPage:
        """Requests matching `where`, newest first, at most `limit`; older than row id `before` if given.

        Rows are read in id ranges, newest first and growing (20k ids, then 40k, ... up to 160k), each through
        the (column, id) index of a filter, so however rare the match the work per range stays
        small. When `budget_s` runs out before a page is full, the page ends there with
        `complete=False` and `next_before` where the search stopped: the next page goes on from it.
        """
        self._ensure_schema()
        r = REQUESTS.c
        query = select(REQUESTS)
        for name in ("agent", "key_id", "route", "model", "status", "session"):
            value = getattr(where, name)
            if value is not None:
                if "\x00" in value:  # no row holds a NUL, and PostgreSQL refuses to compare one (a DataError)
                    return RequestPage((), None)
                query = query.where(r[name] == value)
        if where.since is not None:
            query = query.where(r.time >= where.since)
        if where.until is not None:
            query = query.where(r.time < where.until)
        deadline = time.monotonic() + budget_s
        found: list[Any] = []
        with self._engine.connect() as conn:
            # Two queries: each is one index lookup, but min and max together make SQLite scan the table.
            first = conn.execute(select(func.min(r.id))).scalar()
            last = conn.execute(select(func.max(r.id))).scalar()
            if first is None or last is None:
                return RequestPage((), None)
            top = int(last) + 1 if before is None else min(before, int(last) + 1)
            span = _FIRST_RANGE
            while top > first and len(found) <= limit:
                lower = max(top - span, int(first))
                chunk = query.where(r.id < top, r.id >= lower).order_by(r.id.desc()).limit(limit + 1 - len(found))
                found += conn.execute(chunk).all()
                top, span = lower, min(span * 2, _MAX_RANGE)
                if where.since is not None and top > first and _older_than(conn, top, where.since):
                    top = int(first)  # ids grow with time: everything below is older than the window
                if time.monotonic() > deadline:
                    break
        page = [(int(row.id), decode(row)) for row in found[:limit]]
        if len(found) > limit:
            return RequestPage(page, page[-1][0])
        if top > first:
            return RequestPage(page, top, complete=False)
        return RequestPage(page, None)

    def feedback_for(self, request_id: str, key_id: str | None | EllipsisType = ...,
                     ) -> list[tuple[float, float, str | None]]:
        """(time, score, comment) of every feedback on a request, oldest first; given `key_id` (None: no key), only
        that key's request's (two keys may have chosen the same request id)."""
        self._ensure_schema()
        f = FEEDBACK.c
        query = select(f.time, f.score, f.comment).where(f.request_id == request_id).order_by(f.id)
        if not isinstance(key_id, EllipsisType):
            query = query.where(f.key_id.is_(None) if key_id is None else f.key_id == key_id)
        with self._engine.connect() as conn:
            return [(float(t), float(s), c) for t, s, c in conn.execute(query)]
