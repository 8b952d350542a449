"""The selection rule shared by serving and evaluation: predicted quality and cost → one model.

Two one-knob rules over an (n prompts × m models) matrix of predictions:

- tolerance τ: the cheapest model whose predicted quality is within τ of the best predicted;
- trade-off λ: the model maximising q̂ − λ·ĉ, with ĉ in USD per 1k requests.

Ineligible cells carry quality −inf. Both are vectorised so `eval` sweeps thousands of prompts at
once, and the gateway calls them with n = 1: what evaluation measures is what production runs.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["SelectionRule", "select"]

SelectionRule = Literal["tolerance", "tradeoff"]


def select(quality: np.ndarray, cost: np.ndarray, knob: float, rule: SelectionRule = "tolerance") -> np.ndarray:
    """Index of the chosen model per row."""
    quality = np.atleast_2d(np.asarray(quality, dtype=np.float64))
    cost_per_1k = np.atleast_2d(np.asarray(cost, dtype=np.float64)) * 1000.0
    if rule == "tolerance":
        best = quality.max(axis=1, keepdims=True)
        ok = quality >= best - knob - 1e-12
        chosen: np.ndarray = np.where(ok, cost_per_1k, np.inf).argmin(axis=1)
        return chosen
    if rule == "tradeoff":
        best_value: np.ndarray = (quality - knob * cost_per_1k).argmax(axis=1)
        return best_value
    raise ValueError(f"unknown selection rule {rule!r}; use 'tolerance' or 'tradeoff'")
