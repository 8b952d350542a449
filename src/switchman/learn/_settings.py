"""Training settings from the command line's text: `TrainSettings` holds every default, this parses and checks.

    settings = train_settings(algorithm="ensemble", targets=["quality=0.95"], params=["knn.k=50"])

`switchman train` and `switchman eval` take their option defaults from `DEFAULT_SETTINGS`, so a
default is written once, on `TrainSettings`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, get_args

from .._exceptions import ConfigError
from ..routing import SelectionRule
from ._predictors import ALGORITHMS, build_predictor
from ._calibrate import parse_target
from ._features import Focus
from ._train import TrainSettings

__all__ = ["DEFAULT_SETTINGS", "parse_params", "train_settings"]

#: The defaults of `switchman train` and `switchman eval`.
DEFAULT_SETTINGS = TrainSettings()


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """`k=100`, `mf.rank=32` → nested numeric parameters for the predictor."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"bad --param {pair!r}: use name=value, e.g. k=100 or mf.rank=32")
        try:
            value: Any = int(raw) if raw.strip().lstrip("-").isdigit() else float(raw)
        except ValueError:
            raise ConfigError(f"bad --param {pair!r}: the value must be a number") from None
        *parents, leaf = key.strip().split(".")
        node = params
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return params


def train_settings(
    base: TrainSettings = DEFAULT_SETTINGS, *, embedder: str | None = None, algorithm: str | None = None,
    targets: Sequence[str] = (), use_task: bool | None = None, focus: str | None = None, rule: str | None = None,
    folds: int | None = None, seed: int | None = None, params: Sequence[str] = (),
) -> TrainSettings:
    """`base` with the options given as text (None or empty: keep the base's), each checked."""
    if rule is not None and rule not in get_args(SelectionRule):
        raise ConfigError(f"bad --rule {rule!r}: use tradeoff or tolerance")
    if focus is not None and focus not in get_args(Focus):
        raise ConfigError(f"bad --focus {focus!r}: use full or last_block")
    if algorithm is not None and algorithm not in ALGORITHMS:
        raise ConfigError(f"bad --algorithm {algorithm!r}: use one of {', '.join(ALGORITHMS)}")
    given: dict[str, Any] = {
        "embedder": embedder, "algorithm": algorithm, "use_task": use_task, "focus": focus, "rule": rule,
        "folds": folds, "seed": seed,
        "targets": tuple(parse_target(t) for t in targets) or None,
        "params": parse_params(params) if params else None,
    }
    settings = replace(base, **{key: value for key, value in given.items() if value is not None})
    build_predictor(settings.algorithm, settings.params)  # an unknown parameter fails now, not after the embedding
    return settings
