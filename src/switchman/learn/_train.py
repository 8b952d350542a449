"""Training: outcome data → a calibrated TrainedRouter.

1. Embed each prompt's window and focus (cached on disk), add task columns if asked.
2. K-fold out-of-fold predictions on the training prompts → sweep the selection knob and pick the
   one (or the mix of two) that meets the targets. Calibration never sees the test split.
3. Nested check of that calibration: for each fold, the knob is chosen on the other folds' own
   out-of-fold predictions and applied to the fold; the mean miss (achieved − target) is the bias
   calibration has on prompts it did not see. The final knob is chosen for target − bias, the bias
   shrunk toward 0 by its own standard error (`shrunk_bias`): five fold misses of a few hundred
   prompts each are noisy, and a full correction by a noisy estimate moved the target further from
   where it landed on held-out folds (chosen by CV inside the train splits, docs/benchmarks.md).
4. Fit the predictor (and the ability model that places unseen models) on all training prompts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .._exceptions import DatasetError
from .._tokens import count_tokens_for_routing
from ..routing import RouteRequest, SelectionRule
from ._ability import SCORE_CENTER, SCORE_SCALE
from ._ability_predictor import AbilityPredictor
from ._artifact import DEFAULT_WINDOW, TrainedRouter
from ._cache import embed_cached
from ._calibrate import CalibrationResult, Target, calibrate, sweep
from ._embedders import get_embedder
from ._features import Focus, prompt_texts, task_features
from ._knn import KNNPredictor
from ._knob import Knob, prompt_draws
from ._predictors import QualityPredictor, build_predictor, shared_lengths
from ._progress import Progress, quiet
from ._scores import ScoreTable
from ._training_record import TrainingRecord

__all__ = [
    "DEFAULT_EMBEDDER",
    "OutcomeData",
    "TrainSettings",
    "filled_input_tokens",
    "fit_prices",
    "model_z",
    "out_of_fold",
    "predicted_cost",
    "prompt_texts",
    "routing_input_tokens",
    "shrunk_bias",
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
    #: kNN + factorisation: the best balance in 5-fold CV inside both train splits (docs/benchmarks.md).
    #: `ability` (parameters only, shippable) is the bundled router's and `train --from-ledger`'s.
    algorithm: str = "ensemble"
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
    #: Correct the target by the bias nested cross-validation measures (step 3 of the module docstring).
    nested: bool = True
    #: The embedder's slice of each prompt: (head, tail) characters.
    window: tuple[int, int] = DEFAULT_WINDOW
    #: A public-score file newer than the bundled one (`ScoreTable.from_csv`); None: the bundled table.
    score_file: str | None = None


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
    """Feature rows for every prompt in `data` (what `TrainedRouter.texts` gives the embedder)."""
    embedder = get_embedder(settings.embedder)
    x = embed_cached(embedder, prompt_texts(data.prompts, settings.window, settings.focus), use_cache=use_cache,
                     progress=progress)
    if settings.use_task and vocabulary:
        x = np.hstack([x, task_features(data.tasks, vocabulary, settings.task_weight)])
    return x


def routing_input_tokens(prompts: Sequence[str]) -> np.ndarray:
    """Input tokens of each prompt as serving counts them for a one-message request (the routing count)."""
    return np.array([RouteRequest.from_prompt(p, count_tokens=count_tokens_for_routing).input_tokens
                     for p in prompts], dtype=np.float64)


def model_z(models: Sequence[str], table: ScoreTable) -> np.ndarray:
    """Each model's standardised public score, NaN where the table does not know it."""
    found = [table.find(m) for m in models]
    return np.array([(f.score - SCORE_CENTER) / SCORE_SCALE if f is not None else np.nan for f in found])


