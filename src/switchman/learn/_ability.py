"""The ability model: P(good answer | prompt, model) from the prompt's difficulty and the model's ability.

An item-response model with the prompt's side predicted from its features:

    logit q̂(x, m) = e(x) + s(x) · θ_m,        e(x) = x·w_e + b_e,   s(x) = x·w_s + b_s

`e(x)` is how easy the prompt is, `s(x)` how much ability matters for it (its discrimination).
`θ_m` is the model's ability on a standardised public-score scale: θ = (score − center) / scale.
Fitting ties the abilities of models with a public score to that score, θ_m = z_m + δ_m, with a
penalised residual δ_m (so one odd model, e.g. a model that refuses a benchmark's format, does not
flatten the slope for all others); models without a score get a free θ_m, their ability from the
outcome data. A model never seen in training is placed by its score alone: θ = z, no residual.

Fitted by L-BFGS on binary cross-entropy against quality in [0, 1] (soft labels); NaN cells ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["SCORE_CENTER", "SCORE_SCALE", "AbilityModel", "sigmoid"]

#: Public scores (LMArena style-controlled Bradley–Terry, Elo-like) are standardised as (score − 1200) / 100.
SCORE_CENTER = 1200.0
SCORE_SCALE = 100.0


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function, clipped so exp never overflows."""
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0))))


def _cross_entropy(p: np.ndarray, target: np.ndarray) -> np.ndarray:
    return np.asarray(-(target * np.log(np.clip(p, 1e-12, 1.0)) + (1 - target) * np.log(np.clip(1 - p, 1e-12, 1.0))))


@dataclass
class AbilityModel:
    """Per-prompt easiness and discrimination heads, and one ability per trained model."""

    l2: float = 1e-3  # on the two heads' weights
    l2_residual: float = 3e-2  # on a scored model's δ (per model; the penalty is divided by their count)
    max_iter: int = 400
    w_easy: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    w_slope: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    bias: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))  # b_e, b_s
    theta: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # per trained model

    def fit(self, x: np.ndarray, quality: np.ndarray, z: np.ndarray, *, fixed_heads: bool = False) -> AbilityModel:
        """Fit on (prompts × models) quality; `z` is each model's standardised score (NaN: none).

        With `fixed_heads` the easiness and discrimination heads are kept (e.g. those of the bundled
        router) and only the abilities are fitted, so a few labelled prompts suffice.
        """
        from scipy.optimize import minimize

        x = np.asarray(x, dtype=np.float64)
        q = np.asarray(quality, dtype=np.float64)
        zs = np.asarray(z, dtype=np.float64)
        scored = ~np.isnan(zs)
        z0 = np.where(scored, zs, 0.0)
        mask = ~np.isnan(q)
        target = np.where(mask, q, 0.0)
        n_obs = max(int(mask.sum()), 1)
        d, m = x.shape[1], q.shape[1]
        # A scored model's residual is penalised; an unscored model's θ is the data's (a weak pull to 0).
        penalty = np.where(scored, self.l2_residual / max(int(scored.sum()), 1), 1e-4)
        if not scored.any():  # no anchor: free abilities, still on a usable scale
            penalty = np.full(m, 1e-2)
        heads = (np.concatenate([self.w_easy, self.w_slope, self.bias]).astype(np.float64)
                 if fixed_heads else None)

        def unpack(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float, np.ndarray]:
            h = heads if heads is not None else v[: 2 * d + 2]
            delta = v[-m:]
            return h[:d], h[d: 2 * d], float(h[2 * d]), float(h[2 * d + 1]), delta

        def objective(v: np.ndarray) -> tuple[float, np.ndarray]:
            we, ws, be, bs, delta = unpack(v)
            theta = z0 + delta
            easy = x @ we + be
            slope = x @ ws + bs
            p = sigmoid(easy[:, None] + slope[:, None] * theta[None, :])
            loss = float((_cross_entropy(p, target) * mask).sum() / n_obs)
            loss += 0.5 * float(np.sum(penalty * delta**2))
            g = (p - target) * mask / n_obs
            g_delta = (g * slope[:, None]).sum(axis=0) + penalty * delta
            if heads is not None:
                return loss, g_delta
            loss += 0.5 * self.l2 * float(we @ we + ws @ ws)
            g_easy, g_slope = g.sum(axis=1), g @ theta
            grad = np.concatenate([x.T @ g_easy + self.l2 * we, x.T @ g_slope + self.l2 * ws,
                                   [g_easy.sum(), g_slope.sum()], g_delta])
            return loss, grad

        start = np.zeros(m if heads is not None else 2 * d + 2 + m)
        if heads is None:
            start[2 * d + 1] = 1.0  # s(x) = 1: every prompt rewards ability at first
            mean_q = np.clip(np.nanmean(np.where(mask, q, np.nan)), 0.02, 0.98) if mask.any() else 0.5
            start[2 * d] = float(np.log(mean_q / (1 - mean_q)))
        result = minimize(objective, start, jac=True, method="L-BFGS-B", options={"maxiter": self.max_iter})
        we, ws, be, bs, delta = unpack(result.x)
        self.w_easy, self.w_slope = we.astype(np.float32), ws.astype(np.float32)
        self.bias = np.array([be, bs], dtype=np.float32)
        self.theta = (z0 + delta).astype(np.float32)
        return self

    def heads(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Easiness e(x) and discrimination s(x) per prompt."""
        x = np.asarray(x, dtype=np.float32)
        return x @ self.w_easy + self.bias[0], x @ self.w_slope + self.bias[1]

    def predict(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Predicted quality, (n prompts × len(theta)), for models of the given abilities."""
        easy, slope = self.heads(x)
        return sigmoid(easy[:, None] + slope[:, None] * np.asarray(theta, dtype=np.float32)[None, :])

    def params(self) -> dict[str, Any]:
        return {"l2": self.l2, "l2_residual": self.l2_residual, "max_iter": self.max_iter}

    def arrays(self, prefix: str = "ability") -> dict[str, np.ndarray]:
        return {f"{prefix}.w_easy": self.w_easy, f"{prefix}.w_slope": self.w_slope, f"{prefix}.bias": self.bias,
                f"{prefix}.theta": self.theta}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], params: dict[str, Any], prefix: str = "ability") -> AbilityModel:
        return cls(**params, w_easy=arrays[f"{prefix}.w_easy"].astype(np.float32),
                   w_slope=arrays[f"{prefix}.w_slope"].astype(np.float32),
                   bias=arrays[f"{prefix}.bias"].astype(np.float32), theta=arrays[f"{prefix}.theta"].astype(np.float32))
