"""Shared-strength predictor: a low-rank bilinear (matrix-factorisation) model.

logit q̂(x, m) = (x·W)·v_m + b_m. The projection W is shared by every model, and each model's
vector v_m is pulled toward the mean model vector, so a model with few labelled prompts borrows
the structure learned from the others and still gets sane predictions. Trained full-batch with
Adam on binary cross-entropy against quality in [0, 1] (soft labels), NaN cells ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FactorisationPredictor"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -30, 30))))


@dataclass
class _Adam:
    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    t: int = 0
    moments: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def step(self, name: str, param: np.ndarray, grad: np.ndarray) -> None:
        m, v = self.moments.get(name, (np.zeros_like(param), np.zeros_like(param)))
        m = self.beta1 * m + (1 - self.beta1) * grad
        v = self.beta2 * v + (1 - self.beta2) * grad * grad
        self.moments[name] = (m, v)
        m_hat = m / (1 - self.beta1**self.t)
        v_hat = v / (1 - self.beta2**self.t)
        param -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


@dataclass
class FactorisationPredictor:
    """Low-rank bilinear quality model shared across models."""

    rank: int = 16
    l2: float = 1e-3
    epochs: int = 400
    lr: float = 0.02
    seed: int = 0
    name: str = "mf"
    _w: np.ndarray | None = None
    _v: np.ndarray | None = None
    _b: np.ndarray | None = None

    def fit(self, x: np.ndarray, quality: np.ndarray, output_tokens: np.ndarray | None = None) -> FactorisationPredictor:
        """Fit on the observed cells of the (n × m) quality matrix."""
        x = np.asarray(x, dtype=np.float64)
        q = np.asarray(quality, dtype=np.float64)
        mask = ~np.isnan(q)
        target = np.where(mask, q, 0.0)
        n_obs = max(int(mask.sum()), 1)
        rng = np.random.default_rng(self.seed)
        d, m = x.shape[1], q.shape[1]
        w = rng.normal(0, 1 / np.sqrt(d), (d, self.rank))
        v = rng.normal(0, 0.1, (m, self.rank))
        mean_q = np.clip(np.nanmean(q, axis=0), 1e-3, 1 - 1e-3)
        b = np.log(mean_q / (1 - mean_q))
        opt = _Adam(self.lr)
        for _ in range(self.epochs):
            opt.t += 1
            h = x @ w
            p = _sigmoid(h @ v.T + b)
            g = (p - target) * mask / n_obs
            v_centre = v - v.mean(axis=0, keepdims=True)
            grad_v = g.T @ h + self.l2 * v_centre
            grad_b = g.sum(axis=0)
            grad_w = x.T @ (g @ v) + self.l2 * w
            opt.step("w", w, grad_w)
            opt.step("v", v, grad_v)
            opt.step("b", b, grad_b)
        self._w, self._v, self._b = w.astype(np.float32), v.astype(np.float32), b.astype(np.float32)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted quality, (n × m)."""
        assert self._w is not None and self._v is not None and self._b is not None, "fit() or from_arrays() first"
        h = np.asarray(x, dtype=np.float32) @ self._w
        return _sigmoid(h @ self._v.T + self._b)

    def params(self) -> dict[str, Any]:
        return {"rank": self.rank, "l2": self.l2, "epochs": self.epochs, "lr": self.lr, "seed": self.seed}

    def arrays(self) -> dict[str, np.ndarray]:
        assert self._w is not None and self._v is not None and self._b is not None
        return {"mf.w": self._w, "mf.v": self._v, "mf.b": self._b}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: dict[str, Any]) -> FactorisationPredictor:
        predictor = cls(**params)
        predictor._w, predictor._v, predictor._b = arrays["mf.w"], arrays["mf.v"], arrays["mf.b"]
        return predictor
