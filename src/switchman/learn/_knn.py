"""Non-parametric predictor: quality and output length from the nearest training prompts.

Each model's prediction is a similarity-weighted mean over the k nearest training prompts that have
an outcome for that model; where none has, the model's overall mean. Needs no training beyond
storing the matrix, and explains itself (the neighbours are the evidence).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["KNNPredictor"]


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12))


@dataclass
class KNNPredictor:
    """k-nearest-neighbour means of per-model quality and output tokens."""

    k: int = 100
    temperature: float = 0.3
    name: str = "knn"
    _x: np.ndarray | None = None
    _quality: np.ndarray | None = None
    _output_tokens: np.ndarray | None = None
    _fallbacks: tuple[np.ndarray, np.ndarray] | None = None

    def fit(self, x: np.ndarray, quality: np.ndarray, output_tokens: np.ndarray) -> KNNPredictor:
        """Store normalised features and the (n × m) outcome matrices (NaN = no outcome)."""
        self._x = _normalise(np.asarray(x, dtype=np.float32))
        self._quality = np.asarray(quality, dtype=np.float32)
        self._output_tokens = np.asarray(output_tokens, dtype=np.float32)
        self._fallbacks = None
        return self

    def neighbours(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the k nearest training prompts and their weights, each (n × k)."""
        assert self._x is not None, "fit() or from_arrays() first"
        sims = _normalise(np.asarray(x, dtype=np.float32)) @ self._x.T
        k = min(self.k, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        weights = np.exp((top_sims - top_sims.max(axis=1, keepdims=True)) / self.temperature)
        return top, weights

    @staticmethod
    def weighted_means(top: np.ndarray, weights: np.ndarray, values: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        """Per-model weighted mean of `values` over the neighbours that have one; else `fallback`."""
        neigh = values[top]  # (n, k, m)
        present = ~np.isnan(neigh)
        w = weights[:, :, None] * present
        totals = w.sum(axis=1)
        sums = (np.where(present, neigh, 0.0) * w).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / totals
        return np.where(totals > 0, means, fallback[None, :])

    def _means(self) -> tuple[np.ndarray, np.ndarray]:
        """Each model's overall mean quality and output tokens (computed once, not per request)."""
        if self._fallbacks is None:
            assert self._quality is not None and self._output_tokens is not None, "fit() or from_arrays() first"
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a model with no outcome at all → NaN
                self._fallbacks = (np.nanmean(self._quality, axis=0), np.nanmean(self._output_tokens, axis=0))
        return self._fallbacks

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted quality, (n × m)."""
        assert self._quality is not None, "fit() or from_arrays() first"
        return self.weighted_means(*self.neighbours(x), self._quality, self._means()[0])

    def predict_output_tokens(self, x: np.ndarray) -> np.ndarray:
        """Predicted output tokens, (n × m)."""
        assert self._output_tokens is not None, "fit() or from_arrays() first"
        return self.weighted_means(*self.neighbours(x), self._output_tokens, self._means()[1])

    def predict_with_lengths(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Quality and output tokens from one neighbour search (the serving path)."""
        assert self._quality is not None and self._output_tokens is not None, "fit() or from_arrays() first"
        top, weights = self.neighbours(x)
        q_mean, out_mean = self._means()
        return (self.weighted_means(top, weights, self._quality, q_mean),
                self.weighted_means(top, weights, self._output_tokens, out_mean))

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "temperature": self.temperature}

    def training_points(self) -> tuple[np.ndarray, np.ndarray]:
        """The fitted feature rows (L2-normalised) and their quality per model (NaN: no outcome)."""
        assert self._x is not None and self._quality is not None
        return self._x, self._quality

    def arrays(self) -> dict[str, np.ndarray]:
        assert self._x is not None and self._quality is not None and self._output_tokens is not None
        return {"knn.x": self._x, "knn.quality": self._quality, "knn.output_tokens": self._output_tokens}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> KNNPredictor:
        predictor = cls(k=int(params["k"]), temperature=float(params["temperature"]))
        predictor._x = arrays["knn.x"].astype(np.float32)
        predictor._quality = arrays["knn.quality"].astype(np.float32)
        predictor._output_tokens = arrays["knn.output_tokens"].astype(np.float32)
        return predictor