def _fit(settings: TrainSettings, x: np.ndarray, quality: np.ndarray, output_tokens: np.ndarray, z: np.ndarray,
         inputs: np.ndarray, prior: TrainedRouter | None = None,
         public_z: np.ndarray | None = None) -> QualityPredictor:
    """A fitted predictor; `public_z` (default `z`) is what an ability predictor's placement offset is measured
    against."""
    predictor = build_predictor(settings.algorithm, settings.params)
    if isinstance(predictor, AbilityPredictor):
        if prior is not None and prior.placement is not None:  # keep the prior's prompt heads; fit abilities only
            heads = prior.placement.ability
            predictor.ability.w_easy, predictor.ability.w_slope, predictor.ability.bias = (
                heads.w_easy, heads.w_slope, heads.bias)
        return predictor.fit(x, quality, output_tokens, z=z, input_tokens=inputs, fixed_heads=prior is not None,
                             public_z=public_z)
    predictor.fit(x, quality, output_tokens)
    return predictor


def out_of_fold(
    x: np.ndarray, quality: np.ndarray, output_tokens: np.ndarray, settings: TrainSettings,
    z: np.ndarray | None = None, inputs: np.ndarray | None = None, prior: TrainedRouter | None = None,
    rows: np.ndarray | None = None, seed: int | None = None, progress: Progress = quiet,
) -> tuple[np.ndarray, np.ndarray]:
    """K-fold out-of-fold predicted quality and output tokens for `rows` (default: every row; folds counted)."""
    rows = np.arange(x.shape[0]) if rows is None else rows
    z = np.full(quality.shape[1], np.nan) if z is None else z
    inputs = np.zeros(x.shape[0]) if inputs is None else inputs
    n = len(rows)
    order = np.random.default_rng(settings.seed if seed is None else seed).permutation(n)
    q_hat = np.zeros((n, quality.shape[1]))
    out_hat = np.zeros((n, quality.shape[1]))
    folds = np.array_split(order, max(settings.folds, 2))
    message = f"calibrating ({len(folds)}-fold)"
    for done, fold in enumerate(folds):
        progress(message, done, len(folds))
        rest = rows[np.setdiff1d(np.arange(n), fold)]
        predictor = _fit(settings, x[rest], quality[rest], output_tokens[rest], z, inputs[rest], prior)
        lengths = shared_lengths(predictor)
        if lengths is None:
            lengths = KNNPredictor(k=settings.length_k).fit(x[rest], quality[rest], output_tokens[rest])
        if isinstance(predictor, AbilityPredictor):
            q_hat[fold], out_hat[fold] = predictor.predict_with_lengths(x[rows[fold]])
        else:
            q_hat[fold], out_hat[fold] = predictor.predict(x[rows[fold]]), lengths.predict_output_tokens(x[rows[fold]])
    progress(message, len(folds), len(folds))
    return q_hat, out_hat


@dataclass(frozen=True)
class _Calibration:
    """The true outcomes calibration scores knobs against, and the routing inputs it sweeps them with."""

    quality: np.ndarray  # NaN where a prompt has no outcome for a model (or imputed)
    true_cost: np.ndarray
    inputs: np.ndarray  # routing input tokens per prompt
    prices: np.ndarray  # (models × 2)
    draws: np.ndarray  # prompt_draw per prompt
    models: tuple[str, ...]

    def result(self, rows: np.ndarray, q_hat: np.ndarray, out_hat: np.ndarray, settings: TrainSettings,
               targets: Sequence[Target]) -> CalibrationResult:
        """The knob meeting `targets` on `rows`, scored with their true outcomes."""
        quality, true_cost = self.quality[rows], self.true_cost[rows]
        c_hat = predicted_cost(self.inputs[rows, None], out_hat, self.prices)
        if settings.impute_missing:
            quality = np.where(np.isnan(quality), np.clip(q_hat, 0.0, 1.0), quality)
            true_cost = np.where(np.isnan(true_cost), c_hat, true_cost)
        present = ~np.isnan(quality)
        # Each prompt is routed among the models with an outcome for it (ineligible cells carry −inf):
        # with several datasets no prompt has every model, so calibration must not need complete rows.
        points = sweep(np.where(present, q_hat, -np.inf), np.where(present, c_hat, 0.0),
                       np.where(present, quality, 0.0), np.where(present, true_cost, 0.0), settings.rule)
        return calibrate(points, targets, self.models, _best_single_model(quality)[0])

    def achieved(self, rows: np.ndarray, q_hat: np.ndarray, out_hat: np.ndarray, knob: Knob,
                 settings: TrainSettings) -> float:
        """Quality of routing `rows` with `knob`, relative to their best single model's (as calibration measures it)."""
        quality = self.quality[rows]
        present = ~np.isnan(quality)
        c_hat = predicted_cost(self.inputs[rows, None], out_hat, self.prices)
        chosen = knob.choose(np.where(present, q_hat, -np.inf), c_hat, settings.rule, self.draws[rows])
        picked = quality[np.arange(len(rows)), chosen]
        return float(np.nanmean(picked)) / _best_single_model(quality)[0]


