"""Read-only views of the ledger for reports and the dashboard: totals, series, percentiles, the log.

Totals, series and percentiles come from the hourly rollups (`_rollup`), so a 30-day overview of a
million requests reads a few thousand rollup rows; windows are therefore whole hours (a window
starts at the top of the hour that contains its start). The request log reads the request rows
through the (column, id) indexes, newest first, a page at a time.

    views = ledger.views
    views.totals(since=time.time() - 86400)                      # one Totals for the window
    views.totals(since=t, by=("agent", "model"))                  # one per agent and model
    views.timeline(since=t, step_s=86400)                         # TimelinePoint per day
    views.search(RequestFilter(agent="triage", status="error"))   # RequestPage, newest first
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, and_, case, func, literal, select
from sqlalchemy.sql.elements import ColumnElement

from ._db import FEEDBACK, REQUESTS
from ._record import LedgerRecord
from ._rollup import COUNT_MEASURES, DIMENSIONS, LATENCY, MEASURES, ROLLUP, SESSIONS, bucket_bounds, hour_of
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
REFUSED_STATUSES = ("rejected_budget", "bad_request")
_DIMENSION_NAMES = {"route": "route", "agent": "agent", "model": "model", "key": "key_id", "key_id": "key_id",
                    "status": "status"}
_HOUR = 3600
_INTEGER_FIELDS = COUNT_MEASURES | {"errors", "refused"}


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


@dataclass(frozen=True, slots=True)
class Totals:
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
    def saving_usd(self) -> float:
        """What routing saved against each request's baseline model (its route's dearest, or configured)."""
        return self.baseline_cost_usd - self.cost_usd

    @property
    def saving_pct(self) -> float | None:
        """The saving as a percentage of the baseline cost; None when that is zero."""
        ratio = _ratio(self.saving_usd, self.baseline_cost_usd)
        return None if ratio is None else 100.0 * ratio

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
class TimelinePoint:
    """Sums over one step of a timeline, starting at `start` (epoch seconds)."""

    start: float
    requests: int = 0
    errors: int = 0
    cost_usd: float = 0.0
    baseline_cost_usd: float = 0.0

    @property
    def saving_usd(self) -> float:
        """The step's saving against the baseline."""
        return self.baseline_cost_usd - self.cost_usd

    @property
    def saving_pct(self) -> float | None:
        """The step's saving as a percentage of its baseline cost."""
        ratio = _ratio(self.saving_usd, self.baseline_cost_usd)
        return None if ratio is None else 100.0 * ratio


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
    """One page of the request log, newest first; pass `next_before` to get the next (older) page."""

    rows: Sequence[tuple[int, LedgerRecord]]
    next_before: int | None


