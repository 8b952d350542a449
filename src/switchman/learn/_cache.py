"""On-disk cache of prompt embeddings, so repeated train/eval runs embed each prompt once.

Keyed by the embedder name and a hash of the exact texts; stored as .npy (no pickles) under
$SWITCHMAN_CACHE_DIR or ~/.cache/switchman/embeddings. A cache miss or unreadable entry just
recomputes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._embedders import Embedder

__all__ = ["cache_dir", "embed_cached"]


def cache_dir() -> Path:
    """Where cached embeddings live."""
    root = os.environ.get("SWITCHMAN_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "switchman")
    return Path(root) / "embeddings"


def _key(embedder_name: str, texts: Sequence[str]) -> str:
    digest = hashlib.blake2b(embedder_name.encode(), digest_size=20)
    for text in texts:
        digest.update(b"\x00" + text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def embed_cached(embedder: Embedder, texts: Sequence[str], *, use_cache: bool = True) -> np.ndarray:
    """Embeddings of `texts`, read from the cache when present, else computed and stored."""
    if not use_cache:
        return embedder.embed(texts)
    path = cache_dir() / f"{_key(embedder.name, texts)}.npy"
    try:
        cached = np.load(path, allow_pickle=False)
        if cached.shape[0] == len(texts):
            return cached
    except (OSError, ValueError):
        pass
    vectors = np.asarray(embedder.embed(texts), dtype=np.float32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, vectors, allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home still trains, just without the cache
    return vectors
