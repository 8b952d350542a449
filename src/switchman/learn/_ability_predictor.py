"""The `ability` predictor: nearest-centroid evidence shrunk toward the ability model.

For a trained model m and prompt x: the outcomes of the training prompts in the clusters nearest x
(`CentroidEvidence`), shrunk toward the ability model's σ(e(x) + s(x)·θ_m) where they are thin.
For a model the router never saw, only the ability part exists, with θ from the model's public (or
configured) score plus the median residual of the trained models (fitted θ − their public score:
where the fit puts a typical scored model; chosen over θ = score by leave-one-model-out inside the
train splits, `bench_routing.py placement`); its output length is that of the trained model nearest
in ability (its tier). The residual is taken against the public scores (`public_z`), not against
what the fit was tied to (`z`): a router trained from a prior ties its models to the prior's fitted
abilities, and a residual against those would always be ≈ 0.
Everything stored is a parameter or a per-cluster aggregate, so a router of this kind can ship.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ._ability import AbilityModel
from ._centroids import CentroidEvidence

__all__ = ["AbilityPredictor"]


@dataclass
class AbilityPredictor:
    """Quality and output length for trained models, and for any model of known ability."""

    ability: AbilityModel = field(default_factory=AbilityModel)
    evidence: CentroidEvidence = field(default_factory=CentroidEvidence)
    name: str = "ability"
    output_means: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    #: The standardised abilities the fit tied each model to (its public score, or a prior router's fit).
    z: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    #: Each model's standardised public score (NaN: none); None (files written before it was stored): `z`.
    public_z: np.ndarray | None = None

    def fit(self, x: np.ndarray, quality: np.ndarray, output_tokens: np.ndarray, *,
            z: np.ndarray | None = None, input_tokens: np.ndarray | None = None,
            fixed_heads: bool = False, public_z: np.ndarray | None = None) -> AbilityPredictor:
        """Fit both parts; `z` is each model's standardised ability to tie it to (NaN or None: none), by
        default its public score; `public_z` its standardised public score when `z` is something else
        (a prior router's fitted abilities), else `z`."""
        m = quality.shape[1]
        self.__dict__.pop("score_offset", None)  # recomputed from the new fit on first use
        self.z = np.full(m, np.nan, np.float32) if z is None else np.asarray(z, dtype=np.float32)
        self.public_z = self.z.copy() if public_z is None else np.asarray(public_z, dtype=np.float32)
        if self.public_z.shape != (m,):
            raise ValueError(f"public_z has shape {self.public_z.shape}, expected ({m},)")
        self.ability.fit(x, quality, self.z, fixed_heads=fixed_heads)
        self.evidence.fit(x, quality, output_tokens, input_tokens)
        out = np.where(np.isnan(quality), np.nan, output_tokens)
        means = np.array([np.nanmean(out[:, j]) if (~np.isnan(out[:, j])).any() else np.nan for j in range(m)])
        self.output_means = np.where(np.isnan(means), np.nanmean(means) if (~np.isnan(means)).any() else 0.0,
                                     means).astype(np.float32)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted quality of every trained model, (n × models)."""
        return self.predict_with_lengths(x)[0]

    def predict_with_lengths(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Quality and output tokens of every trained model."""
        prior_q = self.ability.predict(x, self.ability.theta)
        prior_out = np.broadcast_to(self.output_means, prior_q.shape)
        return self.evidence.predict(x, prior_q, prior_out)

    def predict_output_tokens(self, x: np.ndarray) -> np.ndarray:
        return self.predict_with_lengths(x)[1]

    @cached_property
    def score_offset(self) -> float:
        """Median (fitted ability − standardised public score) over the trained models with a score (0: none)."""
        public = self.z if self.public_z is None else self.public_z
        scored = ~np.isnan(public)
        if len(public) != len(self.ability.theta) or not scored.any():
            return 0.0
        return float(np.median(self.ability.theta[scored] - public[scored]))

    def predict_placed(self, x: np.ndarray, theta: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Quality and output tokens of models the router never saw, from their standardised scores alone
        (each shifted by `score_offset`)."""
        thetas = np.asarray(theta, dtype=np.float32) + np.float32(self.score_offset)
        quality = self.ability.predict(x, thetas)
        tier = np.abs(self.ability.theta[None, :] - thetas[:, None]).argmin(axis=1)
        outputs = self.evidence.predict_output(x, np.broadcast_to(self.output_means[tier], quality.shape), tier)
        return quality, outputs

    def params(self) -> dict[str, Any]:
        return {"ability": self.ability.params(), "evidence": self.evidence.params()}

    def arrays(self) -> dict[str, np.ndarray]:
        public = {} if self.public_z is None else {"ability.public_z": self.public_z}
        return {**self.ability.arrays(), **self.evidence.arrays(), "ability.output_means": self.output_means,
                "ability.z": self.z, **public}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> AbilityPredictor:
        public = arrays.get("ability.public_z")  # absent from older files: the offset falls back on `z`
        return cls(ability=AbilityModel.from_arrays(arrays, params["ability"]),
                   evidence=CentroidEvidence.from_arrays(arrays, params["evidence"]),
                   output_means=arrays["ability.output_means"].astype(np.float32),
                   z=arrays["ability.z"].astype(np.float32),
                   public_z=None if public is None else public.astype(np.float32))
