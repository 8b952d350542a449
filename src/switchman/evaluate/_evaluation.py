"""`switchman eval` as a library call: routers and strategies over one outcome table → an `EvalReport`.

    plan = EvalPlan(routers=(Path("rb.safetensors"),), strategies=("cheapest", "learned"))
    report = evaluate_table(load_data([Path("data/routerbench")]), plan)
    report.to_dict()                                    # what `eval --json` writes

Router files are evaluated as they are; `learned` and `cascade` train in process on the train
split minus every evaluated prompt (or by K-fold CV with `cv`); cheapest, random and fixed:MODEL
run the routing core's own strategies. The plan is checked when it is made, before any data loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .._exceptions import ConfigError
from ..learn import Progress, ScoreTable, TrainedRouter, TrainSettings, prefixed, quiet
from ._cost_quality import evaluate_choices, single_model_points
from ._datasets import OutcomeTable
from ._report import (
    EvalReport,
    OperatingPoint,
    References,
    RouterPredictions,
    RouterResult,
    ScorePick,
    aiq_cost_max,
    baselines,
    evaluate_predictions,
    reference_points,
    sweep_points,
)
from ._run import cross_validate, predict_with_router, strategy_choices, train_and_predict

__all__ = ["Decisions", "EvalPlan", "evaluate_table", "training_part"]

@dataclass(frozen=True)
class EvalPlan:
    """What to evaluate and how: router files, named strategies, the split or K-fold CV, training settings.

    `aliases` renames router files' trained model names (trained → data name); `settings` trains
    the in-process `learned` and `cascade` routers, and its seed draws the random baselines.
    `reference` names the best single model (default: the best on the data's train split).
    `overlap` says what to do when a router file was trained on evaluated prompts (same id or same
    text): "refuse" (the default), "exclude" them from the evaluation (the report says how many), or
    "allow" them (every table is marked).
    """

    routers: tuple[Path, ...] = ()
    strategies: tuple[str, ...] = ()
    split: str | None = "test"
    cv: int | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)
    settings: TrainSettings = field(default_factory=TrainSettings)
    reference: str | None = None
    overlap: Literal["refuse", "exclude", "allow"] = "refuse"

    def __post_init__(self) -> None:
        if not self.routers and not self.strategies:
            raise ConfigError("give --router FILE or --strategy NAME (learned, cascade, cheapest, random, fixed:MODEL)")
        if "cascade" in self.strategies and self.cv:
            raise ConfigError("--strategy cascade is measured on a split (train → test), not with --cv")


@dataclass(frozen=True)
class Decisions:
    """Per evaluated prompt, what a router chose and what it predicted (`eval --decisions FILE`)."""

    router: str
    prompt_ids: tuple[str, ...]
    models: tuple[str, ...]
    predicted_quality: np.ndarray
    predicted_cost_usd: np.ndarray
    quality: np.ndarray
    cost_usd: np.ndarray

    @classmethod
    def of(cls, pred: RouterPredictions, table: OutcomeTable) -> Decisions:
        rows = np.arange(len(table))
        return cls(pred.name, table.prompt_ids, tuple(table.models[c] for c in pred.chosen),
                   pred.quality[rows, pred.chosen], pred.cost[rows, pred.chosen],
                   table.quality[rows, pred.chosen], table.cost_usd[rows, pred.chosen])


def training_part(everything: OutcomeTable, evaluation: OutcomeTable) -> OutcomeTable:
    """The train split minus every prompt being evaluated (by id or by text), so in-process training never sees them."""
    held_out = set(evaluation.prompt_ids)
    texts = {" ".join(p.split()) for p in evaluation.prompts}
    train = everything.where_split("train")
    train = train.subset([i not in held_out and " ".join(p.split()) not in texts
                          for i, p in zip(train.prompt_ids, train.prompts, strict=True)])
    if len(train) == 0:
        raise ConfigError("no training prompts outside the evaluated ones; evaluate --split test, or use --cv K")
    return train


def _load_router(path: Path, plan: EvalPlan) -> TrainedRouter:
    trained = TrainedRouter.load(path)
    trained_aliases = {a: b for a, b in plan.aliases.items() if a in trained.models}
    return trained.with_aliases(trained_aliases) if trained_aliases else trained


def _overlap(routers: Mapping[Path, TrainedRouter], evaluation: OutcomeTable,
             plan: EvalPlan) -> tuple[OutcomeTable, tuple[str, ...]]:
    """The evaluated prompts after the plan's overlap rule, and the notes every table carries."""
    seen = np.zeros(len(evaluation), dtype=bool)
    notes = []
    for path, trained in routers.items():
        if trained.training is None:
            continue
        mask = trained.training.overlap(evaluation.prompt_ids, evaluation.prompts)
        if mask.any():
            seen |= mask
            notes.append(f"{path}: {int(mask.sum())} of the {len(evaluation)} evaluated prompts were trained on "
                         f"(same id or same text; the router was trained on {trained.training.describe()})")
    if not notes:
        return evaluation, ()
    if plan.overlap == "refuse":
        raise ConfigError("; ".join(notes) + ". Numbers on them would not say what a user gets: evaluate on prompts the "
                          "router did not see, pass --exclude-overlap to leave those prompts out, or --allow-overlap "
                          "to report them anyway, marked")
    if plan.overlap == "exclude":
        return evaluation.subset(~seen), tuple(f"{n}: left out of the evaluation" for n in notes)
    return evaluation, tuple(f"{n}: these numbers include prompts it was trained on" for n in notes)


def _learned(everything: OutcomeTable, evaluation: OutcomeTable, plan: EvalPlan, say: Progress) -> RouterPredictions:
    if plan.cv:
        return cross_validate(evaluation, plan.settings, plan.cv, name=f"learned-cv{plan.cv}",
                              progress=prefixed(say, "learned: "))
    prediction, _ = train_and_predict(training_part(everything, evaluation), evaluation, plan.settings,
                                      name="learned", progress=prefixed(say, "learned: "))
    return prediction


def _references(everything: OutcomeTable, evaluation: OutcomeTable, plan: EvalPlan) -> References:
    """The best single model named on the training split (or by the plan), measured on the evaluated prompts."""
    if plan.reference is not None:
        return reference_points(evaluation, best_model=plan.reference, best_from="given (--reference)")
    if plan.split not in (None, "train") and "train" in everything.splits:
        train = everything.where_split("train").complete()
        if len(train):
            best = reference_points(train).best_model
            return reference_points(evaluation, best_model=best, best_from="the train split")
    return reference_points(evaluation, best_from="the evaluated prompts (no train split to choose it on)")


def _score_pick(point: OperatingPoint, evaluation: OutcomeTable, ref: References) -> ScorePick | None:
    """The model a user would pick by public score alone, among those the router's spend could buy."""
    singles = single_model_points(evaluation.quality, evaluation.cost_usd, evaluation.models)
    table = ScoreTable.bundled()
    scored = [(found.score, str(m)) for m, (cost, _) in singles.items()
              if cost <= point.cost_per_1k + 1e-12 and (found := table.find(str(m))) is not None]
    if not scored:
        return None
    score, model = max(scored)
    return ScorePick(model, score, OperatingPoint.at(singles[model], ref))


def evaluate_table(everything: OutcomeTable, plan: EvalPlan, *, progress: Progress = quiet) -> EvalReport:
    """Evaluate the plan's routers and strategies against the baselines on `everything`'s evaluated prompts."""
    say = progress
    evaluation = (everything.where_split(plan.split) if plan.split else everything).complete()
    if len(evaluation) == 0:
        raise ConfigError("no prompts to evaluate after filtering (every model must have answered a prompt)")
    routers_loaded = {path: _load_router(path, plan) for path in plan.routers}
    evaluation, warnings = _overlap(routers_loaded, evaluation, plan)
    ref = _references(everything, evaluation, plan)
    predictions = [predict_with_router(trained, evaluation, name=Path(path).stem, progress=say)
                   for path, trained in routers_loaded.items()]
    cascades: dict[str, RouterResult] = {}
    simple: dict[str, RouterResult] = {}
    for name in plan.strategies:
        if name == "cascade":
            from ._cascade_eval import cascade_report

            cascades = cascade_report(training_part(everything, evaluation), evaluation, plan.settings,
                                      progress=prefixed(say, "cascade: "))
        elif name == "learned":
            predictions.append(_learned(everything, evaluation, plan, say))
        else:
            choice = strategy_choices(name, evaluation, seed=plan.settings.seed)
            point = evaluate_choices(choice, evaluation.quality, evaluation.cost_usd)
            simple[name] = RouterResult(OperatingPoint.at(point, ref))
    singles = list(single_model_points(evaluation.quality, evaluation.cost_usd, evaluation.models).values())
    curves = [sweep_points(p, evaluation) for p in predictions] + [singles]
    cost_max = aiq_cost_max(curves)
    routers = {}
    for pred in predictions:
        at = OperatingPoint.at(evaluate_choices(pred.chosen, evaluation.quality, evaluation.cost_usd), ref)
        routers[pred.name] = evaluate_predictions(pred, evaluation, ref, cost_max, _score_pick(at, evaluation, ref))
    return EvalReport(
        n_prompts=len(evaluation), best_model=ref.best_model, most_expensive_model=ref.priciest_model,
        split=plan.split, cv=plan.cv, routers={**routers, **cascades, **simple},
        baselines=baselines(evaluation, ref, seed=plan.settings.seed, cost_max=cost_max),
        best_model_from=ref.best_from, aiq_cost_max=cost_max, warnings=warnings,
        decisions={p.name: Decisions.of(p, evaluation) for p in predictions},
    )
