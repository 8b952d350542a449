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

from .._exceptions import ConfigError
from ..learn import Progress, TrainedRouter, TrainSettings, prefixed, quiet
from ._cost_quality import evaluate_choices
from ._datasets import OutcomeTable
from ._report import (
    EvalReport,
    OperatingPoint,
    RouterPredictions,
    RouterResult,
    baselines,
    evaluate_predictions,
    reference_points,
)
from ._run import cross_validate, predict_with_router, strategy_choices, train_and_predict

__all__ = ["EvalPlan", "evaluate_table", "training_part"]

@dataclass(frozen=True)
class EvalPlan:
    """What to evaluate and how: router files, named strategies, the split or K-fold CV, training settings.

    `aliases` renames router files' trained model names (trained → data name); `settings` trains
    the in-process `learned` and `cascade` routers, and its seed draws the random baselines.
    """

    routers: tuple[Path, ...] = ()
    strategies: tuple[str, ...] = ()
    split: str | None = "test"
    cv: int | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)
    settings: TrainSettings = field(default_factory=TrainSettings)

    def __post_init__(self) -> None:
        if not self.routers and not self.strategies:
            raise ConfigError("give --router FILE or --strategy NAME (learned, cascade, cheapest, random, fixed:MODEL)")
        if "cascade" in self.strategies and self.cv:
            raise ConfigError("--strategy cascade is measured on a split (train → test), not with --cv")


def training_part(everything: OutcomeTable, evaluation: OutcomeTable) -> OutcomeTable:
    """The train split minus every prompt being evaluated, so in-process training never sees them."""
    held_out = set(evaluation.prompt_ids)
    train = everything.where_split("train")
    train = train.subset([p not in held_out for p in train.prompt_ids])
    if len(train) == 0:
        raise ConfigError("no training prompts outside the evaluated ones; evaluate --split test, or use --cv K")
    return train


def _router_file(path: Path, evaluation: OutcomeTable, aliases: Mapping[str, str], say: Progress) -> RouterPredictions:
    trained = TrainedRouter.load(path)
    trained_aliases = {a: b for a, b in aliases.items() if a in trained.models}
    if trained_aliases:
        trained = trained.with_aliases(trained_aliases)
    return predict_with_router(trained, evaluation, name=Path(path).stem, progress=say)


def _learned(everything: OutcomeTable, evaluation: OutcomeTable, plan: EvalPlan, say: Progress) -> RouterPredictions:
    if plan.cv:
        return cross_validate(evaluation, plan.settings, plan.cv, name=f"learned-cv{plan.cv}",
                              progress=prefixed(say, "learned: "))
    prediction, _ = train_and_predict(training_part(everything, evaluation), evaluation, plan.settings,
                                      name="learned", progress=prefixed(say, "learned: "))
    return prediction


def evaluate_table(everything: OutcomeTable, plan: EvalPlan, *, progress: Progress = quiet) -> EvalReport:
    """Evaluate the plan's routers and strategies against the baselines on `everything`'s evaluated prompts."""
    say = progress
    evaluation = (everything.where_split(plan.split) if plan.split else everything).complete()
    if len(evaluation) == 0:
        raise ConfigError("no prompts to evaluate after filtering (every model must have answered a prompt)")
    ref = reference_points(evaluation)
    predictions = [_router_file(path, evaluation, plan.aliases, say) for path in plan.routers]
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
    routers = {p.name: evaluate_predictions(p, evaluation, ref) for p in predictions}
    return EvalReport(
        n_prompts=len(evaluation), best_model=ref.best_model, most_expensive_model=ref.priciest_model,
        split=plan.split, cv=plan.cv, routers={**routers, **cascades, **simple},
        baselines=baselines(evaluation, ref, seed=plan.settings.seed),
    )
