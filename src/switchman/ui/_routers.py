"""The routers page: per route, what it was asked for (target), what feedback says it reached, what
its shadow router would have done, and the cost–quality picture of its last evaluation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from markupsafe import Markup

from .._money import usd
from ..ledger import FeedbackSummary, Totals
from ._sources import Sources, Window

__all__ = ["ModelFeedback", "eval_svg", "routers_context"]

#: Below this many scores a feedback mean is shown but no "reached" share is claimed from it.
MIN_FEEDBACK = 20
_W, _H, _PAD_L, _PAD_R, _PAD_T, _PAD_B = 640, 360, 56, 16, 16, 44
_COLOURS = ("#2563eb", "#d97706", "#059669", "#db2777", "#7c3aed")


@dataclass(frozen=True, slots=True)
class ModelFeedback:
    """Feedback on one model's answers on a route."""

    model: str | None
    n: int
    mean: float


def _feedback(route: str, rows: Sequence[FeedbackSummary]) -> dict[str, Any]:
    mine = [r for r in rows if r.route == route]
    n = sum(r.n for r in mine)
    mean = sum(r.mean_score * r.n for r in mine) / n if n else None
    per_model = sorted((ModelFeedback(r.model, r.n, r.mean_score) for r in mine), key=lambda m: -m.n)
    best = max((m for m in per_model if m.n >= MIN_FEEDBACK), key=lambda m: m.mean, default=None)
    reached = None
    if mean is not None and best is not None and best.mean > 0 and n >= MIN_FEEDBACK:
        reached = mean / best.mean
    return {"n": n, "mean": mean, "per_model": per_model, "best": best, "reached": reached}


def _load_report(path: Path | None) -> tuple[dict[str, Any] | None, str | None]:
    if path is None:
        return None, None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{path} not found"
    except (OSError, ValueError) as exc:
        return None, f"{path}: {exc}"
    if not isinstance(report, dict) or "routers" not in report or "baselines" not in report:
        return None, f"{path} is not a `switchman eval --json` report"
    return report, None


def routers_context(src: Sources, window: Window) -> dict[str, Any]:
    """Every route with its strategy, target, feedback, shadow comparison and eval picture."""
    since = src.clock() - window.span_s
    totals: dict[str | None, Totals] = {}
    feedback: Sequence[FeedbackSummary] = ()
    if src.ledger is not None:
        views = src.ledger.views
        totals = {t.group["route"]: t for t in views.totals(since=since, by=("route",))}
        feedback = views.feedback(since=since)
    routes = []
    for name, route in src.config.routes.items():
        report, problem = _load_report(src.eval_report_path(name))
        routes.append({
            "name": name, "config": route, "totals": totals.get(name, Totals()),
            "feedback": _feedback(name, feedback), "eval": report, "eval_problem": problem,
            "eval_svg": eval_svg(report) if report is not None else None,
        })
    return {"routes": routes, "min_feedback": MIN_FEEDBACK}


def _scale(points: Iterable[tuple[float, float]]) -> tuple[float, float, float, float]:
    xs = [math.log10(c) for c, _ in points if c > 0]
    ys = [q for c, q in points if c > 0]
    if not xs:
        return 0.0, 1.0, 0.0, 1.0
    x0, x1 = math.floor(min(xs)), math.ceil(max(xs))
    y0, y1 = min(ys), max(ys)
    margin = (y1 - y0) * 0.08 or 0.05
    return x0, max(x1, x0 + 1), y0 - margin, y1 + margin


def eval_svg(report: dict[str, Any]) -> Markup:
    """The report's cost (log scale) vs quality picture: single models, their hull, each router's
    frontier and calibrated point, and the oracle; drawn as inline SVG (no script needed)."""
    baselines = report.get("baselines", {})
    singles = {k.removeprefix("model:"): v for k, v in baselines.items() if k.startswith("model:")}
    routers = {n: r for n, r in report.get("routers", {}).items() if r.get("frontier")}
    everything = [(v["cost_per_1k"], v["quality"]) for v in singles.values()]
    for entry in routers.values():
        everything += [(c, q) for c, q in entry["frontier"]]
    x0, x1, y0, y1 = _scale(everything)

    def px(cost: float, q: float) -> tuple[float, float]:
        x = _PAD_L + (math.log10(max(cost, 1e-12)) - x0) / (x1 - x0) * (_W - _PAD_L - _PAD_R)
        y = _PAD_T + (1 - (q - y0) / (y1 - y0)) * (_H - _PAD_T - _PAD_B)
        return round(x, 1), round(y, 1)

    parts = [f'<svg class="eval-svg" viewBox="0 0 {_W} {_H}" role="img" '
             f'aria-label="cost against quality of the last evaluation">']
    for decade in range(int(x0), int(x1) + 1):
        x, _ = px(10.0 ** decade, y0)
        parts.append(f'<line class="grid" x1="{x}" y1="{_PAD_T}" x2="{x}" y2="{_H - _PAD_B}"/>')
        parts.append(f'<text class="tick" x="{x}" y="{_H - _PAD_B + 16}" text-anchor="middle">${10.0 ** decade:g}</text>')
    for i in range(5):
        q = y0 + (y1 - y0) * i / 4
        _, y = px(10.0 ** x0, q)
        parts.append(f'<line class="grid" x1="{_PAD_L}" y1="{y}" x2="{_W - _PAD_R}" y2="{y}"/>')
        parts.append(f'<text class="tick" x="{_PAD_L - 6}" y="{y + 4}" text-anchor="end">{q:.2f}</text>')
    parts.append(f'<text class="axis" x="{(_W + _PAD_L) / 2}" y="{_H - 6}" text-anchor="middle">'
                 'cost per 1k requests (USD, log scale)</text>')
    hull = baselines.get("single_model_hull", {}).get("hull", [])
    if hull:
        path = " ".join(f"{x},{y}" for x, y in (px(c, q) for c, q in hull))
        parts.append(f'<polyline class="hull" points="{path}"/>')
    for name, v in singles.items():
        x, y = px(v["cost_per_1k"], v["quality"])
        parts.append(f'<circle class="single" cx="{x}" cy="{y}" r="3"><title>{escape(name)}</title></circle>')
        parts.append(f'<text class="label" x="{x + 4}" y="{y - 4}">{escape(name.split("/")[-1])}</text>')
    for i, (name, entry) in enumerate(routers.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        path = " ".join(f"{x},{y}" for x, y in (px(c, q) for c, q in entry["frontier"]))
        parts.append(f'<polyline class="frontier" stroke="{colour}" points="{path}"><title>{escape(name)} frontier'
                     '</title></polyline>')
        x, y = px(entry["cost_per_1k"], entry["quality"])
        parts.append(f'<circle class="calibrated" fill="{colour}" cx="{x}" cy="{y}" r="5"><title>{escape(name)} '
                     f'calibrated: quality {entry["quality"]:.3f} at {usd(entry["cost_per_1k"])}/1k</title></circle>')
        parts.append(f'<text class="legend" fill="{colour}" x="{_W - _PAD_R - 4}" y="{_PAD_T + 14 + 14 * i}" '
                     f'text-anchor="end">{escape(name)}</text>')
    oracle = baselines.get("oracle")
    if oracle:
        x, y = px(oracle["cost_per_1k"], oracle["quality"])
        parts.append(f'<path class="oracle" d="M{x},{y - 6} L{x + 5},{y + 5} L{x - 6},{y - 2} L{x + 6},{y - 2} '
                     f'L{x - 5},{y + 5} Z"><title>oracle</title></path>')
    parts.append("</svg>")
    return Markup("".join(parts))
