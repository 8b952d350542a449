"""WordLlama embedder: mean of static token vectors (LLaMA-2 vocabulary), the cheap default.

It is a lookup table, not a transformer, so a prompt costs microseconds. The package bundles
``l2_supercat_256`` weights and tokenizer; its matryoshka training lets us keep the first 64 or
128 columns for smaller vectors.

Two things keep a long prompt cheap, both giving exactly the vectors of tokenizing the whole text
and summing float16 rows. The tokenizer (LLaMA-2's SentencePiece BPE, no pre-tokenizer) is applied
piece by piece, a piece being a run of word boundaries (``▁``) and the text up to the next one: no
vocabulary entry holds a ``▁`` after another character, so no merge crosses such a split, and
each piece's ids are cached (most of a prompt's words were seen before). The table stays float16
(a float32 copy would add 16 MiB to every worker), but numpy's float16 → float32 cast has no vector
path and cost more than the tokenizer: rows are widened through a 65,536-entry lookup table of every
float16's float32 value (exact), once per distinct token of the text.
"""

from __future__ import annotations

import importlib.util
import re
from array import array
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

from .._exceptions import EmbedderUnavailableError
from ._embedding import as_text_list, clip_chars, l2_normalise

__all__ = ["WordLlamaEmbedder", "bundled_dims"]

_CONFIG = "l2_supercat"
_MATRYOSHKA_DIMS = (64, 128, 256, 512, 1024)
_MAX_CHARS = 50_000  # per end; the mean over ~25k tokens barely moves after that
_BOUNDARY = "\u2581"  # SentencePiece's word boundary: the normaliser prepends one and turns spaces into it
#: A piece: a run of boundaries and the text up to the next boundary (or leading text without one).
_PIECES = re.compile(f"{_BOUNDARY}+[^{_BOUNDARY}]*|[^{_BOUNDARY}]+")
_CACHE_PIECES = 16_384  # cached pieces at most (~5 MiB); the cache restarts empty when full
_CACHE_PIECE_CHARS = 64  # longer pieces (blobs, hashes) are tokenized each time, never cached
_FEW_TOKENS = 64  # up to this many tokens, rows are widened as they come (no np.unique)


@cache
def _float16_values() -> np.ndarray:
    """The float32 value of every float16 bit pattern, indexed by the pattern (256 KiB)."""
    return np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)


def _package_dir() -> Path | None:
    spec = importlib.util.find_spec("wordllama")
    locs = spec.submodule_search_locations if spec else None
    return Path(next(iter(locs))) if locs else None


@cache
def bundled_dims() -> tuple[int, ...]:
    """Dims buildable offline: the bundled weights' width and its matryoshka truncations."""
    pkg = _package_dir()
    if pkg is None:
        return ()
    widths = [
        int(m.group(1))
        for f in (pkg / "weights").glob(f"{_CONFIG}_*.safetensors")
        if (m := re.fullmatch(rf"{_CONFIG}_(\d+)\.safetensors", f.name))
    ]
    return tuple(d for d in _MATRYOSHKA_DIMS if widths and d <= max(widths))


class WordLlamaEmbedder:
    """``wordllama-<dim>``: same vectors as ``WordLlama.embed(norm=True)``, without batch padding."""

    def __init__(self, dim: int = 256) -> None:
        dims = bundled_dims()
        if dim not in dims:
            raise ValueError(f"wordllama dim must be one of {dims} (the bundled weights), got {dim}")
        self.dim = dim
        self.name = f"wordllama-{dim}"
        pkg = _package_dir()
        assert pkg is not None  # bundled_dims() found it
        # Read the bundled files directly instead of importing wordllama: its import pulls in
        # requests and configures the root logger, and its loader looks for the tokenizer in a
        # folder the wheel does not ship (then tries Hugging Face). The table stays float16 as
        # stored (half the memory); gathered rows are widened to float32, which is exact.
        from safetensors import SafetensorError, safe_open
        from tokenizers import Tokenizer

        weights = pkg / "weights" / f"{_CONFIG}_{max(dims)}.safetensors"
        tokenizer = pkg / "tokenizers" / f"{_CONFIG}_tokenizer_config.json"
        try:
            with safe_open(str(weights), framework="numpy") as handle:
                table = handle.get_tensor("embedding.weight")
            # Pieces go to the bare BPE model: the normaliser is applied to the whole text first
            # (`token_ids`), and there is no pre-tokenizer or special token to add.
            self._tok = Tokenizer(Tokenizer.from_file(str(tokenizer)).model)
        except (OSError, SafetensorError, KeyError, ValueError) as exc:
            raise EmbedderUnavailableError(f"cannot read wordllama's bundled files in {pkg}: {exc}") from exc
        self._table = np.ascontiguousarray(table[:, :dim], dtype=np.float16)
        self._bits = self._table.view(np.uint16)
        self._pieces: dict[str, bytes] = {}  # piece → its token ids as uint16 bytes (the vocabulary has 32,000)

    def token_ids(self, text: str) -> np.ndarray:
        """The LLaMA-2 token ids of `text` (no special tokens), as the bundled tokenizer gives them."""
        if not text:
            return np.zeros(0, dtype=np.intp)
        pieces = _PIECES.findall(_BOUNDARY + text.replace(" ", _BOUNDARY))
        cache = self._pieces
        found = [cache.get(p) for p in pieces]
        missing = list(dict.fromkeys(p for p, ids in zip(pieces, found, strict=True) if ids is None))
        if missing:
            fresh = self._encode_pieces(missing)
            found = [ids if ids is not None else fresh[p] for p, ids in zip(pieces, found, strict=True)]
            if len(cache) + len(fresh) > _CACHE_PIECES:
                cache.clear()
            cache.update((p, ids) for p, ids in fresh.items() if len(p) <= _CACHE_PIECE_CHARS)
        joined = b"".join(ids for ids in found if ids is not None)  # every piece is found by now
        ids = np.frombuffer(joined, dtype=np.uint16).astype(np.intp)  # array("H") is native uint16
        np.minimum(ids, self._table.shape[0] - 1, out=ids)
        return ids

    def _encode_pieces(self, pieces: list[str]) -> dict[str, bytes]:
        """Each piece's token ids (uint16 bytes), from one call to the tokenizer."""
        enc = self._tok.encode(pieces, is_pretokenized=True, add_special_tokens=False)
        groups: list[list[int]] = [[] for _ in pieces]
        for token, word in zip(enc.ids, enc.word_ids, strict=True):
            if word is not None:  # None: a special token, never added here
                groups[word].append(token)
        return {p: array("H", ids).tobytes() for p, ids in zip(pieces, groups, strict=True)}

    def _sum_rows(self, ids: np.ndarray) -> np.ndarray:
        """`table[ids].sum(axis=0, dtype=float32)`, the same float32 numbers, without numpy's slow float16 cast."""
        if ids.size <= _FEW_TOKENS:
            rows = np.take(_float16_values(), self._bits[ids])
        else:  # widen each distinct row once, then lay the rows out in the text's order
            distinct, where = np.unique(ids, return_inverse=True)
            rows = np.take(_float16_values(), self._bits[distinct])[where]
        total: np.ndarray = rows.sum(axis=0)
        return total

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Sum each text's token vectors (mean and sum agree after L2), one gather per text."""
        items = [clip_chars(t, _MAX_CHARS, _MAX_CHARS) for t in as_text_list(texts)]
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for row, text in enumerate(items):
            ids = self.token_ids(text)
            if ids.size:
                out[row] = self._sum_rows(ids)
        return l2_normalise(out)
