"""The selection knob a router is calibrated to, and the per-prompt draw that mixes two of its values.

A target such as "95% of the best model's quality" usually falls between two knob values: one
overshoots, the next undershoots. `Knob` holds both and the share of prompts decided with the
second, so the expected quality lands on the target instead of above it (a point of quality above
target is money spent for nothing). Which prompts get the second value is decided by a hash of the
prompt text, not a random draw, so `eval`, `replay` and serving decide every prompt identically.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..routing import SelectionRule, select

__all__ = ["Knob", "prompt_draw", "prompt_draws"]


#: The draw hashes a prompt's length and at most this many characters from each end: bounded work per request.
DRAW_CHARS = 4096


def prompt_draw(prompt: str) -> float:
    """A number in [0, 1) fixed by the prompt's text (the same in every process and on every machine)."""
    text = prompt if len(prompt) <= 2 * DRAW_CHARS else f"{prompt[:DRAW_CHARS]}|{len(prompt)}|{prompt[-DRAW_CHARS:]}"
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def prompt_draws(prompts: Sequence[str]) -> np.ndarray:
    """`prompt_draw` of each prompt."""
    return np.array([prompt_draw(p) for p in prompts], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Knob:
    """`value` for most prompts; `alternate` for the share `alternate_share` of them (by prompt draw)."""

    value: float
    alternate: float | None = None
    alternate_share: float = 0.0

    def for_draw(self, draw: float) -> float:
        """The knob value a prompt with this draw is decided with."""
        if self.alternate is not None and draw < self.alternate_share:
            return self.alternate
        return self.value

    def choose(self, quality: np.ndarray, cost: np.ndarray, rule: SelectionRule, draws: np.ndarray) -> np.ndarray:
        """The column chosen per row, each row decided with its own draw's knob value."""
        chosen = np.asarray(select(quality, cost, self.value, rule))
        if self.alternate is not None and self.alternate_share > 0:
            use = np.asarray(draws) < self.alternate_share
            if use.any():
                chosen[use] = select(np.atleast_2d(quality)[use], np.atleast_2d(cost)[use], self.alternate, rule)
        return chosen

    def __str__(self) -> str:
        if self.alternate is None or self.alternate_share <= 0:
            return f"{self.value:.4g}"
        return f"{self.value:.4g} ({self.alternate:.4g} on {self.alternate_share:.1%} of prompts)"

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "alternate": self.alternate, "alternate_share": self.alternate_share}

    @classmethod
    def from_json(cls, data: Any) -> Knob:
        """From `to_json`'s form, or a bare number (router files of format version 1)."""
        if isinstance(data, int | float):
            return cls(float(data))
        alternate = data.get("alternate")
        return cls(float(data["value"]), None if alternate is None else float(alternate),
                   float(data.get("alternate_share") or 0.0))
