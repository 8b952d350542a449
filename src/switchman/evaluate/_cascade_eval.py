"""`switchman eval --strategy cascade`: cascade vs the single-shot learned router on one split.

Everything the cascade uses is fitted on the training split: the learned router (its test-split
predictions order the ladders), out-of-fold predictions on the training prompts (to fit the
acceptance predictor and to calibrate the cascade's threshold without seeing the test split).
The single-shot router is the same trained router, evaluated as `eval --strategy learned` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ..learn import (
    Progress,
    TrainSettings,
    features_for,
    filled_input_tokens,
    fit_acceptance,
    out_of_fold,
    predicted_cost,
    quiet,
    train_router,
)
from ._cascade_sim import SimPoint, calibrate_cascade, sweep_cascade
from ._cost_quality import cost_at_quality
from ._datasets import OutcomeTable
from ._report import (
    CascadeCalibration,
    EqualQuality,
    OperatingPoint,
    References,
    RouterResult,
    evaluate_predictions,
    frontier_of,
    reference_points,
)
from ._run import predict_with_router

__all__ = ["cascade_report"]



def _entry(points: Sequence[SimPoint], chosen: SimPoint, ref: References, label: str) -> RouterResult:
    return RouterResult(
        point=OperatingPoint.at((chosen.cost_per_1k, chosen.quality), ref),
        frontier=frontier_of([(p.cost_per_1k, p.quality) for p in points], ref),
        calibrated=CascadeCalibration(chosen.params, chosen.quality, chosen.cost_per_1k, chosen.attempts,
                                      chosen.first_rung_share),
        check=label,
    )


def _same_params(points: Sequence[SimPoint], chosen: SimPoint) -> SimPoint:
    return next(p for p in points if p.params == chosen.params)


def cascade_report(
    train: OutcomeTable, test: OutcomeTable, settings: TrainSettings, *, max_attempts: Sequence[int] = (2, 3),
    progress: Progress = quiet,
) -> dict[str, RouterResult]:
    """Router entries for `eval`: the single-shot learned router and the cascade with each check."""
    say = progress
    trained = train_router(train, settings, source=[train.source], progress=say)
    ref = reference_points(test)
    single_pred = predict_with_router(trained, test, name="learned (single-shot)", progress=say)
    single = evaluate_predictions(single_pred, test, ref)

    x = features_for(train, settings, trained.task_vocabulary, progress=say)
    q_oof, out_oof = out_of_fold(x, train.quality, train.output_tokens, settings, progress=say)
    prices = np.array([trained.prices[m] for m in train.models])
    c_oof = predicted_cost(filled_input_tokens(train), out_oof, prices)
    acceptance = fit_acceptance(q_oof, train.output_tokens, train.quality, train.models)
    full = ~np.isnan(train.quality).any(axis=1)
    train_best = reference_points(train.subset(full)).best_quality
    target = next((t.value for t in settings.targets if t.kind == "quality"), 0.95)

    entries: dict[str, RouterResult] = {"learned (single-shot)": single}
    assert single.frontier is not None  # a learned router always has one
    for check, label in (("learned", "cascade (learned check)"), ("oracle", "cascade (oracle check, upper bound)")):
        say(f"{check} check")
        score = acceptance.score if check == "learned" else None
        on_train = sweep_cascade(q_oof[full], c_oof[full], train.models, train.quality[full], train.cost_usd[full],
                                 train.output_tokens[full], check=check, score=score, max_attempts=max_attempts)
        chosen_train = calibrate_cascade(on_train, target * train_best)
        on_test = sweep_cascade(single_pred.quality, single_pred.cost, test.models, test.quality, test.cost_usd,
                                test.output_tokens, check=check, score=score, max_attempts=max_attempts)
        entry = _entry(on_test, _same_params(on_test, chosen_train), ref, label)
        xy = [(p.cost_per_1k, p.quality) for p in on_test]
        equal = EqualQuality(
            single_shot_cost_at_cascade_quality=cost_at_quality(list(single.frontier.points), entry.point.quality),
            cascade_cost_at_single_shot_quality=cost_at_quality(xy, single.point.quality),
            single_shot_quality=single.point.quality, single_shot_cost_per_1k=single.point.cost_per_1k,
        )
        entries[label] = replace(entry, equal_quality=equal)
    return entries
