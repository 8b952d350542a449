"""A dedicated acceptance predictor for cascades: P(answer acceptable | prompt, model, answer).

The learned router's predicted quality q̂(prompt, model) is known before the call, so on its own
it cannot tell a cascade anything the single-shot router did not already know. What a cascade
sees that a router does not is the answer. This predictor adds the one answer feature every
outcome table has — its length in tokens (a refusal such as "I do" or a runaway answer is a
signal) — to q̂, per model, in a logistic model:

    P(acceptable) = σ(w₀ + w₁·q̂ + w₂·log(1 + output_tokens))     (one w per model)

Labels may be soft (AlpacaEval's judged preference in [0, 1]): each row counts as acceptable with
weight q and unacceptable with weight 1 − q, so 0/1 and soft quality train the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..routing import Attempt, Outcome

__all__ = ["AcceptancePredictor", "fit_acceptance"]


@dataclass(frozen=True)
class AcceptancePredictor:
    """Per-model logistic weights over (1, q̂, log1p(output tokens))."""

    models: tuple[str, ...]
    coef: np.ndarray  # (models × 3)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {m: j for j, m in enumerate(self.models)})
        object.__setattr__(self, "_rows", [tuple(float(v) for v in row) for row in self.coef])

    def probability(self, model: str, predicted_quality: float, output_tokens: float) -> float | None:
        """P(acceptable) for one answer, or None for a model it was not trained on."""
        j = self._index.get(model)  # type: ignore[attr-defined]
        if j is None:
            return None
        w0, w1, w2 = self._rows[j]  # type: ignore[attr-defined]
        z = w0 + w1 * predicted_quality + w2 * math.log1p(max(output_tokens, 0.0))
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def score(self, attempt: Attempt, outcome: Outcome) -> float | None:
        """The `AcceptanceCheck` score: needs the attempt's q̂ and the answer's length."""
        if attempt.predicted_quality is None or outcome.output_tokens is None:
            return None
        return self.probability(attempt.model, attempt.predicted_quality, outcome.output_tokens)


def fit_acceptance(
    predicted_quality: np.ndarray, output_tokens: np.ndarray, quality: np.ndarray, models: Sequence[str],
    *, c: float = 1.0,
) -> AcceptancePredictor:
    """Fit per-model weights on (n × m) out-of-fold q̂, answer lengths and true quality (NaN cells skipped)."""
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    coef = np.zeros((len(models), 3))
    for j in range(len(models)):
        rows = ~(np.isnan(quality[:, j]) | np.isnan(output_tokens[:, j]) | np.isnan(predicted_quality[:, j]))
        q = np.clip(quality[rows, j], 0.0, 1.0)
        if rows.sum() < 2:
            continue
        x = np.column_stack([predicted_quality[rows, j], np.log1p(np.maximum(output_tokens[rows, j], 0.0))])
        xx = np.vstack([x, x])
        yy = np.concatenate([np.ones(len(x)), np.zeros(len(x))])
        weights = np.concatenate([q, 1.0 - q]) + 1e-6
        model = LogisticRegression(C=c, max_iter=1000).fit(xx, yy, sample_weight=weights)
        coef[j] = [float(model.intercept_[0]), *map(float, model.coef_[0])]
    return AcceptancePredictor(tuple(models), coef)
