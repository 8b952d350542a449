"""WordLlama embedder: mean of static token vectors (LLaMA-2 vocabulary), the cheap default.

It is a lookup table, not a transformer, so a prompt costs microseconds. The package bundles
``l2_supercat_256`` weights and tokenizer; its matryoshka training lets us keep the first 64 or
128 columns for smaller vectors.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ._embedders import EmbedderUnavailableError, as_text_list, clip_chars, l2_normalise

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


def _import_wordllama() -> Any:
    """Import wordllama without letting it configure the host's logging.

    ``wordllama.inference`` calls ``logging.basicConfig(level=INFO)`` at import; that is a no-op
    when the root logger already has a handler, so we park a NullHandler there meanwhile.
    """
    root = logging.getLogger()
    guard = logging.NullHandler()
    root.addHandler(guard)
    try:
        from wordllama import WordLlama
    except ImportError as e:
        raise EmbedderUnavailableError(f"the wordllama embedder needs the wordllama package: {e}") from e
    finally:
        root.removeHandler(guard)
    return WordLlama


class WordLlamaEmbedder:
    """``wordllama-<dim>``: same vectors as ``WordLlama.embed(norm=True)``, without batch padding."""

    def __init__(self, dim: int = 256) -> None:
        dims = bundled_dims()
        if dim not in dims:
            raise ValueError(f"wordllama dim must be one of {dims} (the bundled weights), got {dim}")
        self.dim = dim
        self.name = f"wordllama-{dim}"
        wordllama_cls = _import_wordllama()
        pkg = _package_dir()
        assert pkg is not None  # bundled_dims() found it
        full = max(dims)
        # wordllama 0.4 looks for bundled tokenizers in "<pkg>/tokenizer/" but ships them in
        # "<pkg>/tokenizers/", so load() would try Hugging Face. Passing the package as the
        # cache dir makes both lookups ("<cache>/weights", "<cache>/tokenizers") hit the
        # bundled files; disable_download guarantees no network either way.
        model = wordllama_cls.load(
            config=_CONFIG,
            cache_dir=pkg,
            dim=full,
            trunc_dim=dim if dim < full else None,
            disable_download=True,
        )
        self._table = np.ascontiguousarray(model.embedding[:, :dim], dtype=np.float32)
        self._tok = model.tokenizer
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
                out[row] = self._table[ids].sum(axis=0)
        return l2_normalise(out)
