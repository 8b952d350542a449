"""Learned routing: prompt embedders, quality predictors, training, calibration, learned and online strategies."""

from ._acceptance import AcceptancePredictor, fit_acceptance
from ._ability import SCORE_CENTER, SCORE_SCALE, AbilityModel
from ._ability_predictor import AbilityPredictor
from ._artifact import DEFAULT_WINDOW, FORMAT_VERSION, TrainedRouter
from ._bundled import BUNDLED, bundled_notice, bundled_router
from ._calibrate import CalibrationResult, SweepPoint, calibrate
from ._knob import Knob, prompt_draw, prompt_draws
from ._predictors import ALGORITHMS
from ._scores import BUNDLED_ALIASES, PublicScore, ScoreTable, normalise_model_name
from ._training_record import TrainingRecord
from ._cache import embed_cached
from ._calibrate import Target, knob_grid, parse_target, sweep
from ._embedders import available_embedders, get_embedder
from ._embedding import Embedder
from ._online import BetaCounts, OnlineStrategy
from ._profiles import AbilitySource, ModelProfile, model_profile, profiles_for, require_placed
from ._route_calibration import route_knob
from ._progress import EMBED_BATCH, Progress, embed_in_batches, prefixed, quiet
from ._settings import DEFAULT_SETTINGS, parse_params, train_settings
from ._strategy import LearnedStrategy, trained_profiles
from ._train import (
    DEFAULT_EMBEDDER,
    TrainSettings,
    features_for,
    filled_input_tokens,
    fit_prices,
    model_z,
    out_of_fold,
    predicted_cost,
    routing_input_tokens,
    train_router,
)

__all__ = [
    "ALGORITHMS",
    "AbilityModel",
    "AbilityPredictor",
    "AbilitySource",
    "AcceptancePredictor",
    "BUNDLED",
    "BUNDLED_ALIASES",
    "BetaCounts",
    "CalibrationResult",
    "DEFAULT_EMBEDDER",
    "DEFAULT_SETTINGS",
    "DEFAULT_WINDOW",
    "EMBED_BATCH",
    "Embedder",
    "FORMAT_VERSION",
    "Knob",
    "LearnedStrategy",
    "ModelProfile",
    "OnlineStrategy",
    "Progress",
    "PublicScore",
    "SCORE_CENTER",
    "SCORE_SCALE",
    "ScoreTable",
    "SweepPoint",
    "Target",
    "TrainSettings",
    "TrainedRouter",
    "TrainingRecord",
    "available_embedders",
    "bundled_notice",
    "bundled_router",
    "calibrate",
    "embed_cached",
    "embed_in_batches",
    "features_for",
    "filled_input_tokens",
    "fit_acceptance",
    "fit_prices",
    "get_embedder",
    "knob_grid",
    "model_profile",
    "model_z",
    "normalise_model_name",
    "out_of_fold",
    "parse_params",
    "parse_target",
    "predicted_cost",
    "prefixed",
    "profiles_for",
    "prompt_draw",
    "prompt_draws",
    "quiet",
    "require_placed",
    "route_knob",
    "routing_input_tokens",
    "sweep",
    "train_router",
    "train_settings",
    "trained_profiles",
]
