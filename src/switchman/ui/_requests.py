"""The request log (filters, newest first, a page at a time) and one request's page (its decision)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..ledger import RECORD_STATUSES, LedgerRecord, RequestFilter
from ._sources import Sources

__all__ = ["LOG_WINDOWS", "LogQuery", "log_context", "request_context"]

#: The log's time choices: name → seconds back (None: all time).
LOG_WINDOWS: dict[str, int | None] = {"1h": 3_600, "24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400, "all": None}
_FILTERS = ("agent", "key", "route", "model", "status", "session")
_PAGE = 50
_MAX_VALUE = 256


@dataclass(frozen=True, slots=True)
class LogQuery:
    """The log's filters as the URL carries them (?agent=..&status=..&window=24h&before=123)."""

    agent: str | None = None
    key: str | None = None
    route: str | None = None
    model: str | None = None
    status: str | None = None
    session: str | None = None
    window: str = "all"
    before: int | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> LogQuery:
        """Read the query string; empty, overlong or unknown values mean 'any'."""
        values: dict[str, Any] = {}
        for name in _FILTERS:
            value = (params.get(name) or "").strip()
            if value and len(value) <= _MAX_VALUE:
                values[name] = value
        if values.get("status") not in (None, *RECORD_STATUSES):
            values.pop("status")
        window = params.get("window") or "all"
        values["window"] = window if window in LOG_WINDOWS else "all"
        before = params.get("before") or ""
        # ASCII digits only: str.isdigit() is also true of '²', which int() refuses.
        values["before"] = int(before) if before.isascii() and before.isdigit() and len(before) < 19 else None
        return cls(**values)

    def params(self, **changes: Any) -> dict[str, str]:
        """The non-empty filters as query parameters (with `changes` applied), for links."""
        data = {name: getattr(self, name) for name in (*_FILTERS, "window", "before")}
        data.update(changes)
        return {k: str(v) for k, v in data.items() if v not in (None, "") and not (k == "window" and v == "all")}

    def request_filter(self, now: float) -> RequestFilter:
        """The ledger's filter for this query."""
        back = LOG_WINDOWS[self.window]
        return RequestFilter(agent=self.agent, key_id=self.key, route=self.route, model=self.model,
                             status=self.status, session=self.session,
                             since=None if back is None else now - back)


def log_context(src: Sources, query: LogQuery) -> dict[str, Any]:
    """One page of matching requests and the choices each filter offers."""
    if src.ledger is None:
        return {"no_ledger": True, "query": query}
    views = src.ledger.views
    now = src.clock()
    page = views.search(query.request_filter(now), limit=_PAGE, before=query.before)
    options = views.values(since=now - 30 * 86_400)
    choices: dict[str, list[str]] = {"agent": options["agent"], "key": options["key"], "route": options["route"],
               "model": options["model"], "status": list(RECORD_STATUSES)}
    for name, values in choices.items():  # keep a chosen value listed even when it is older than 30 days
        chosen = getattr(query, name)
        if chosen is not None and chosen not in values:
            values.insert(0, chosen)
    return {"query": query, "rows": [record for _, record in page.rows], "next_before": page.next_before,
            "complete": page.complete,
            "choices": choices, "log_windows": list(LOG_WINDOWS)}


def _candidates(record: LedgerRecord) -> list[dict[str, Any]]:
    """Every candidate of the route with what the strategy predicted and why one was set aside."""
    scores = {model: (q, c) for model, q, c in record.scores}
    excluded = dict(record.excluded)
    names = list(dict.fromkeys([*record.candidates, *scores, *excluded]))
    rows = []
    for name in names:
        q, c = scores.get(name, (None, None))
        rows.append({"model": name, "quality": q, "cost_usd": c, "chosen": name == record.model,
                     "tried": name in record.fallback_chain, "excluded": excluded.get(name)})
    return rows


def request_context(src: Sources, request_id: str) -> dict[str, Any] | None:
    """One request's record with its decision, fallbacks, feedback and shadow choice; None if unknown."""
    if src.ledger is None or len(request_id) > 64:
        return None
    record = src.ledger.find(request_id)
    if record is None:
        return None
    route = src.config.routes.get(record.route or "")
    chain = list(record.fallback_chain)
    attempts = [{"model": m, "answered": m == record.model and record.status == "ok" and i == len(chain) - 1}
                for i, m in enumerate(chain)]
    saving = None if record.baseline_cost_usd is None else record.baseline_cost_usd - record.cost_usd
    return {
        "record": record,
        "candidates": _candidates(record),
        "attempts": attempts,
        "feedback": src.ledger.views.feedback_for(request_id, record.key_id),  # this request's, not another key's
        "route_config": route,
        "router_file": route.router if route is not None else None,
        "saving_usd": saving,
    }
