"""The embedding cache: each distinct text embedded once, order kept, one atomic file per embedder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from switchman.learn import _cache


class CountingEmbedder:
    """A deterministic embedder that records which texts it was asked to embed."""

    name = "counting-test"
    dim = 4

    def __init__(self) -> None:
        self.seen: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.seen += list(texts)
        return np.array([[len(t), t.count("a"), t.count("b"), 1.0] for t in texts], dtype=np.float32)


def test_each_text_is_embedded_once_and_rows_keep_their_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHMAN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_cache, "_memory", {})
    embedder = CountingEmbedder()
    first = _cache.embed_cached(embedder, ["ab", "a", "ab"])
    assert embedder.seen == ["ab", "a"]  # the duplicate is embedded once
    assert first[:, 0].tolist() == [2.0, 1.0, 2.0]
    second = _cache.embed_cached(embedder, ["bbb", "a"])
    assert embedder.seen == ["ab", "a", "bbb"]  # only the new text
    assert second[:, 0].tolist() == [3.0, 1.0]
    files = list((tmp_path / "embeddings").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"


def test_the_store_survives_a_new_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHMAN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_cache, "_memory", {})
    _cache.embed_cached(CountingEmbedder(), ["ab", "a"])
    monkeypatch.setattr(_cache, "_memory", {})  # as a fresh process would start
    fresh = CountingEmbedder()
    again = _cache.embed_cached(fresh, ["a", "ab"])
    assert fresh.seen == [] and again[:, 0].tolist() == [1.0, 2.0]


def test_use_cache_false_always_embeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHMAN_CACHE_DIR", str(tmp_path))
    embedder = CountingEmbedder()
    _cache.embed_cached(embedder, ["a"], use_cache=False)
    _cache.embed_cached(embedder, ["a"], use_cache=False)
    assert embedder.seen == ["a", "a"] and not (tmp_path / "embeddings").exists()


def test_a_key_ending_in_a_nul_byte_survives_a_new_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHMAN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_cache, "_memory", {})
    text = next(f"text {i}" for i in range(100_000) if _cache._digest(f"text {i}").endswith(b"\0"))
    _cache.embed_cached(CountingEmbedder(), [text])
    monkeypatch.setattr(_cache, "_memory", {})
    fresh = CountingEmbedder()
    _cache.embed_cached(fresh, [text])
    assert fresh.seen == []  # found again (numpy's "S16" had dropped the trailing NUL)


def test_embedding_reports_counts_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from switchman.learn import EMBED_BATCH

    monkeypatch.setenv("SWITCHMAN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_cache, "_memory", {})
    reports: list[tuple[str, int | None, int | None]] = []
    texts = [f"prompt {i}" for i in range(EMBED_BATCH * 2 + 5)]
    vectors = _cache.embed_cached(CountingEmbedder(), texts, progress=lambda m, d=None, t=None: reports.append((m, d, t)))
    assert vectors[:, 0].tolist() == [float(len(t)) for t in texts]  # rows in order across batches
    n = len(texts)
    assert reports == [("embedding (counting-test)", done, n) for done in (0, EMBED_BATCH, 2 * EMBED_BATCH, n)]