def shrunk_bias(bias: float, standard_error: float) -> float:
    """The bias to correct for: `bias` shrunk toward 0 by its standard error (positive-part James–Stein).

    A bias within one standard error of 0 is not corrected at all; a large, well-measured one almost fully.
    """
    if bias == 0 or not (math.isfinite(bias) and math.isfinite(standard_error)):
        return 0.0  # nothing measured (a fold with no outcome for its picks): no correction, never a NaN target
    return bias * max(0.0, 1.0 - (standard_error / bias) ** 2)


def _nested_bias(x: np.ndarray, data: OutcomeData, settings: TrainSettings, cal: _Calibration, z: np.ndarray,
                 q_oof: np.ndarray, out_oof: np.ndarray, prior: TrainedRouter | None,
                 progress: Progress = quiet) -> tuple[float, float] | None:
    """Mean (achieved − target) of the quality target over folds calibrated without them, and its standard
    error over the folds (None: not measured)."""
    quality_targets = [t for t in settings.targets if t.kind == "quality"]
    if not settings.nested or len(settings.targets) != 1 or not quality_targets or settings.impute_missing:
        return None
    target = quality_targets[0].value
    n = x.shape[0]
    order = np.random.default_rng(settings.seed).permutation(n)
    misses, sizes = [], []
    folds = np.array_split(order, max(settings.folds, 2))
    for k, fold in enumerate(folds):
        progress("nested calibration check", k, len(folds))
        rest = np.setdiff1d(np.arange(n), fold)
        q_in, out_in = out_of_fold(x, data.quality, data.output_tokens, settings, z, cal.inputs, prior, rows=rest,
                                   seed=settings.seed + 1 + k)
        inner = cal.result(rest, q_in, out_in, settings, settings.targets)
        misses.append(cal.achieved(fold, q_oof[fold], out_oof[fold], inner.knob, settings) - target)
        sizes.append(len(fold))
    progress("nested calibration check", len(folds), len(folds))
    standard_error = float(np.std(misses, ddof=1) / np.sqrt(len(misses)))
    return float(np.dot(misses, sizes) / n), standard_error


def train_router(
    data: OutcomeData,
    settings: TrainSettings,
    *,
    source: Sequence[str] = (),
    split: str | None = None,
    use_cache: bool = True,
    prior: TrainedRouter | None = None,
    progress: Progress = quiet,
) -> TrainedRouter:
    """Train and calibrate a router on all of `data` (pass the training split only).

    `prior` (the bundled router, for `train --from-ledger`) lends its prompt-difficulty heads, so
    a few labelled requests place their models on its ability scale.
    """
    say = progress
    started = time.perf_counter()
    if len(data.prompt_ids) < max(settings.folds, 2) * 2:
        raise DatasetError(f"too few prompts to train ({len(data.prompt_ids)}); need at least {settings.folds * 2}")
    vocabulary = tuple(sorted({t for t in data.tasks if t})) if settings.use_task else ()
    x = features_for(data, settings, vocabulary, use_cache=use_cache, progress=say)
    prices = fit_prices(data)
    price_matrix = np.array([prices[m] for m in data.models])
    public_z = _public_z(data.models, settings)
    z = _abilities_to_fit(data.models, settings, prior, public_z)
    inputs = routing_input_tokens(data.prompts)
    true_cost = np.where(np.isnan(data.cost_usd),
                         predicted_cost(filled_input_tokens(data), data.output_tokens, price_matrix), data.cost_usd)
    cal = _Calibration(data.quality, true_cost, inputs, price_matrix, prompt_draws(data.prompts), tuple(data.models))

    q_hat, out_hat = out_of_fold(x, data.quality, data.output_tokens, settings, z, inputs, prior, progress=say)
    nested = _nested_bias(x, data, settings, cal, z, q_hat, out_hat, prior, progress=say)
    targets = settings.targets
    bias: float | None = None
    if nested is not None:
        bias = shrunk_bias(*nested)
        say(f"nested check: calibration misses its target by {nested[0]:+.4f} (standard error {nested[1]:.4f}); "
            f"correcting by {bias:+.4f}")
        targets = (Target("quality", settings.targets[0].value - bias),)
    result = cal.result(np.arange(len(data.prompt_ids)), q_hat, out_hat, settings, targets)

    say("fitting on all prompts")
    predictor = _fit(settings, x, data.quality, data.output_tokens, z, inputs, prior, public_z)
    lengths = shared_lengths(predictor) or KNNPredictor(k=settings.length_k).fit(x, data.quality, data.output_tokens)
    placement = (predictor if isinstance(predictor, AbilityPredictor)
                 else _placement(settings, x, data, z, inputs, public_z))
    summary = _summary(data, settings, source, public_z, result, bias, targets, prior, started)
    if nested is not None:
        summary["calibration"]["nested_miss"], summary["calibration"]["nested_miss_se"] = nested
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
        placement=placement,
        training=TrainingRecord.of(data.prompt_ids, data.prompts, datasets=source, split=split),
        window=settings.window,
    )


