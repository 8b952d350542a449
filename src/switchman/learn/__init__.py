"""Learned routing: prompt embedders, quality predictors, training, calibration, learned and online strategies."""

from ._acceptance import AcceptancePredictor, fit_acceptance
from ._artifact import ALGORITHMS, FORMAT_VERSION, TrainedRouter
from ._cache import embed_cached
from ._calibrate import Target, knob_grid, parse_target, sweep
from ._embedders import available_embedders, get_embedder
from ._embedding import Embedder
from ._online import BetaCounts, OnlineStrategy
from ._progress import EMBED_BATCH, Progress, embed_in_batches, prefixed, quiet
from ._settings import DEFAULT_SETTINGS, parse_params, train_settings
from ._strategy import LearnedStrategy
from ._train import (
    DEFAULT_EMBEDDER,
    TrainSettings,
    features_for,
    filled_input_tokens,
    fit_prices,
    out_of_fold,
    predicted_cost,
    train_router,
)

__all__ = [
    "ALGORITHMS",
    "AcceptancePredictor",
    "BetaCounts",
    "DEFAULT_EMBEDDER",
    "DEFAULT_SETTINGS",
    "EMBED_BATCH",
    "Embedder",
    "FORMAT_VERSION",
    "LearnedStrategy",
    "OnlineStrategy",
    "Progress",
    "Target",
    "TrainSettings",
    "TrainedRouter",
    "available_embedders",
    "embed_cached",
    "embed_in_batches",
    "features_for",
    "filled_input_tokens",
    "fit_acceptance",
    "fit_prices",
    "get_embedder",
    "knob_grid",
    "out_of_fold",
    "parse_params",
    "parse_target",
    "predicted_cost",
    "prefixed",
    "quiet",
    "sweep",
    "train_router",
    "train_settings",
]
