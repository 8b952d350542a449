"""Training: outcome data → a calibrated TrainedRouter.

1. Embed each prompt's focus text (cached on disk), add task columns if asked.
2. K-fold out-of-fold predictions on the training prompts → sweep the selection knob and pick the
   one that meets the targets (calibration never sees the test split).
3. Fit the predictor on all training prompts and store everything in one TrainedRouter.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .._exceptions import DatasetError
from ..routing import SelectionRule
from ._artifact import TrainedRouter, build_predictor, shared_knn
from ._cache import embed_cached
from ._calibrate import Target, calibrate, sweep
from ._embedders import get_embedder
from ._features import Focus, focus_text, task_features
from ._progress import Progress, quiet
from ._knn import KNNPredictor

__all__ = [
    "DEFAULT_EMBEDDER",
    "OutcomeData",
    "TrainSettings",
    "filled_input_tokens",
    "fit_prices",
    "out_of_fold",
    "predicted_cost",
    "train_router",
]

DEFAULT_EMBEDDER = "wordllama-256"


class OutcomeData(Protocol):
    """What training reads from an outcome table (switchman.evaluate.OutcomeTable fits)."""

    @property
    def prompt_ids(self) -> tuple[str, ...]: ...
    @property
    def prompts(self) -> tuple[str, ...]: ...
    @property
    def tasks(self) -> tuple[str | None, ...]: ...
    @property
    def models(self) -> tuple[str, ...]: ...
    @property
    def quality(self) -> np.ndarray: ...
    @property
    def input_tokens(self) -> np.ndarray: ...
    @property
    def output_tokens(self) -> np.ndarray: ...
    @property
    def cost_usd(self) -> np.ndarray: ...


@dataclass(frozen=True)
class TrainSettings:
    """How to train; every choice is recorded in the router file's summary."""

    embedder: str = DEFAULT_EMBEDDER
    algorithm: str = "knn"
    params: dict[str, Any] = field(default_factory=dict)
    focus: Focus = "full"
    use_task: bool = False
    task_weight: float = 1.0
    rule: SelectionRule = "tradeoff"
    targets: tuple[Target, ...] = (Target("quality", 0.95),)
    folds: int = 5
    seed: int = 0
    length_k: int = 40
    #: Calibrate with the predictor's out-of-fold guesses standing in for missing outcomes. Logged
    #: traffic has one outcome per prompt (the model that served it), so without this every knob
    #: would choose that model and calibration would learn nothing.
    impute_missing: bool = False


def fit_prices(data: OutcomeData) -> dict[str, tuple[float, float]]:
    """Per-model (input, output) USD per 1M tokens that best explain the data's costs."""
    prices: dict[str, tuple[float, float]] = {}
    for j, model in enumerate(data.models):
        rows = ~(np.isnan(data.cost_usd[:, j]) | np.isnan(data.input_tokens[:, j]) | np.isnan(data.output_tokens[:, j]))
        if rows.sum() < 2:
            raise DatasetError(f"model {model!r}: too few priced outcomes to learn its prices")
        a = np.column_stack([data.input_tokens[rows, j], data.output_tokens[rows, j]])
        coef, *_ = np.linalg.lstsq(a, data.cost_usd[rows, j] * 1e6, rcond=None)
        prices[model] = (max(float(coef[0]), 0.0), max(float(coef[1]), 0.0))
    return prices


def predicted_cost(input_tokens: np.ndarray, output_tokens: np.ndarray, prices: np.ndarray) -> np.ndarray:
    """USD per call, (n × m), from known input tokens, predicted output tokens and (m × 2) prices."""
    return np.asarray((input_tokens * prices[None, :, 0] + output_tokens * prices[None, :, 1]) / 1e6)


def filled_input_tokens(data: OutcomeData) -> np.ndarray:
    """Input tokens per (prompt, model); a missing cell takes the prompt's count on another model."""
    per_prompt = np.nanmax(np.where(np.isnan(data.input_tokens), -np.inf, data.input_tokens), axis=1)
    per_prompt = np.where(np.isfinite(per_prompt), per_prompt, 0.0)
    return np.where(np.isnan(data.input_tokens), per_prompt[:, None], data.input_tokens)


def _best_single_model(quality: np.ndarray) -> tuple[float, int]:
    """The best single model's mean quality, and its column, for the quality target.

    Prompts are grouped by which models answered them (one group per dataset when several are
    combined); each group's best single model is the one with the highest mean quality on it. The
    reference is those means weighted by group size; the column is the largest group's best model.
    """
    present = ~np.isnan(quality)
    patterns, group = np.unique(present, axis=0, return_inverse=True)
    group = group.reshape(-1)
    total, best, largest = 0.0, 0, 0
    for g, pattern in enumerate(patterns):
        rows = group == g
        means = np.where(pattern, np.where(present[rows], quality[rows], 0.0).mean(axis=0), -np.inf)
        j = int(np.argmax(means))
        total += float(means[j]) * int(rows.sum())
        if rows.sum() > largest:
            best, largest = j, int(rows.sum())
    return total / len(quality), best


