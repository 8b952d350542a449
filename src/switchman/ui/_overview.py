"""The overview, agents and models pages: what each needs from the ledger, budgets and health board.

Each function runs in a worker thread (it queries the database) and returns the template's context.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..ledger import LedgerViews, Totals, period_bounds
from ._sources import Sources, Window

__all__ = ["agents_context", "budget_rows", "models_context", "overview_context", "timeline_chart"]

_DAY = 86_400


def _views(src: Sources) -> LedgerViews | None:
    return src.ledger.views if src.ledger is not None else None


def timeline_chart(views: LedgerViews, *, since: float, window: Window) -> dict[str, Any]:
    """uPlot's data for spend vs baseline and the saving in % over a window (one point per step)."""
    points = views.timeline(since=since, step_s=window.step_s)
    return {
        "x": [p.start for p in points],
        "spend": [round(p.cost_usd, 8) for p in points],
        "baseline": [round(p.baseline_cost_usd, 8) for p in points],
        "saving_pct": [None if p.saving_pct is None else round(p.saving_pct, 3) for p in points],
        "requests": [p.requests for p in points],
        "errors": [p.errors for p in points],
        "step_s": window.step_s,
    }


def overview_context(src: Sources, window: Window) -> dict[str, Any]:
    """Spend today / 7 d / 30 d, the window's requests, errors, latency and saving, and its charts."""
    views = _views(src)
    if views is None:
        return {"no_ledger": True}
    now = src.clock()
    since = now - window.span_s
    spans = [
        ("today (UTC)", views.totals(since=period_bounds(now, "day")[0])[0]),
        ("last 7 days", views.totals(since=now - 7 * _DAY)[0]),
        ("last 30 days", views.totals(since=now - 30 * _DAY)[0]),
    ]
    current = views.totals(since=since)[0]
    return {
        "spans": spans,
        "current": current,
        "latency": views.latency(since=since)[None],
        "chart": timeline_chart(views, since=since, window=window),
        "top_agents": views.totals(since=since, by=("agent",))[:8],
        "top_models": views.totals(since=since, by=("model",))[:8],
        "ledger_stats": src.ledger.stats if src.ledger is not None else None,
    }


def budget_rows(src: Sources, scope: str | None = None) -> list[dict[str, Any]]:
    """Every budget (of one scope, if given) with its spend, share used and when it resets."""
    if src.budgets is None:
        return []
    now = src.clock()
    rows = []
    for budget, spent, reserved in src.budgets.usage():
        if scope is not None and budget.scope != scope:
            continue
        resets_at = period_bounds(now, budget.period)[1]
        rows.append({
            "scope": budget.scope, "name": budget.name, "limit_usd": budget.usd, "period": budget.period,
            "spent_usd": spent, "reserved_usd": reserved, "used": min((spent + reserved) / budget.usd, 1.0),
            "resets_at": resets_at, "resets_in_s": resets_at - now, "on_exceed": budget.on_exceed,
            "downgrade_to": budget.downgrade_to,
        })
    return sorted(rows, key=lambda r: (r["scope"], r["name"]))


def _mix(rows: Sequence[Totals], key: str) -> dict[str | None, list[dict[str, Any]]]:
    """Per value of `key`: each model's requests and share, largest first."""
    grouped: dict[str | None, list[Totals]] = {}
    for row in rows:
        grouped.setdefault(row.group[key], []).append(row)
    result: dict[str | None, list[dict[str, Any]]] = {}
    for name, items in grouped.items():
        total = sum(t.requests for t in items) or 1
        result[name] = sorted(
            ({"model": t.group["model"], "requests": t.requests, "share": t.requests / total, "cost_usd": t.cost_usd}
             for t in items), key=lambda m: (-m["requests"], m["model"] or ""))
    return result


def agents_context(src: Sources, window: Window) -> dict[str, Any]:
    """Per agent: spend, saving, errors, budgets, model mix, sessions and escalations."""
    views = _views(src)
    if views is None:
        return {"no_ledger": True}
    since = src.clock() - window.span_s
    totals = {t.group["agent"]: t for t in views.totals(since=since, by=("agent",))}
    mix = _mix(views.totals(since=since, by=("agent", "model")), "agent")
    sessions = {s.agent: s for s in views.sessions(since=since)}
    budgets: dict[str | None, list[dict[str, Any]]] = {}
    for row in budget_rows(src, "agent"):
        budgets.setdefault(row["name"], []).append(row)
    names: list[str | None] = list(totals)
    names += [n for n in (*src.config.agents, *budgets) if n not in totals and n not in names]
    agents = [
        {"name": name, "totals": totals.get(name, Totals()), "mix": mix.get(name, []),
         "sessions": sessions.get(name), "budgets": budgets.get(name, []),
         "configured": name in src.config.agents}
        for name in names
    ]
    return {"agents": agents}


def _model_state(states: Sequence[str]) -> str:
    """A model's circuit: closed or open when all its deployments agree, else degraded."""
    if all(state == "closed" for state in states):
        return "closed"
    if all(state == "open" for state in states):
        return "open"
    return "degraded" if "closed" in states else "half_open"


def models_context(src: Sources, window: Window) -> dict[str, Any]:
    """Per model (and deployment): share, cost, tokens, latency, errors, live TTFT, circuit state."""
    views = _views(src)
    if views is None:
        return {"no_ledger": True}
    since = src.clock() - window.span_s
    totals = {t.group["model"]: t for t in views.totals(since=since, by=("model",)) if t.group["model"]}
    answered = sum(t.requests for t in totals.values()) or 1
    latency = views.latency(since=since, by_model=True)
    board = src.health()
    deployments = src.deployment_views()
    names = sorted(set(src.models) | set(totals), key=lambda m: (-(totals[m].requests if m in totals else 0), m))
    models: list[dict[str, Any]] = []
    for name in names:
        spec = src.models.get(name)
        row = totals.get(name, Totals())
        mine = deployments.get(name, [])
        live = [d.live_ttft_ms for d in mine if d.live_ttft_ms is not None]
        models.append({
            "name": name, "totals": row, "share": row.requests / answered, "latency": latency.get(name),
            "state": _model_state([d.state for d in mine]) if mine else board.state(name),
            "live_ttft_ms": min(live) if live else None, "deployments": mine,
            "input_price": spec.input_price if spec else None, "output_price": spec.output_price if spec else None,
            "configured": spec is not None,
        })
    multi = any(len(m["deployments"]) > 1 for m in models)
    return {"models": models, "several_deployments": multi}
