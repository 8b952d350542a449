"""How long work says how far it is: a message, and a count when there is one (`done` of `total`).

    def progress(message: str, done: int | None = None, total: int | None = None) -> None: ...
    embed_in_batches(embedder, texts, progress=progress)     # "embedding (minilm-int8:head_tail)", 256 of 11,000

The command line draws it as a bar with the count and the time left; library callers pass nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ._embedding import Embedder

__all__ = ["EMBED_BATCH", "Progress", "embed_in_batches", "prefixed", "quiet"]

#: Texts embedded per call when progress is reported: small enough for a bar that moves every second or so.
EMBED_BATCH = 256


class Progress(Protocol):
    """Receives progress reports: a message, and how many of how many when the work is counted."""

    def __call__(self, message: str, done: int | None = None, total: int | None = None) -> None: ...


def quiet(message: str, done: int | None = None, total: int | None = None) -> None:
    """Progress that goes nowhere (the default)."""


def prefixed(progress: Progress, prefix: str) -> Progress:
    """`progress` with `prefix` before each message (a step inside a larger piece of work)."""

    def report(message: str, done: int | None = None, total: int | None = None) -> None:
        progress(f"{prefix}{message}", done, total)

    return report


def embed_in_batches(embedder: Embedder, texts: Sequence[str], *, progress: Progress = quiet) -> np.ndarray:
    """Embeddings of `texts` in order, reporting the count after each batch."""
    total = len(texts)
    message = f"embedding ({embedder.name})"
    progress(message, 0, total)
    if total <= EMBED_BATCH:
        vectors = np.asarray(embedder.embed(list(texts)), dtype=np.float32)
        progress(message, total, total)
        return vectors
    parts = []
    for start in range(0, total, EMBED_BATCH):
        parts.append(np.asarray(embedder.embed(list(texts[start:start + EMBED_BATCH])), dtype=np.float32))
        progress(message, min(start + EMBED_BATCH, total), total)
    return np.concatenate(parts)
