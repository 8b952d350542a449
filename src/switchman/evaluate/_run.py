"""Drive routers over outcome tables: trained files, in-process training, CV, simple strategies.

Learned routers are evaluated through `TrainedRouter.predict` and `routing.select` — the same
calls the learned strategy makes when serving. Simple strategies (cheapest, random, fixed:MODEL)
run through the routing core's own strategy objects, one prompt at a time.
"""

from __future__ import annotations

import numpy as np

from .._catalog import ModelSpec
from .._exceptions import ConfigError
from ..learn import (
    Progress,
    TrainedRouter,
    TrainSettings,
    embed_cached,
    filled_input_tokens,
    fit_prices,
    get_embedder,
    predicted_cost,
    prefixed,
    quiet,
    train_router,
)
from ..routing import CheapestStrategy, DecisionContext, FixedStrategy, RandomStrategy, RouteRequest, Strategy
from ._datasets import OutcomeTable
from ._report import RouterPredictions

__all__ = ["cross_validate", "predict_with_router", "strategy_choices", "train_and_predict"]

def predict_with_router(
    trained: TrainedRouter, table: OutcomeTable, *, name: str = "router", progress: Progress = quiet
) -> RouterPredictions:
    """The router's predictions for every prompt and model of `table` (models matched by name)."""
    names = trained.model_names
    missing = [m for m in table.models if m not in names]
    if missing:
        raise ConfigError(
            f"router {name!r} was not trained on {missing}; restrict the data with --models "
            f"or map names with --alias trained=name (router models: {list(names)})"
        )
    columns = [names.index(m) for m in table.models]
    embedder = get_embedder(trained.embedder)
    embeddings = embed_cached(embedder, trained.texts(table.prompts), progress=prefixed(progress, f"{name}: "))
    q_all, out_all = trained.predict(trained.features(embeddings, table.tasks))
    trained_by_name = dict(zip(names, trained.models, strict=True))
    prices = np.array([trained.prices[trained_by_name[m]] for m in table.models])
    cost = predicted_cost(filled_input_tokens(table), out_all[:, columns], prices)
    return RouterPredictions(
        name=name, quality=q_all[:, columns], cost=cost, rule=trained.rule,
        knobs=np.full(len(table), trained.knob), target=trained.target,
    )


def train_and_predict(
    train: OutcomeTable, test: OutcomeTable, settings: TrainSettings, *, name: str, progress: Progress = quiet
) -> tuple[RouterPredictions, TrainedRouter]:
    """Train (and calibrate) on `train`, predict `test`."""
    trained = train_router(train, settings, source=[train.source], progress=progress)
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
    knobs = np.zeros(len(table))
    for i, fold in enumerate(folds):
        progress("cross-validation folds", i, k)
        rest = np.setdiff1d(np.arange(len(table)), fold)
        pred, trained = train_and_predict(table.subset(rest), table.subset(fold), settings, name=name,
                                          progress=prefixed(progress, f"fold {i + 1}/{k}: "))
        quality[fold], cost[fold], knobs[fold] = pred.quality, pred.cost, trained.knob
    progress("cross-validation folds", k, k)
    target = ",".join(str(t) for t in settings.targets)
    return RouterPredictions(name=name, quality=quality, cost=cost, rule=settings.rule, knobs=knobs, target=target)


def _specs(table: OutcomeTable) -> list[ModelSpec]:
    prices = fit_prices(table)
    return [
        ModelSpec(name=m, provider="data", input_price=prices[m][0], output_price=prices[m][1], capabilities=frozenset())
        for m in table.models
    ]


def _strategy(name: str) -> Strategy:
    if name == "cheapest":
        return CheapestStrategy()
    if name == "random":
        return RandomStrategy()
    if name.startswith("fixed:"):
        return FixedStrategy(name.removeprefix("fixed:"))
    raise ConfigError(f"unknown strategy {name!r}; use learned, cheapest, random or fixed:MODEL")


def strategy_choices(name: str, table: OutcomeTable, *, seed: int = 0) -> np.ndarray:
    """Column chosen per prompt by a simple strategy, decided by the routing core itself."""
    strategy = _strategy(name)
    specs = _specs(table)
    index = {s.name: j for j, s in enumerate(specs)}
    if isinstance(strategy, FixedStrategy) and strategy.model not in index:
        raise ConfigError(f"strategy {name!r}: model {strategy.model!r} is not in the data {list(table.models)}")
    rng = np.random.default_rng(seed)
    tokens = table.prompt_input_tokens()
    choices = np.empty(len(table), dtype=np.int64)
    for i in range(len(table)):
        request = RouteRequest(prompt=table.prompts[i], input_tokens=int(tokens[i]), task=table.tasks[i])
        decision = strategy.decide(request, specs, DecisionContext(random_value=float(rng.random())))
        choices[i] = index[decision.model]
    return choices
