"""Cache of prompt embeddings, so train/eval/CV embed each distinct prompt once.

Keyed per text (embedder name + blake2b of the text), held in memory for the process and
persisted per embedder as one .npz file (keys and vectors; no pickles) under
$SWITCHMAN_CACHE_DIR or ~/.cache/switchman/embeddings. Cross-validation then embeds each prompt
once however the folds slice the data. An unreadable store is ignored and rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._environ import Environment
from ._embedding import Embedder
from ._progress import Progress, embed_in_batches, quiet

__all__ = ["cache_dir", "embed_cached"]

_memory: dict[str, dict[bytes, np.ndarray]] = {}
_STORE_VERSION = 2  # bump when an embedder's vectors change under the same name


def cache_dir() -> Path:
    """Where cached embeddings live."""
    return Environment.read().cache_dir / "embeddings"


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _store_path(embedder_name: str) -> Path:
    """One .npz per embedder holding keys and vectors together, so a reader never pairs one writer's
    keys with another's vectors (each write replaces the whole file atomically)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", embedder_name)[:80]
    tag = hashlib.blake2b(f"{embedder_name}|v{_STORE_VERSION}".encode(), digest_size=6).hexdigest()
    return cache_dir() / f"{slug}-{tag}.npz"


def _load(embedder_name: str) -> dict[bytes, np.ndarray]:
    key = f"{cache_dir()}|{embedder_name}"
    if key not in _memory:
        entries: dict[bytes, np.ndarray] = {}
        try:
            with np.load(_store_path(embedder_name), allow_pickle=False) as store:
                keys, vectors = store["keys"], store["vectors"]
            if len(keys) == len(vectors):
                # numpy's "S16" drops a key's trailing NUL bytes (1 key in 256): pad them back.
                entries = {bytes(k).ljust(16, b"\0"): v for k, v in zip(keys, vectors, strict=True)}
        except (OSError, ValueError, KeyError):
            pass
        _memory[key] = entries
    return _memory[key]


def _save(embedder_name: str, entries: dict[bytes, np.ndarray]) -> None:
    path = _store_path(embedder_name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(entries), dtype="S16")
        vectors = np.stack(list(entries.values())).astype(np.float32)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, keys=keys, vectors=vectors)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home still trains, just without the cache


def embed_cached(
    embedder: Embedder, texts: Sequence[str], *, use_cache: bool = True, progress: Progress = quiet
) -> np.ndarray:
    """Embeddings of `texts` (rows in order), computing only those not cached yet (counted in `progress`)."""
    if not use_cache:
        return embed_in_batches(embedder, texts, progress=progress)
    entries = _load(embedder.name)
    digests = [_digest(t) for t in texts]
    missing: dict[bytes, str] = {}
    for digest, text in zip(digests, texts, strict=True):
        if digest not in entries and digest not in missing:
            missing[digest] = text
    if missing:
        vectors = embed_in_batches(embedder, list(missing.values()), progress=progress)
        entries.update(zip(missing, vectors, strict=True))
        _save(embedder.name, entries)
    if not digests:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    return np.stack([entries[d] for d in digests])
