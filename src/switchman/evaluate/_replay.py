"""Replay: what a trained router would have chosen for logged traffic, next to what actually ran.

`replay_choices` is pure arithmetic over arrays the caller supplies (prompts' features already
embedded by the router's embedder): the router's `predict` and the shared `select` rule choose a
model per request, exactly as the learned strategy does when serving. `replay_ledger` and
`replay_data` embed logged prompts or an outcome table's prompts first (never cached on disk). A replayed request costs the
ledger's input tokens at the chosen model's input price plus the predicted output tokens at its
output price; what actually ran costs what the ledger recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._exceptions import ConfigError, DatasetError
from ..learn import Progress, TrainedRouter, embed_in_batches, get_embedder, predicted_cost, quiet
from ..ledger import LedgerRecord
from ..routing import RouteRequest, detect_task, select
from ._datasets import OutcomeTable
from ._ledger_outcomes import NO_PROMPTS_HINT

__all__ = ["ReplayResult", "replay_choices", "replay_data", "replay_ledger"]


@dataclass(frozen=True)
class ReplayResult:
    """Per-request choices and costs of a replay, and the totals a report shows."""

    models: tuple[str, ...]
    chosen: np.ndarray  # column of `models` per request
    predicted_quality: np.ndarray  # of the chosen model, per request
    cost_usd: np.ndarray  # replayed cost per request
    actual_models: tuple[str | None, ...]
    actual_cost_usd: np.ndarray
    actual_predicted_quality: np.ndarray  # the router's prediction for what ran; NaN when it does not know it
    true_quality: np.ndarray | None = None  # when the data has the chosen model's outcome (--data)

    def summary(self) -> dict[str, Any]:
        """Totals, means and shares as a JSON-ready dict."""
        n = len(self.chosen)
        counts = np.bincount(self.chosen, minlength=len(self.models)) if n else np.zeros(len(self.models), int)
        total = float(self.cost_usd.sum())
        routed: dict[str, Any] = {
            "cost_usd": total,
            "cost_per_1k": 1000 * total / n if n else 0.0,
            "predicted_quality": float(self.predicted_quality.mean()) if n else None,
            "share": {m: int(c) / n for m, c in zip(self.models, counts, strict=True) if c} if n else {},
        }
        if self.true_quality is not None:
            known = ~np.isnan(self.true_quality)
            routed["true_quality"] = float(self.true_quality[known].mean()) if known.any() else None
        report: dict[str, Any] = {"requests": n, "router": routed}
        if any(m is not None for m in self.actual_models):
            actual_total = float(self.actual_cost_usd.sum())
            served: dict[str, int] = {}
            for m in self.actual_models:
                served[m or "?"] = served.get(m or "?", 0) + 1
            known_q = ~np.isnan(self.actual_predicted_quality)
            report["actual"] = {
                "cost_usd": actual_total,
                "cost_per_1k": 1000 * actual_total / n if n else 0.0,
                "predicted_quality": float(self.actual_predicted_quality[known_q].mean()) if known_q.any() else None,
                "share": {m: c / n for m, c in sorted(served.items(), key=lambda kv: -kv[1])},
            }
            report["saving_usd"] = actual_total - total
            report["saving_pct"] = 100 * (actual_total - total) / actual_total if actual_total > 0 else None
        return report


def replay_choices(
    trained: TrainedRouter,
    features: np.ndarray,
    input_tokens: np.ndarray,
    *,
    actual_models: Sequence[str | None] = (),
    actual_cost_usd: np.ndarray | None = None,
    prices: Mapping[str, tuple[float, float]] | None = None,
    models: Sequence[str] | None = None,
    true_quality: np.ndarray | None = None,
) -> ReplayResult:
    """Choose per request with the router's calibrated knob among `models` (default: all it knows).

    `prices` are (input, output) USD per 1M tokens by configured name; the router file's own
    fitted prices fill the rest. `true_quality` (n × len(models)) scores the choices when known.
    """
    names = trained.model_names
    keep = list(models) if models else list(names)
    unknown = [m for m in keep if m not in names]
    if unknown:
        raise ValueError(f"the router does not know {unknown}; its models are {list(names)}")
    columns = [names.index(m) for m in keep]
    stored = {names[i]: trained.prices[m] for i, m in enumerate(trained.models) if m in trained.prices}
    price_of = {**stored, **(prices or {})}
    missing = [m for m in keep if m not in price_of]
    if missing:
        raise ValueError(f"no price for {missing}: the router file has none and the configuration gives none")
    quality_all, out_all = trained.predict(features)
    quality, out = quality_all[:, columns], out_all[:, columns]
    tokens = np.asarray(input_tokens, dtype=np.float64)
    cost = predicted_cost(tokens[:, None], out, np.array([price_of[m] for m in keep]))
    chosen = select(quality, cost, trained.knob, trained.rule)
    rows = np.arange(len(chosen))
    n = len(chosen)
    actual = tuple(actual_models) if actual_models else (None,) * n
    index = {m: j for j, m in enumerate(names)}
    actual_q = np.array([quality_all[i, index[m]] if m in index else np.nan for i, m in enumerate(actual)])
    return ReplayResult(
        models=tuple(keep), chosen=chosen, predicted_quality=quality[rows, chosen], cost_usd=cost[rows, chosen],
        actual_models=actual,
        actual_cost_usd=np.zeros(n) if actual_cost_usd is None else np.asarray(actual_cost_usd, dtype=np.float64),
        actual_predicted_quality=actual_q.astype(np.float64),
        true_quality=None if true_quality is None else np.asarray(true_quality)[rows, chosen],
    )


def _features(trained: TrainedRouter, prompts: Sequence[str], tasks: Sequence[str | None],
              progress: Progress = quiet) -> np.ndarray:
    """Embeddings of the prompts (never cached on disk: logged prompts stay in the ledger only)."""
    embedder = get_embedder(trained.embedder)
    return trained.features(embed_in_batches(embedder, trained.texts(list(prompts)), progress=progress), list(tasks))


def replay_ledger(trained: TrainedRouter, records: Sequence[LedgerRecord], *, models: Sequence[str] = (),
                  prices: dict[str, tuple[float, float]] | None = None, source: str = "ledger",
                  progress: Progress = quiet) -> ReplayResult:
    """Replay answered requests that have a stored prompt."""
    rows = [r for r in records if r.status == "ok" and r.model is not None and r.prompt]
    if not rows:
        skipped = sum(1 for r in records if r.status == "ok" and not r.prompt)
        raise DatasetError(f"{source}: no answered request with a stored prompt to replay "
                           f"({len(records)} records, {skipped} answered without a prompt); {NO_PROMPTS_HINT}")
    # The task as serving resolves it (detected from the prompt), for routers trained with tasks.
    tasks = [detect_task(RouteRequest(prompt=r.prompt or "")) for r in rows]
    features = _features(trained, [r.prompt or "" for r in rows], tasks, progress)
    try:
        return replay_choices(
            trained, features, np.array([r.input_tokens for r in rows]), actual_models=[r.model for r in rows],
            actual_cost_usd=np.array([r.cost_usd for r in rows]), prices=prices, models=models or None,
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def replay_data(trained: TrainedRouter, table: OutcomeTable, models: Sequence[str], *,
                progress: Progress = quiet) -> ReplayResult:
    """Replay outcome data (its true quality scores the choices)."""
    keep = list(models) or [m for m in trained.model_names if m in table.models]
    missing = [m for m in keep if m not in table.models]
    if missing or not keep:
        raise ConfigError(f"the data has no outcomes for {missing or list(trained.model_names)}; "
                          f"its models are {list(table.models)}")
    features = _features(trained, table.prompts, table.tasks, progress)
    quality = table.select_models(keep).quality
    return replay_choices(trained, features, table.prompt_input_tokens(), models=keep, true_quality=quality)
