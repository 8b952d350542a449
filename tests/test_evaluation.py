"""`eval` counts only what a user gets: overlap refused, references from train, AIQ as RouterBench's
code normalises it, achieved − target, per-prompt decisions, and the same decisions serving makes."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from switchman import ConfigError, Router
from switchman.cli._eval import write_decisions
from switchman.evaluate import EvalPlan, OutcomeTable, aiq, aiq_cost_max, evaluate_table, predict_with_router
from switchman.learn import TrainSettings, train_router
from switchman.learn._artifact import TrainedRouter

# --------------------------------------------------------------------------- AIQ, as RouterBench's code


def test_aiq_is_normalised_over_the_largest_cost_among_the_compared_curves() -> None:
    # RouterBench's calc_AIQ: each curve's non-decreasing convex hull is extended flat to the largest
    # cost any compared hull reaches, and its area is divided by that cost.
    router = [(1.0, 0.5), (3.0, 0.8), (5.0, 0.7)]  # its hull ends at (3, 0.8): quality falls after it
    singles = [(2.0, 0.6), (4.0, 0.7)]  # its hull ends at (4, 0.7)
    cost_max = aiq_cost_max([router, singles])
    assert cost_max == 4.0  # not 5: the router's dearer point lowers quality and is off its hull
    # Router: 0 on [0, 1), 0.5 → 0.8 on [1, 3] (area 1.3), flat 0.8 on [3, 4] (0.8): (1.3 + 0.8) / 4.
    assert aiq(router, 0.0, cost_max) == pytest.approx(0.525)
    # Singles: 0 on [0, 2), 0.6 → 0.7 on [2, 4] (area 1.3): 1.3 / 4.
    assert aiq(singles, 0.0, cost_max) == pytest.approx(0.325)


# --------------------------------------------------------------------------- a small train/test table


@pytest.fixture(scope="module")
def split_table(make_table: Callable[..., OutcomeTable]) -> OutcomeTable:
    """The synthetic math/greeting table without repeated prompt texts, 80 prompts in train and 40 in test."""
    table = make_table(pairs=200, seed=7)
    first = {p: i for i, p in reversed(list(enumerate(table.prompts)))}
    keep = sorted(first.values())
    maths = [i for i in keep if table.tasks[i] == "math"][:72]
    greetings = [i for i in keep if table.tasks[i] == "greeting"][:48]  # every distinct greeting
    table = table.subset(sorted(maths + greetings))
    assert len(table) == 120 and len(set(table.prompts)) == 120
    splits = tuple("test" if i % 3 == 0 else "train" for i in range(len(table)))
    return dataclasses.replace(table, splits=splits)


@pytest.fixture(scope="module")
def router_file(split_table: OutcomeTable, tmp_path_factory: pytest.TempPathFactory) -> Path:
    train = split_table.where_split("train")
    trained = train_router(train, TrainSettings(embedder="hashing", algorithm="ability"), source=["synthetic"],
                           split="train", use_cache=False)
    return trained.save(tmp_path_factory.mktemp("eval") / "r.safetensors")


def test_a_router_is_not_scored_on_prompts_it_was_trained_on(split_table: OutcomeTable, router_file: Path) -> None:
    with pytest.raises(ConfigError, match="were trained on") as info:
        evaluate_table(split_table, EvalPlan(routers=(router_file,), split="train"))
    assert "--exclude-overlap" in str(info.value) and "--allow-overlap" in str(info.value)
    # The same prompt under another id is caught by its text.
    renamed = dataclasses.replace(split_table, prompt_ids=tuple(f"other-{p}" for p in split_table.prompt_ids))
    with pytest.raises(ConfigError, match="80 of the 80 evaluated prompts were trained on"):
        evaluate_table(renamed, EvalPlan(routers=(router_file,), split="train"))
    allowed = evaluate_table(split_table, EvalPlan(routers=(router_file,), split=None, overlap="allow"))
    assert allowed.n_prompts == 120
    assert any("80 of the 120" in w and "include prompts it was trained on" in w for w in allowed.warnings)
    assert allowed.to_dict()["warnings"] == list(allowed.warnings)
    excluded = evaluate_table(split_table, EvalPlan(routers=(router_file,), split=None, overlap="exclude"))
    assert excluded.n_prompts == 40 and "left out" in excluded.warnings[0]
    unseen = evaluate_table(split_table, EvalPlan(routers=(router_file,), split="test"))
    assert unseen.warnings == () and unseen.n_prompts == 40


def test_references_come_from_the_train_split_and_the_miss_is_reported(
    split_table: OutcomeTable, router_file: Path
) -> None:
    report = evaluate_table(split_table, EvalPlan(routers=(router_file,), split="test"))
    assert (report.best_model, report.best_model_from) == ("strong-model", "the train split")
    given = evaluate_table(split_table, EvalPlan(routers=(router_file,), split="test", reference="cheap-model"))
    assert given.best_model == "cheap-model" and given.best_model_from == "given (--reference)"
    result = report.routers["r"]
    assert result.calibrated is not None and result.calibrated.target == "quality=0.95"
    assert result.calibrated.miss == pytest.approx(result.point.rel_quality - 0.95)
    assert report.to_dict()["routers"]["r"]["calibrated"]["achieved_minus_target"] == result.calibrated.miss


def test_decisions_recompute_the_report(split_table: OutcomeTable, router_file: Path, tmp_path: Path) -> None:
    report = evaluate_table(split_table, EvalPlan(routers=(router_file,), strategies=("cheapest",), split="test"))
    path = write_decisions(report.decisions.values(), tmp_path / "decisions.csv")
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40 and {r["router"] for r in rows} == {"r"}
    assert set(rows[0]) == {"router", "prompt_id", "model", "predicted_quality", "predicted_cost_usd", "quality",
                            "cost_usd"}
    quality = np.mean([float(r["quality"]) for r in rows])
    cost_per_1k = 1000 * np.mean([float(r["cost_usd"]) for r in rows])
    assert quality == pytest.approx(report.routers["r"].point.quality, abs=1e-6)
    assert cost_per_1k == pytest.approx(report.routers["r"].point.cost_per_1k, rel=1e-12)
    test_ids = set(split_table.where_split("test").prompt_ids)
    assert {r["prompt_id"] for r in rows} == test_ids


def test_eval_decides_every_prompt_as_serving_does(split_table: OutcomeTable, router_file: Path,
                                                   shared_data: Path) -> None:
    # Real prompts of every length (RouterBench's test split) and the synthetic test prompts, fake
    # outcomes: what matters is that the evaluated choice and the served one agree on every prompt —
    # same token count, same embedding window, same knob and prompt draw.
    import pandas as pd

    real = pd.read_csv(shared_data / "routerbench" / "prompts.csv.gz").query("split == 'test'")["prompt"]
    prompts = tuple(real.iloc[:300]) + split_table.where_split("test").prompts
    trained = TrainedRouter.load(router_file)
    n, models = len(prompts), trained.models
    table = OutcomeTable(
        prompt_ids=tuple(f"q{i}" for i in range(n)), prompts=prompts, tasks=(None,) * n, splits=("test",) * n,
        models=models, quality=np.full((n, 2), 0.5), input_tokens=np.full((n, 2), 100.0),
        output_tokens=np.full((n, 2), 50.0), cost_usd=np.full((n, 2), 1e-4),
    )
    evaluated = predict_with_router(trained, table)
    config = {
        "models": {m: {"provider": "p", "input_price": trained.prices[m][0], "output_price": trained.prices[m][1]}
                   for m in models},
        "routes": {"default": {"candidates": list(models), "strategy": "learned", "router": str(router_file)}},
    }
    served = Router.from_dict(config)
    chosen = [models.index(served.route(p).model) for p in prompts]
    assert len(set(chosen)) == 2  # the sample exercises both models
    assert np.array_equal(np.array(chosen), evaluated.chosen)


def test_models_the_router_never_saw_are_placed_by_their_public_score(
    split_table: OutcomeTable, router_file: Path
) -> None:
    # Zero-shot: the data's models are renamed to public names the router was not trained on.
    renamed = split_table.rename_models({"cheap-model": "gpt-3.5-turbo-1106", "strong-model": "gpt-4-1106-preview"})
    report = evaluate_table(renamed, EvalPlan(routers=(router_file,), split="test"))
    result = report.routers["r"]
    assert result.placed == ("gpt-3.5-turbo-1106", "gpt-4-1106-preview")
    assert report.to_dict()["routers"]["r"]["placed_by_score"] == list(result.placed)
    unknown = split_table.rename_models({"cheap-model": "in-house-7b"})
    with pytest.raises(ConfigError, match="in-house-7b"):
        evaluate_table(unknown, EvalPlan(routers=(router_file,), split="test"))
    # --alias DATA_NAME=NAME renames the data's model as it is loaded (evaluate.load_data), placing it.
    aliased = evaluate_table(unknown.rename_models({"in-house-7b": "gpt-3.5-turbo-1106"}),
                             EvalPlan(routers=(router_file,), split="test"))
    assert aliased.routers["r"].placed == ("gpt-3.5-turbo-1106",)
