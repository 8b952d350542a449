"""Drive routers over outcome tables: trained files, in-process training, CV, simple strategies.

Learned routers are evaluated through `TrainedRouter.predict` and `routing.select` — the same
calls the learned strategy makes when serving. Simple strategies (cheapest, random, fixed:MODEL)
run through the routing core's own strategy objects, one prompt at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .._catalog import ModelSpec
from .._exceptions import ConfigError
from ..learn import (
    Progress,
    ScoreTable,
    TrainedRouter,
    TrainSettings,
    embed_cached,
    fit_prices,
    get_embedder,
    parse_target,
    predicted_cost,
    prefixed,
    profiles_for,
    prompt_draws,
    quiet,
    route_knob,
    routing_input_tokens,
    train_router,
)
from ..routing import CheapestStrategy, DecisionContext, FixedStrategy, RandomStrategy, RouteRequest, Strategy
from ._datasets import OutcomeTable
from ._report import RouterPredictions

__all__ = ["cross_validate", "predict_with_router", "strategy_choices", "train_and_predict"]

def _data_specs(names: Sequence[str], prices: Mapping[str, tuple[float, float]]) -> list[ModelSpec]:
    return [ModelSpec(name=m, provider="data", input_price=prices[m][0], output_price=prices[m][1],
                      capabilities=frozenset()) for m in names]


def predict_with_router(trained: TrainedRouter, table: OutcomeTable, *, name: str = "router",
                        scores: ScoreTable | None = None, progress: Progress = quiet) -> RouterPredictions:
    """The router's predictions and calibrated choices for every prompt of `table`, as serving makes them.

    A data model the router was trained on is predicted from its outcomes; any other is placed by
    its public score (`scores`, default the bundled table; rename data models with --alias). The
    knob is the router's own when the data's models are exactly its models, else it is calibrated
    for these models on the router's training population — what a learned route does at startup.
    """
    table_scores = scores or ScoreTable.bundled()
    profiles = profiles_for(table.models, router=trained, table=table_scores, config_scores={}, score_names={},
                            upstream={})
    unplaced = [p.name for p in profiles if not p.placed]
    if unplaced:
        raise ConfigError(
            f"router {name!r} can place neither {unplaced}: it was not trained on them and the score table has no "
            f"score for them; map data names with --alias DATA_NAME=NAME (a trained or LMArena name) or restrict "
            f"the data with --models (router models: {list(trained.model_names)})"
        )
    embeddings = embed_cached(get_embedder(trained.embedder), trained.texts(table.prompts),
                              progress=prefixed(progress, f"{name}: "))
    quality, output = trained.predict_columns(trained.features(embeddings, table.tasks), [p.key for p in profiles])
    trained_by_name = dict(zip(trained.model_names, trained.models, strict=True))
    fitted = fit_prices(table) if any(p.column is None for p in profiles) else {}
    prices = {m: trained.prices[trained_by_name[m]] if m in trained_by_name and trained_by_name[m] in trained.prices
              else fitted[m] for m in table.models}
    cost = predicted_cost(routing_input_tokens(table.prompts)[:, None], output,
                          np.array([prices[m] for m in table.models]))
    if set(table.models) == set(trained.model_names):
        knob = trained.knob
    else:
        targets = [parse_target(t) for t in (trained.target or "quality=0.95").split(",")]
        knob = route_knob(trained, profiles, _data_specs(table.models, prices), targets).knob
    chosen = knob.choose(quality, cost, trained.rule, prompt_draws(table.prompts))
    return RouterPredictions(
        name=name, quality=quality, cost=cost, rule=trained.rule, chosen=chosen, knob=str(knob),
        target=trained.target, placed=tuple(p.name for p in profiles if p.column is None),
        training=trained.training,
    )


def train_and_predict(
    train: OutcomeTable, test: OutcomeTable, settings: TrainSettings, *, name: str, progress: Progress = quiet
) -> tuple[RouterPredictions, TrainedRouter]:
    """Train (and calibrate) on `train`, predict `test`."""
    trained = train_router(train, settings, source=[train.source], split="train", progress=progress)
    return predict_with_router(trained, test, name=name, progress=progress), trained


def cross_validate(
    table: OutcomeTable, settings: TrainSettings, k: int, *, name: str, progress: Progress = quiet
) -> RouterPredictions:
    """K-fold CV: each fold is predicted by a router trained and calibrated on the other folds."""
    if k < 2 or k > len(table):
        raise ConfigError(f"--cv needs 2 <= K <= {len(table)} prompts, got {k}")
    folds = np.array_split(np.random.default_rng(settings.seed).permutation(len(table)), k)
    quality = np.zeros(table.quality.shape)
    cost = np.zeros(table.quality.shape)
    chosen = np.zeros(len(table), dtype=np.int64)
    for i, fold in enumerate(folds):
        progress("cross-validation folds", i, k)
        rest = np.setdiff1d(np.arange(len(table)), fold)
        pred, _ = train_and_predict(table.subset(rest), table.subset(fold), settings, name=name,
                                    progress=prefixed(progress, f"fold {i + 1}/{k}: "))
        quality[fold], cost[fold], chosen[fold] = pred.quality, pred.cost, pred.chosen
    progress("cross-validation folds", k, k)
    target = ",".join(str(t) for t in settings.targets)
    return RouterPredictions(name=name, quality=quality, cost=cost, rule=settings.rule, chosen=chosen,
                             knob=f"per fold ({k} folds)", target=target)


def _specs(table: OutcomeTable) -> list[ModelSpec]:
    return _data_specs(table.models, fit_prices(table))


def _strategy(name: str) -> Strategy:
    if name == "cheapest":
        return CheapestStrategy()
    if name == "random":
        return RandomStrategy()
    if name.startswith("fixed:"):
        return FixedStrategy(name.removeprefix("fixed:"))
    raise ConfigError(f"unknown strategy {name!r}; use learned, cascade, cheapest, random or fixed:MODEL")


def strategy_choices(name: str, table: OutcomeTable, *, seed: int = 0) -> np.ndarray:
    """Column chosen per prompt by a simple strategy, decided by the routing core itself."""
    strategy = _strategy(name)
    specs = _specs(table)
    index = {s.name: j for j, s in enumerate(specs)}
    if isinstance(strategy, FixedStrategy) and strategy.model not in index:
        raise ConfigError(f"strategy {name!r}: model {strategy.model!r} is not in the data {list(table.models)}")
    rng = np.random.default_rng(seed)
    tokens = routing_input_tokens(table.prompts)
    choices = np.empty(len(table), dtype=np.int64)
    for i in range(len(table)):
        request = RouteRequest(prompt=table.prompts[i], input_tokens=int(tokens[i]), task=table.tasks[i])
        decision = strategy.decide(request, specs, DecisionContext(random_value=float(rng.random())))
        choices[i] = index[decision.model]
    return choices
