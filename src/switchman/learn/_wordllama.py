"""WordLlama embedder: mean of static token vectors (LLaMA-2 vocabulary), the cheap default.

It is a lookup table, not a transformer, so a prompt costs microseconds. The package bundles
``l2_supercat_256`` weights and tokenizer; its matryoshka training lets us keep the first 64 or
128 columns for smaller vectors.
"""

from __future__ import annotations

import importlib.util
import re
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
            self._tok = Tokenizer.from_file(str(tokenizer))
        except (OSError, SafetensorError, KeyError, ValueError) as exc:
            raise EmbedderUnavailableError(f"cannot read wordllama's bundled files in {pkg}: {exc}") from exc
        self._table = np.ascontiguousarray(table[:, :dim], dtype=np.float16)
        self._tok.no_padding()
        self._tok.no_truncation()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Sum each text's token vectors (mean and sum agree after L2), one gather per text."""
        items = [clip_chars(t, _MAX_CHARS, _MAX_CHARS) for t in as_text_list(texts)]
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        if len(items) == 1:
            encs = [self._tok.encode(items[0], add_special_tokens=False)]
        else:
            encs = self._tok.encode_batch(items, add_special_tokens=False)
        top = self._table.shape[0] - 1
        for row, enc in enumerate(encs):
            if enc.ids:
                ids = np.minimum(np.asarray(enc.ids, dtype=np.intp), top)
                out[row] = self._table[ids].sum(axis=0, dtype=np.float32)
        return l2_normalise(out)