def _public_z(models: Sequence[str], settings: TrainSettings) -> np.ndarray:
    """Each model's standardised public score from the settings' score table (NaN: none)."""
    table = ScoreTable.from_csv(settings.score_file) if settings.score_file else ScoreTable.bundled()
    return model_z(models, table)


def _abilities_to_fit(models: Sequence[str], settings: TrainSettings, prior: TrainedRouter | None,
                      public_z: np.ndarray | None = None) -> np.ndarray:
    """Standardised abilities the fit ties each model to: the prior router's fitted one, else its public score."""
    z = _public_z(models, settings) if public_z is None else np.asarray(public_z, dtype=np.float64)
    if prior is not None:
        known = prior.abilities()
        z = np.array([(known[m] - SCORE_CENTER) / SCORE_SCALE if m in known else v for m, v in zip(models, z,
                                                                                                strict=True)])
    return z


def _placement(settings: TrainSettings, x: np.ndarray, data: OutcomeData, z: np.ndarray,
               inputs: np.ndarray, public_z: np.ndarray | None = None) -> AbilityPredictor:
    """The ability model a kNN/MF router carries to place models it never saw."""
    placement = build_predictor("ability", {})
    assert isinstance(placement, AbilityPredictor)
    return placement.fit(x, data.quality, data.output_tokens, z=z, input_tokens=inputs, public_z=public_z)


def _summary(data: OutcomeData, settings: TrainSettings, source: Sequence[str], public_z: np.ndarray,
             result: CalibrationResult, bias: float | None, targets: Sequence[Target], prior: TrainedRouter | None,
             started: float) -> dict[str, Any]:
    """The training summary a router file keeps (shown by `train`, read by `eval` and profiles)."""
    best_quality, best = _best_single_model(data.quality)
    return {
        "datasets": list(source),
        "n_prompts": len(data.prompt_ids),
        "prompts_per_model": {m: int((~np.isnan(data.quality[:, j])).sum()) for j, m in enumerate(data.models)},
        "tasks": sorted({t for t in data.tasks if t}),
        "best_model": data.models[best],
        "best_model_quality": best_quality,
        "public_scores": {m: (None if np.isnan(v) else float(SCORE_CENTER + SCORE_SCALE * v))
                          for m, v in zip(data.models, public_z, strict=True)},
        "calibration": {
            "targets": [str(t) for t in settings.targets],
            "nested_bias": bias,
            "calibrated_for": [str(t) for t in targets],
            "knob": result.knob.to_json(),
            "met": result.met,
            "quality": result.quality,
            "rel_quality": result.rel_quality,
            "cost_per_1k": result.cost_per_1k,
            "folds": settings.folds,
        },
        "started_from": None if prior is None else prior.summary.get("name", "a prior router"),
        "train_seconds": round(time.perf_counter() - started, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
