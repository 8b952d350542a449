"""Quality predictors by name: the registry `train` builds from and router files load from.

`ability` (nearest-centroid evidence shrunk toward the ability model; parameters and per-cluster
aggregates only), `knn` (the training prompts' features and outcomes), `mf` (a shared low-rank
projection) and `ensemble` (kNN and MF averaged).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import numpy as np

from .._exceptions import ArtifactError, ConfigError
from ._ability import AbilityModel
from ._ability_predictor import AbilityPredictor
from ._centroids import CentroidEvidence
from ._knn import KNNPredictor
from ._mf import FactorisationPredictor

__all__ = [
    "ALGORITHMS",
    "EnsemblePredictor",
    "LengthPredictor",
    "QualityPredictor",
    "build_predictor",
    "load_predictor",
    "shared_lengths",
]


class QualityPredictor(Protocol):
    """Predicts per-model quality for feature rows."""

    name: str

    def fit(self, x: np.ndarray, quality: np.ndarray, output_tokens: np.ndarray) -> Any: ...
    def predict(self, x: np.ndarray) -> np.ndarray: ...
    def params(self) -> dict[str, Any]: ...
    def arrays(self) -> dict[str, np.ndarray]: ...


class LengthPredictor(Protocol):
    """Predicts per-model output tokens for feature rows."""

    def predict_output_tokens(self, x: np.ndarray) -> np.ndarray: ...
    def params(self) -> dict[str, Any]: ...
    def arrays(self) -> dict[str, np.ndarray]: ...


@dataclass
class EnsemblePredictor:
    """Mean of the kNN and factorisation predictions: local evidence plus shared structure."""

    knn: KNNPredictor = field(default_factory=KNNPredictor)
    mf: FactorisationPredictor = field(default_factory=FactorisationPredictor)
    name: str = "ensemble"

    def fit(self, x: np.ndarray, quality: np.ndarray, output_tokens: np.ndarray) -> EnsemblePredictor:
        self.knn.fit(x, quality, output_tokens)
        self.mf.fit(x, quality, output_tokens)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.combine(self.knn.predict(x), x)

    def combine(self, knn_quality: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The ensemble's prediction given the kNN part already computed."""
        return np.asarray(0.5 * (knn_quality + self.mf.predict(x)))

    def params(self) -> dict[str, Any]:
        return {"knn": self.knn.params(), "mf": self.mf.params()}

    def arrays(self) -> dict[str, np.ndarray]:
        return {**self.knn.arrays(), **self.mf.arrays()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> EnsemblePredictor:
        return cls(
            knn=KNNPredictor.from_arrays(arrays, params["knn"]),
            mf=FactorisationPredictor.from_arrays(arrays, params["mf"]),
        )


#: Predictor names; `ability` is the default and the only one whose router files hold no per-prompt data.
ALGORITHMS = ("ability", "knn", "mf", "ensemble")


_ABILITY_PARAMS = frozenset({"l2", "l2_residual", "max_iter"})
_EVIDENCE_PARAMS = frozenset({"clusters", "k", "temperature", "prior", "min_size", "seed"})


def _checked(cls: type, params: Mapping[str, Any], where: str, allowed: frozenset[str] | None = None) -> dict[str, Any]:
    """Only the tunable fields of a predictor class; anything else is a clear error."""
    if allowed is None:
        allowed = frozenset(f.name for f in fields(cls) if not f.name.startswith("_") and f.name != "name")
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"unknown {where} parameter(s) {unknown}; known: {sorted(allowed)}")
    return dict(params)


def build_predictor(algorithm: str, params: Mapping[str, Any] | None = None) -> QualityPredictor:
    """A fresh predictor by algorithm name."""
    params = dict(params or {})
    if algorithm == "ability":
        extra = sorted(set(params) - {"ability", "evidence"})
        if extra:
            raise ConfigError(f"ability parameters are ability.NAME or evidence.NAME, not {extra}")
        return AbilityPredictor(
            ability=AbilityModel(**_checked(AbilityModel, params.get("ability", {}), "ability", _ABILITY_PARAMS)),
            evidence=CentroidEvidence(**_checked(CentroidEvidence, params.get("evidence", {}), "evidence",
                                                 _EVIDENCE_PARAMS)),
        )
    if algorithm == "knn":
        return KNNPredictor(**_checked(KNNPredictor, params, "knn"))
    if algorithm == "mf":
        return FactorisationPredictor(**_checked(FactorisationPredictor, params, "mf"))
    if algorithm == "ensemble":
        extra = sorted(set(params) - {"knn", "mf"})
        if extra:
            raise ConfigError(f"ensemble parameters are knn.NAME or mf.NAME, not {extra}")
        return EnsemblePredictor(
            knn=KNNPredictor(**_checked(KNNPredictor, params.get("knn", {}), "knn")),
            mf=FactorisationPredictor(**_checked(FactorisationPredictor, params.get("mf", {}), "mf")),
        )
    raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")


def load_predictor(algorithm: str, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> QualityPredictor:
    """The predictor a router file stores."""
    if algorithm == "ability":
        return AbilityPredictor.from_arrays(arrays, params)
    if algorithm == "knn":
        return KNNPredictor.from_arrays(arrays, params)
    if algorithm == "mf":
        return FactorisationPredictor.from_arrays(arrays, params)
    if algorithm == "ensemble":
        return EnsemblePredictor.from_arrays(arrays, params)
    raise ArtifactError(f"unknown algorithm {algorithm!r} in router file")


def shared_lengths(predictor: QualityPredictor) -> LengthPredictor | None:
    """The part of a predictor that also predicts output lengths (stored once), if it has one."""
    if isinstance(predictor, KNNPredictor | AbilityPredictor):
        return predictor
    if isinstance(predictor, EnsemblePredictor):
        return predictor.knn
    return None
