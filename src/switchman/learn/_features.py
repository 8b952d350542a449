"""Prompt → feature vector: the text the embedder sees, plus optional task features.

Agent and benchmark prompts often carry a long fixed preamble (few-shot examples, instructions)
before the part that varies. Averaged embeddings of the whole text are then nearly identical across
prompts, so the router embeds the *focus* of the prompt: its last block (text after the last blank
line), widened to the previous block when the last is short. `focus="full"` embeds everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from ._embedding import clip_chars

__all__ = ["Focus", "focus_text", "prompt_texts", "task_features"]

Focus = Literal["full", "last_block"]
_MIN_BLOCK_CHARS = 200


def focus_text(prompt: str, focus: Focus = "last_block") -> str:
    """The part of the prompt the embedder should see."""
    if focus == "full":
        return prompt
    blocks = [b for b in prompt.strip().split("\n\n") if b.strip()]
    if len(blocks) <= 1:
        return prompt
    picked = [blocks[-1]]
    for block in reversed(blocks[:-1]):
        if sum(len(b) for b in picked) >= _MIN_BLOCK_CHARS:
            break
        picked.insert(0, block)
    return "\n\n".join(picked)


def prompt_texts(prompts: Sequence[str], window: tuple[int, int] | None, focus: Focus) -> list[str]:
    """What the embedder sees of each prompt: its first and last characters (`window`), then its focus.

    The same function at training, evaluation and serving, so a prompt is embedded alike everywhere.
    """
    if window is None:
        return [focus_text(p, focus) for p in prompts]
    head, tail = window
    return [focus_text(clip_chars(p, head, tail), focus) for p in prompts]


def task_features(tasks: Sequence[str | None], vocabulary: Sequence[str], weight: float) -> np.ndarray:
    """One-hot task columns scaled by `weight` (zeros for an unknown or missing task)."""
    out = np.zeros((len(tasks), len(vocabulary)), dtype=np.float32)
    index = {t: i for i, t in enumerate(vocabulary)}
    for row, task in enumerate(tasks):
        col = index.get(task) if task is not None else None
        if col is not None:
            out[row, col] = weight
    return out
