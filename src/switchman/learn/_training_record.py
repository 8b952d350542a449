"""What a router was trained on: datasets, split, and hashes of its prompts, so `eval` can refuse overlap.

A router file keeps, per training prompt, an 8-byte hash of its id and of its text (whitespace
collapsed) — enough to tell whether an evaluated prompt was trained on, under the same id or
another, and nothing from which the prompt could be read back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["TrainingRecord"]


def _hashes(values: Sequence[str]) -> np.ndarray:
    """8-byte blake2b of each value, in the values' order."""
    out = np.empty(len(values), dtype=np.uint64)
    for i, value in enumerate(values):
        out[i] = int.from_bytes(hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
    return out


def _text_key(prompt: str) -> str:
    return " ".join(prompt.split())


@dataclass(frozen=True)
class TrainingRecord:
    """The training data of a router: where it came from, and hashed prompt ids and texts."""

    datasets: tuple[str, ...]
    split: str | None
    n_prompts: int
    digest: str
    id_hashes: np.ndarray = field(repr=False)
    text_hashes: np.ndarray = field(repr=False)

    @classmethod
    def of(cls, prompt_ids: Sequence[str], prompts: Sequence[str], *, datasets: Sequence[str],
           split: str | None) -> TrainingRecord:
        ids = np.sort(_hashes(list(prompt_ids)))
        digest = hashlib.blake2b(ids.tobytes(), digest_size=16).hexdigest()
        texts = np.sort(_hashes([_text_key(p) for p in prompts]))
        return cls(tuple(datasets), split, len(prompt_ids), digest, ids, texts)

    def overlap(self, prompt_ids: Sequence[str], prompts: Sequence[str]) -> np.ndarray:
        """Per evaluated prompt: was it trained on (same id, or same text)?"""
        ids = np.isin(_hashes(list(prompt_ids)), self.id_hashes)
        texts = np.isin(_hashes([_text_key(p) for p in prompts]), self.text_hashes)
        return np.asarray(ids | texts)

    def describe(self) -> str:
        split = f" (split {self.split})" if self.split else ""
        return f"{self.n_prompts} prompts of {', '.join(self.datasets) or 'unnamed data'}{split}"

    def to_json(self) -> dict[str, Any]:
        return {"datasets": list(self.datasets), "split": self.split, "n_prompts": self.n_prompts, "digest": self.digest}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"training.id_hashes": self.id_hashes, "training.text_hashes": self.text_hashes}

    @classmethod
    def from_json(cls, data: dict[str, Any], arrays: dict[str, np.ndarray]) -> TrainingRecord:
        return cls(tuple(data["datasets"]), data.get("split"), int(data["n_prompts"]), str(data["digest"]),
                   arrays["training.id_hashes"].astype(np.uint64), arrays["training.text_hashes"].astype(np.uint64))