def features_for(
    data: OutcomeData, settings: TrainSettings, vocabulary: Sequence[str], *, use_cache: bool = True,
    progress: Progress = quiet,
) -> np.ndarray:
    """Feature rows for every prompt in `data`."""
    embedder = get_embedder(settings.embedder)
    x = embed_cached(embedder, [focus_text(p, settings.focus) for p in data.prompts], use_cache=use_cache,
                     progress=progress)
    if settings.use_task and vocabulary:
        x = np.hstack([x, task_features(data.tasks, vocabulary, settings.task_weight)])
    return x


def out_of_fold(
    x: np.ndarray, quality: np.ndarray, output_tokens: np.ndarray, settings: TrainSettings, *,
    progress: Progress = quiet,
) -> tuple[np.ndarray, np.ndarray]:
    """K-fold out-of-fold predicted quality and output tokens for every row (folds counted in `progress`)."""
    n = x.shape[0]
    folds = np.array_split(np.random.default_rng(settings.seed).permutation(n), max(settings.folds, 2))
    q_hat = np.zeros_like(quality, dtype=np.float64)
    out_hat = np.zeros_like(output_tokens, dtype=np.float64)
    message = f"calibrating ({len(folds)}-fold)"
    for done, fold in enumerate(folds):
        progress(message, done, len(folds))
        rest = np.setdiff1d(np.arange(n), fold)
        predictor = build_predictor(settings.algorithm, settings.params).fit(x[rest], quality[rest], output_tokens[rest])
        lengths = KNNPredictor(k=settings.length_k).fit(x[rest], quality[rest], output_tokens[rest])
        q_hat[fold] = predictor.predict(x[fold])
        out_hat[fold] = lengths.predict_output_tokens(x[fold])
    progress(message, len(folds), len(folds))
    return q_hat, out_hat


def train_router(
    data: OutcomeData,
    settings: TrainSettings,
    *,
    source: Sequence[str] = (),
    use_cache: bool = True,
    progress: Progress = quiet,
) -> TrainedRouter:
    """Train and calibrate a router on all of `data` (pass the training split only)."""
    say = progress
    started = time.perf_counter()
    if len(data.prompt_ids) < max(settings.folds, 2) * 2:
        raise DatasetError(f"too few prompts to train ({len(data.prompt_ids)}); need at least {settings.folds * 2}")
    vocabulary = tuple(sorted({t for t in data.tasks if t})) if settings.use_task else ()
    x = features_for(data, settings, vocabulary, use_cache=use_cache, progress=say)
    prices = fit_prices(data)
    price_matrix = np.array([prices[m] for m in data.models])
    inputs = filled_input_tokens(data)

    q_hat, out_hat = out_of_fold(x, data.quality, data.output_tokens, settings, progress=say)
    c_hat = predicted_cost(inputs, out_hat, price_matrix)
    true_cost = np.where(np.isnan(data.cost_usd), predicted_cost(inputs, data.output_tokens, price_matrix), data.cost_usd)
    # Each prompt is routed among the models with an outcome for it (ineligible cells carry −inf):
    # with several datasets no prompt has every model, so calibration must not need complete rows.
    quality = data.quality
    if settings.impute_missing:
        quality = np.where(np.isnan(quality), np.clip(q_hat, 0.0, 1.0), quality)
        true_cost = np.where(np.isnan(true_cost), c_hat, true_cost)
    present = ~np.isnan(quality)
    points = sweep(np.where(present, q_hat, -np.inf), np.where(present, c_hat, 0.0),
                   np.where(present, quality, 0.0), np.where(present, true_cost, 0.0), settings.rule)
    best_quality, best = _best_single_model(quality)
    result = calibrate(points, settings.targets, data.models, best_quality)

    say("fitting on all prompts")
    predictor = build_predictor(settings.algorithm, settings.params).fit(x, data.quality, data.output_tokens)
    lengths = shared_knn(predictor) or KNNPredictor(k=settings.length_k).fit(x, data.quality, data.output_tokens)
    seconds = time.perf_counter() - started
    summary = {
        "datasets": list(source),
        "n_prompts": len(data.prompt_ids),
        "prompts_per_model": {m: int((~np.isnan(data.quality[:, j])).sum()) for j, m in enumerate(data.models)},
        "tasks": sorted({t for t in data.tasks if t}),
        "best_model": data.models[best],
        "calibration": {
            "targets": [str(t) for t in settings.targets],
            "knob": result.knob,
            "met": result.met,
            "quality": result.quality,
            "rel_quality": result.rel_quality,
            "cost_per_1k": result.cost_per_1k,
            "folds": settings.folds,
        },
        "train_seconds": round(seconds, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return TrainedRouter(
        embedder=get_embedder(settings.embedder).name,  # canonical name, never an alias
        models=tuple(data.models),
        algorithm=settings.algorithm,
        predictor=predictor,
        lengths=lengths,
        focus=settings.focus,
        task_vocabulary=vocabulary,
        task_weight=settings.task_weight if settings.use_task else 0.0,
        rule=settings.rule,
        knob=result.knob,
        target=",".join(str(t) for t in settings.targets),
        prices=prices,
        summary=summary,
    )
