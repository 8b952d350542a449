"""What every prompt embedder is: the `Embedder` protocol and the text/vector helpers plug-ins share.

The registry (`_embedders.get_embedder`) imports the plug-ins (`_wordllama`, `_minilm`, ...); the
plug-ins import only this module, so the two never import each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Embedder", "as_text_list", "clip_chars", "l2_normalise"]


@runtime_checkable
class Embedder(Protocol):
    """Turns prompts into fixed-size vectors.

    ``embed`` returns a ``(len(texts), dim)`` float32 array whose rows have unit L2 norm; a
    text with no tokens at all (e.g. ``""``) may give an all-zero row instead.
    """

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def as_text_list(texts: Sequence[str]) -> list[str]:
    """A list of str; a bare str is refused because it would embed each character."""
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of strings, not a single str")
    out = list(texts)
    for t in out:
        if not isinstance(t, str):
            raise TypeError(f"embed() takes strings, got {type(t).__name__}")
    return out


def clip_chars(text: str, head: int, tail: int) -> str:
    """Keep the first ``head`` and last ``tail`` characters of a huge text.

    Bounds tokenisation time for 100k-token agent prompts; every embedder here keeps at most a
    few hundred tokens from each end, far inside these character budgets.
    """
    if len(text) <= head + tail:
        return text
    return text[:head] + " " + text[len(text) - tail :] if tail else text[:head]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Row-normalise in place, leaving all-zero rows at zero instead of NaN."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x
