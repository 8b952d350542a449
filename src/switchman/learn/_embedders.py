"""Prompt embedders for the learned router, behind one registry keyed by a stable name.

The name is what a trained router file records, so it must pin down everything that changes
the vectors (model, dimension, truncation); aliases such as ``"wordllama"`` resolve to a
canonical name, which is what ``Embedder.name`` returns. Loading is slow and embedding is on
the request path, so nothing loads at import time and each embedder is built once per process.

Names: ``hashing``, ``wordllama-<64|128|256>`` (alias ``wordllama``),
``minilm-int8:<head|tail|head_tail>`` (alias ``minilm-int8``),
``openai:<base_url>#<model>``, ``sentence-transformers:<model>``.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from .._exceptions import (
    EmbedderUnavailableError,
    RateLimitError,
    UnknownEmbedderError,
    UpstreamBadRequestError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamServerError,
    UpstreamTimeout,
)
from .._environ import Environment
from .._urls import shown_url
from ._embedding import Embedder, as_text_list, clip_chars, l2_normalise

if TYPE_CHECKING:
    import httpx

__all__ = ["HashingEmbedder", "OpenAIEmbedder", "SentenceTransformersEmbedder", "available_embedders", "get_embedder"]

_ALIASES = {"wordllama": "wordllama-256", "minilm-int8": "minilm-int8:head_tail"}
_PATTERNS = ("openai:<base_url>#<model>", "sentence-transformers:<model>")


# ---------------------------------------------------------------------------------- hashing


class HashingEmbedder:
    """Signed feature hashing of word unigrams and bigrams: no dependencies, no model file.

    A fallback when no model is installed and a fast, deterministic test double. Buckets come
    from blake2b (not Python's per-process salted ``hash``) so vectors match across processes.
    """

    name = "hashing"
    _TOKEN = re.compile(r"\w+")
    _MAX_CHARS = 50_000

    def __init__(self, dim: int = 512) -> None:
        self.dim = dim

    @functools.lru_cache(maxsize=1 << 18)  # noqa: B019 - one instance per process, via the registry
    def _bucket(self, feature: str) -> tuple[int, float]:
        h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
        return h % self.dim, (1.0 if h >> 63 else -1.0)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Hash each text into ``dim`` signed counts, then L2-normalise."""
        items = as_text_list(texts)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for row, text in enumerate(items):
            words = self._TOKEN.findall(clip_chars(text, self._MAX_CHARS, self._MAX_CHARS).lower())
            feats = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
            if not feats:
                continue
            idx, sign = zip(*map(self._bucket, feats), strict=True)
            out[row] = np.bincount(idx, weights=sign, minlength=self.dim)
        return l2_normalise(out)


# ---------------------------------------------------------------------------------- openai


class OpenAIEmbedder:
    """A remote OpenAI-compatible ``POST {base_url}/embeddings`` endpoint.

    ``dim`` is unknown until the endpoint has answered once, so reading it before any
    ``embed`` call sends one probe request.
    """

    batch_size = 64

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        # The path goes before the base URL's query (Azure's ?api-version=), and messages show neither the query
        # nor a user:password (where credentials are written).
        self._url = urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/embeddings"))
        self._shown = shown_url(self.base_url)
        self.model = model
        self._api_key = api_key
        self.name = f"openai:{self.base_url}#{model}"
        self._timeout = timeout
        self._client: httpx.Client | None = None
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.embed(["dimension probe"])
        assert self._dim is not None
        return self._dim

    def close(self) -> None:
        """Release the HTTP connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def _pool(self) -> httpx.Client:
        """The connection pool, which carries the key: never a local of `_post`, whose frame a traceback shows."""
        import httpx

        if self._client is None:
            auth = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._client = httpx.Client(timeout=self._timeout, headers=auth)
        return self._client

    def _post(self, batch: list[str]) -> np.ndarray:
        import httpx

        pool = self._pool()
        where = f"embeddings endpoint {self._shown} ({self.model})"
        failure: UpstreamError | None = None
        try:
            resp = pool.post(self._url, json={"model": self.model, "input": batch})
        except httpx.TimeoutException as e:
            failure = UpstreamTimeout(f"{where} timed out: {e}", model=self.model)
        except httpx.TransportError as e:
            failure = UpstreamConnectionError(f"{where} unreachable: {e}", model=self.model)
        except httpx.HTTPError as e:  # a body it cannot decode, a redirect loop, ...: it too holds the request
            failure = UpstreamError(f"{where} failed: {type(e).__name__}: {self._unkeyed(str(e))}", model=self.model)
        if failure is not None:  # raised outside the except: httpx's error (and its frames) hold the key header
            raise failure
        if resp.status_code >= 400:
            msg = f"{where} answered {resp.status_code}: {self._unkeyed(resp.text)[:300]}"
            cls: type[UpstreamError] = (
                RateLimitError
                if resp.status_code == 429
                else UpstreamServerError
                if resp.status_code >= 500
                else UpstreamBadRequestError
            )
            raise cls(msg, model=self.model)
        try:
            data = sorted(resp.json()["data"], key=lambda d: d["index"])
            vecs = np.asarray([d["embedding"] for d in data], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as e:  # raised outside: a JSONDecodeError holds the whole body
            failure = UpstreamError(f"{where} sent a malformed response: {self._unkeyed(str(e))[:300]}",
                                    model=self.model)
        if failure is not None:
            raise failure
        if vecs.ndim != 2 or len(vecs) != len(batch):
            raise UpstreamError(f"{where} returned {vecs.shape} vectors for {len(batch)} inputs", model=self.model)
        return vecs

    def _unkeyed(self, text: str) -> str:
        """`text` without the key (an endpoint refusing it may echo it, as OpenAI's 401 does)."""
        return text.replace(self._api_key, "[redacted]") if self._api_key else text

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed in batches of 64 and re-normalise (not every compatible server normalises)."""
        items = as_text_list(texts)
        parts = [self._post(items[i : i + self.batch_size]) for i in range(0, len(items), self.batch_size)]
        if not parts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        out = np.concatenate(parts)
        if self._dim is not None and out.shape[1] != self._dim:
            raise UpstreamError(f"embeddings endpoint {self._shown} ({self.model}) changed dimension {self._dim} -> {out.shape[1]}", model=self.model)
        self._dim = out.shape[1]
        return l2_normalise(out)


# ---------------------------------------------------------------------------------- sentence-transformers


class SentenceTransformersEmbedder:
    """Any sentence-transformers model, for users who already have torch and the weights."""

    def __init__(self, model_name: str) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise EmbedderUnavailableError(
                f"embedder 'sentence-transformers:{model_name}' needs the sentence-transformers package: "
                "pip install sentence-transformers"
            ) from e
        self.name = f"sentence-transformers:{model_name}"
        self._model = SentenceTransformer(model_name)
        self.dim = int(self._model.get_sentence_embedding_dimension() or 0)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vecs = self._model.encode(as_text_list(texts), batch_size=32, convert_to_numpy=True, normalize_embeddings=True)
        return np.asarray(vecs, dtype=np.float32).reshape(-1, self.dim)


# ---------------------------------------------------------------------------------- registry

_cache: dict[tuple[str, int], Embedder] = {}
_lock = threading.Lock()


def _minilm_names() -> list[str]:
    from ._minilm import TRUNCATE_MODES, minilm_installed

    return [f"minilm-int8:{m}" for m in TRUNCATE_MODES] if minilm_installed() else []


def available_embedders() -> list[str]:
    """Canonical names buildable here (parametric ``openai:``/``sentence-transformers:`` not listed)."""
    from ._wordllama import bundled_dims

    names = ["hashing", *(f"wordllama-{d}" for d in bundled_dims()), *_minilm_names()]
    return sorted(names)


def _unknown(name: str, why: str = "") -> UnknownEmbedderError:
    aliases = ", ".join(f"{a} -> {c}" for a, c in _ALIASES.items())
    return UnknownEmbedderError(
        f"unknown embedder {name!r}{': ' + why if why else ''}; available: {', '.join(available_embedders())}; "
        f"also {', '.join(_PATTERNS)}; aliases: {aliases}"
    )


def _build(name: str, threads: int) -> Embedder:
    """Construct the embedder for a canonical ``name`` (slow: loads the model)."""
    if name == "hashing":
        return HashingEmbedder()
    if m := re.fullmatch(r"wordllama-(\d+)", name):
        from ._wordllama import WordLlamaEmbedder, bundled_dims

        dim = int(m.group(1))
        if dim not in bundled_dims():
            raise _unknown(name, f"the installed wordllama package only has weights for dims {bundled_dims()}")
        return WordLlamaEmbedder(dim)
    if m := re.fullmatch(r"minilm-int8:(\w+)", name):
        from ._minilm import TRUNCATE_MODES, MiniLMEmbedder

        if m.group(1) not in TRUNCATE_MODES:
            raise _unknown(name, f"truncation must be one of {', '.join(TRUNCATE_MODES)}")
        return MiniLMEmbedder(truncate=m.group(1), threads=threads)
    if name.startswith("openai:"):
        base_url, sep, model = name.removeprefix("openai:").rpartition("#")
        if not (sep and base_url and model):
            raise _unknown(name, "expected openai:<base_url>#<model>")
        return OpenAIEmbedder(base_url, model, api_key=Environment.read().embeddings_api_key)
    if name.startswith("sentence-transformers:") and name.removeprefix("sentence-transformers:"):
        return SentenceTransformersEmbedder(name.removeprefix("sentence-transformers:"))
    raise _unknown(name)


def get_embedder(name: str, *, threads: int = 1) -> Embedder:
    """The process-wide embedder for ``name`` (or an alias), built on first request.

    ``threads`` is ONNX Runtime's intra-op thread count for ``minilm-int8`` (default 1, so
    the embedder does not compete with the server for cores); other embedders ignore it.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    canonical = _ALIASES.get(name, name)
    key = (canonical, threads if canonical.startswith("minilm-int8:") else 1)
    with _lock:
        emb = _cache.get(key)
        if emb is None:
            emb = _cache[key] = _build(canonical, key[1])
    return emb