def _dimension(name: str) -> str:
    try:
        return _DIMENSION_NAMES[name]
    except KeyError:
        raise ValueError(f"cannot group by {name!r}: use one of {', '.join(DIMENSIONS)}") from None


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

    def _window(self, since: float, until: float | None) -> ColumnElement[bool]:
        clause = ROLLUP.c.hour >= hour_of(since)
        return clause if until is None else and_(clause, ROLLUP.c.hour < until)

    def totals(
        self, *, since: float, until: float | None = None, by: Sequence[str] = (),
        where: Mapping[str, str | None] | None = None,
    ) -> list[Totals]:
        """Sums over [since, until) per group of `by` (route, agent, model, key, status), dearest first.

        With no `by`, one Totals for the whole window (even when it is empty). `where` keeps only
        the rows whose dimensions have these values (None: the dimension was absent).
        """
        self._ensure_schema()
        dims = [_dimension(name) for name in by]
        status = ROLLUP.c.status
        sums: list[Any] = [func.coalesce(func.sum(ROLLUP.c[m]), 0) for m in MEASURES]
        sums[1:1] = [
            func.coalesce(func.sum(case((status.in_(ERROR_STATUSES), ROLLUP.c.requests), else_=0)), 0),
            func.coalesce(func.sum(case((status.in_(REFUSED_STATUSES), ROLLUP.c.requests), else_=0)), 0),
        ]
        query = select(*(ROLLUP.c[d] for d in dims), *sums).where(self._window(since, until))
        for name, value in (where or {}).items():
            query = query.where(ROLLUP.c[_dimension(name)] == (value or ""))
        if dims:
            cost = sums[2 + MEASURES.index("cost_usd")]
            query = query.group_by(*(ROLLUP.c[d] for d in dims)).order_by(cost.desc(), *(ROLLUP.c[d] for d in dims))
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        names = ("requests", "errors", "refused", *MEASURES[1:])
        result = []
        for row in rows:
            group = {name: (row[i] or None) for i, name in enumerate(by)}
            values: dict[str, Any] = {k: int(v) if k in _INTEGER_FIELDS else float(v)
                      for k, v in zip(names, row[len(dims):], strict=True)}
            result.append(Totals(group=group, **values))
        return result

    def timeline(self, *, since: float, step_s: int, until: float | None = None,
                 where: Mapping[str, str | None] | None = None) -> list[TimelinePoint]:
        """Sums per `step_s` (a multiple of an hour) from the hour of `since` to `until` (default now)."""
        if step_s < _HOUR or step_s % _HOUR:
            raise ValueError("a timeline step must be a whole number of hours")
        self._ensure_schema()
        start = hour_of(since)
        end = until if until is not None else time.time()
        slot = ((ROLLUP.c.hour - literal(start)) // literal(step_s)).label("slot")
        status = ROLLUP.c.status
        query = (
            select(
                slot, func.sum(ROLLUP.c.requests),
                func.sum(case((status.in_(ERROR_STATUSES), ROLLUP.c.requests), else_=0)),
                func.sum(ROLLUP.c.cost_usd), func.sum(ROLLUP.c.baseline_cost_usd),
            )
            .where(self._window(since, end))
            .group_by(slot)
        )
        for name, value in (where or {}).items():
            query = query.where(ROLLUP.c[_dimension(name)] == (value or ""))
        with self._engine.connect() as conn:
            found = {int(s): (int(n), int(e), float(c), float(b)) for s, n, e, c, b in conn.execute(query)}
        steps = max(math.ceil((end - start) / step_s), 1)
        return [TimelinePoint(start + i * step_s, *found.get(i, (0, 0, 0.0, 0.0))) for i in range(steps)]

    def latency(self, *, since: float, until: float | None = None, by_model: bool = False,
                where_model: str | None = None) -> dict[str | None, LatencySummary]:
        """p50/p95/p99 of answered requests over the window: under None for all, per model if asked."""
        self._ensure_schema()
        clause = LATENCY.c.hour >= hour_of(since)
        if until is not None:
            clause = and_(clause, LATENCY.c.hour < until)
        if where_model is not None:
            clause = and_(clause, LATENCY.c.model == where_model)
        query = (select(LATENCY.c.model, LATENCY.c.bucket, func.sum(LATENCY.c.n)).where(clause)
                 .group_by(LATENCY.c.model, LATENCY.c.bucket))
        per_model: dict[str, dict[int, int]] = {}
        with self._engine.connect() as conn:
            for model, bucket, n in conn.execute(query):
                per_model.setdefault(model, {})[int(bucket)] = int(n)
        overall: dict[int, int] = {}
        for counts in per_model.values():
            for bucket, n in counts.items():
                overall[bucket] = overall.get(bucket, 0) + n
        groups: dict[str | None, dict[int, int]] = {None: overall}
        if by_model:
            groups.update(per_model)
        result = {}
        for name, counts in groups.items():
            ordered = sorted(counts.items())
            result[name] = LatencySummary(sum(counts.values()), _percentile(ordered, 0.5), _percentile(ordered, 0.95),
                                          _percentile(ordered, 0.99))
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
        """The names each dimension took in the window (for the log's filter choices)."""
        self._ensure_schema()
        result: dict[str, list[str]] = {}
        with self._engine.connect() as conn:
            for name in DIMENSIONS:
                column = ROLLUP.c[name]
                query = select(column).where(self._window(since, None), column != "").distinct().order_by(column)
                result[name] = [str(v) for (v,) in conn.execute(query)]
        return result

    def search(self, where: RequestFilter = RequestFilter(), *, limit: int = 50,
               before: int | None = None) -> RequestPage:
        """Requests matching `where`, newest first, at most `limit`; older than row id `before` if given."""
        self._ensure_schema()
        r = REQUESTS.c
        query = select(REQUESTS)
        for name in ("agent", "key_id", "route", "model", "status", "session"):
            value = getattr(where, name)
            if value is not None:
                query = query.where(r[name] == value)
        if where.since is not None:
            query = query.where(r.time >= where.since)
        if where.until is not None:
            query = query.where(r.time < where.until)
        if before is not None:
            query = query.where(r.id < before)
        query = query.order_by(r.id.desc()).limit(limit + 1)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        page = [(int(row.id), decode(row)) for row in rows[:limit]]
        return RequestPage(page, page[-1][0] if len(rows) > limit else None)

    def feedback_for(self, request_id: str) -> list[tuple[float, float, str | None]]:
        """(time, score, comment) of every feedback on a request, oldest first."""
        self._ensure_schema()
        f = FEEDBACK.c
        query = select(f.time, f.score, f.comment).where(f.request_id == request_id).order_by(f.id)
        with self._engine.connect() as conn:
            return [(float(t), float(s), c) for t, s, c in conn.execute(query)]
