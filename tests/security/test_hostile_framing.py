"""Request framing a hostile client can bend: an answer given before `100 Continue` (the client may skip the body,
so the connection must close), Content-Encoding over several lines, bodyless requests with an encoding, a head over
the cap pipelined behind a small request, below-the-app refusals on percent-encoded and absolute targets, and the
threads large bodies are decided in."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from security_support import (
    answer_to,
    answers_to,
    config_data,
    connect,
    post_head,
    read_response,
    running_gateway,
)
from server_support import LoopbackServer

from switchman.gateway import Gateway, _offload
from switchman.testing import FakeUpstream

_CHAT = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture(scope="module")
def tight(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, LoopbackServer]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('framing') / 'ledger.sqlite3'}"
    with running_gateway(config_data(upstream, url, limits={"max_header_bytes": 2048})) as running:
        yield running


def _chat_with(*lines: bytes) -> bytes:
    """A small chat request with these header lines."""
    return post_head("/v1/chat/completions", *lines, f"content-length: {len(_CHAT)}".encode()) + _CHAT


@pytest.mark.parametrize("request_head", [
    post_head("/v1/chat/completions", b"expect: 100-continue", b"content-length: 50", b"content-encoding: gzip"),
    post_head("/v1/nope", b"expect: 100-continue", b"content-length: 50"),
])
def test_an_answer_before_100_continue_closes_the_connection(tight: tuple[Gateway, LoopbackServer],
                                                             request_head: bytes) -> None:
    """The client never got `100 Continue`, so it may skip the body: kept alive, the next request's first 50 bytes
    would be read as this one's body (a desync)."""
    response = answer_to(tight[1].port, request_head)
    assert response.status in (404, 415), response
    assert response.headers.get("connection") == "close" and response.closed, response


def test_an_early_answer_to_a_body_sent_without_waiting_keeps_the_connection(
        tight: tuple[Gateway, LoopbackServer]) -> None:
    """The whole body arrived with the head: nothing is left to disagree on, the connection stays open."""
    _, server = tight
    response = answer_to(server.port, post_head("/v1/chat/completions", b"expect: 100-continue", b"content-length: 4",
                                            b"content-encoding: gzip") + b"abcd")
    assert response.status == 415 and not response.closed, response


@pytest.mark.parametrize(("lines", "named"), [
    ([b"content-encoding: gzip", b"content-encoding: identity"], "gzip"),
    ([b"content-encoding: identity", b"content-encoding: br"], "br"),
    ([b"content-encoding: identity, , x-zip"], "x-zip"),
])
def test_every_content_encoding_line_counts(tight: tuple[Gateway, LoopbackServer], lines: list[bytes],
                                            named: str) -> None:
    response = answer_to(tight[1].port, _chat_with(*lines))
    assert response.status == 415, response
    assert f"'{named}'" in response.json()["error"]["message"], response


@pytest.mark.parametrize("lines", [[b"content-encoding: identity, identity"],
                                   [b"content-encoding: identity", b"content-encoding: IDENTITY"]])
def test_identity_listed_twice_is_no_encoding(tight: tuple[Gateway, LoopbackServer], lines: list[bytes]) -> None:
    response = answer_to(tight[1].port, _chat_with(*lines))
    assert response.status == 200, response


def test_a_request_without_a_body_is_not_refused_for_its_encoding(tight: tuple[Gateway, LoopbackServer]) -> None:
    _, server = tight
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/health", headers={"content-encoding": "gzip"}).status_code == 200
        zero = http.post("/v1/chat/completions", content=b"", headers={"content-encoding": "gzip"})
        assert zero.status_code == 400 and zero.json()["error"]["code"] != "unsupported_content_encoding", zero.text


def test_a_big_head_pipelined_behind_a_small_request_is_refused(tight: tuple[Gateway, LoopbackServer]) -> None:
    """The head cap is per request: a 100 KB head sent in the same read as a small request before it is a 431."""
    _, server = tight
    small = post_head("/v1/chat/completions", f"content-length: {len(_CHAT)}".encode()) + _CHAT
    big = post_head("/v1/chat/completions", b"x-pad: " + b"p" * 100_000, f"content-length: {len(_CHAT)}".encode()) + _CHAT
    answers = answers_to(server.port, small + big)
    assert [status for status, _ in answers] == [200, 431], answers
    assert orjson.loads(answers[1][1])["error"]["code"] == "request_header_too_large", answers  # OpenAI's envelope


def test_a_big_head_after_a_body_in_the_same_read_is_refused(tight: tuple[Gateway, LoopbackServer]) -> None:
    """Also when the request before it was still reading its body when the read came (no head was being counted)."""
    _, server = tight
    small = post_head("/v1/chat/completions", f"content-length: {len(_CHAT)}".encode())
    big = post_head("/v1/chat/completions", b"x-pad: " + b"p" * 100_000, f"content-length: {len(_CHAT)}".encode()) + _CHAT
    answers = answers_to(server.port, small, _CHAT + big)
    assert [status for status, _ in answers] == [200, 431], answers


def test_a_pipelined_head_over_the_cap_across_reads_is_refused(tight: tuple[Gateway, LoopbackServer]) -> None:
    """A head begun behind another request in one read and ended in the next: both parts count, though each is
    under the cap."""
    _, server = tight
    pads = [f"x-pad-{i}: {'p' * 40}".encode() for i in range(60)]  # some 3 KB: two parts of some 1.5 KB
    small = post_head("/v1/chat/completions", f"content-length: {len(_CHAT)}".encode()) + _CHAT
    big = post_head("/v1/chat/completions", *pads, f"content-length: {len(_CHAT)}".encode()) + _CHAT
    middle = big.index(b"x-pad-30:")
    sock = connect(server.port)
    try:
        sock.sendall(small + big[:middle])
        first = read_response(sock)
        sock.sendall(big[middle:])
        second = read_response(sock)
    finally:
        sock.close()
    assert first.status == 200 and not first.closed, first
    assert second.status == 431 and second.closed, second


@pytest.mark.parametrize("target", ["/v1/%6Dessages", "http://test/v1/messages"])
def test_refusals_below_the_app_decode_the_target_as_the_app_does(tight: tuple[Gateway, LoopbackServer],
                                                                  target: str) -> None:
    """The app answers these targets as /v1/messages (uvicorn decodes them): so does a refusal below it."""
    _, server = tight
    response = answer_to(server.port, post_head(target, b"transfer-encoding: chunked") + b"zz\r\n")
    assert response.status == 400, response
    data = response.json()
    assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error", data


def _wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


def test_large_bodies_are_decided_in_their_own_few_threads(upstream: FakeUpstream, ledger_url: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of large requests holds at most OFFLOAD_THREADS threads, not anyio's 40 that the budget refresh,
    shadow decisions and reload share; the others wait for a token."""
    body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": ""}] * 5_000})
    assert len(body) > _offload.OFFLOAD_BYTES
    burst = _offload.OFFLOAD_THREADS + 2
    inside, release, lock = [0], threading.Event(), threading.Lock()
    with running_gateway(config_data(upstream, ledger_url)) as (gateway, server):
        decider = gateway.decider
        request = decider.request

        def held(*args: Any, **kwargs: Any) -> Any:
            with lock:
                inside[0] += 1
            release.wait(30)
            return request(*args, **kwargs)

        monkeypatch.setattr(decider, "request", held)
        statuses: list[int] = []

        def post() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as http:
                statuses.append(http.post("/v1/chat/completions", content=body).status_code)

        posts = [threading.Thread(target=post) for _ in range(burst)]
        for thread in posts:
            thread.start()
        try:
            tokens = _offload.OFFLOAD_THREADS

            def bounded() -> bool:  # `tokens` decisions held in their threads, the others waiting for a token
                with lock:
                    if inside[0] != tokens:
                        return False
                return any(limiter.statistics().tasks_waiting == burst - tokens and limiter.borrowed_tokens == tokens
                           for limiter in list(_offload._limiters.values()))

            _wait_for(bounded, "two decisions held in the offload threads, the others waiting for a token")
            with lock:
                assert inside[0] == tokens  # (the waiting ones cannot start before `release`)
        finally:
            release.set()
            for thread in posts:
                thread.join(60)
        assert statuses == [200] * burst and inside[0] == burst


def test_an_embeddings_decision_that_fails_in_its_thread_keeps_its_ledger_row(
        upstream: FakeUpstream, ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from switchman.gateway import _embeddings

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug in deciding")

    monkeypatch.setattr(_embeddings, "_decide", broken)
    with running_gateway(config_data(upstream, ledger_url)) as (gateway, server), \
            httpx.Client(base_url=server.url, timeout=30) as http:
        response = http.post("/v1/embeddings", json={"model": "cheap", "input": ["a" * 40] * 2_000},  # > 64 KiB
                             headers={"x-request-id": "emb-broken-1"})
        assert response.status_code == 500, response.text
        assert gateway.ledger is not None
        gateway.ledger.flush_sync(timeout=5)
        rows = [r for r in gateway.ledger.records() if r.request_id == "emb-broken-1"]
        assert len(rows) == 1 and rows[0].status == "error" and rows[0].error == "a bug in deciding", rows


def test_a_large_chat_decision_that_fails_in_its_thread_keeps_its_ledger_row(
        upstream: FakeUpstream, ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": ""}] * 5_000})
    assert len(body) > _offload.OFFLOAD_BYTES
    with running_gateway(config_data(upstream, ledger_url)) as (gateway, server), \
            httpx.Client(base_url=server.url, timeout=30) as http:

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug in deciding")

        monkeypatch.setattr(gateway.decider, "request", broken)
        response = http.post("/v1/chat/completions", content=body, headers={"x-request-id": "chat-broken-1"})
        assert response.status_code == 500, response.text
        assert gateway.ledger is not None
        gateway.ledger.flush_sync(timeout=5)
        rows = [r for r in gateway.ledger.records() if r.request_id == "chat-broken-1"]
        assert len(rows) == 1 and rows[0].status == "error" and rows[0].error == "a bug in deciding", rows


def _get_of(size: int, sep: bytes) -> bytes:
    """A GET /health head of exactly `size` bytes, its headers written `name<sep>value`."""
    base = b"GET /health HTTP/1.1\r\nhost" + sep + b"test\r\nx-pad" + sep + b"\r\n\r\n"
    head = base.replace(b"x-pad" + sep, b"x-pad" + sep + b"p" * (size - len(base)))
    assert len(head) == size
    return head


@pytest.mark.parametrize(("sep", "under", "statuses"), [
    (b": ", 0, [200] * 4), (b": ", 1, [200] * 4), (b":", 0, [200] * 4), (b":", 1, [200] * 4),
    (b":", -1, [200, 431]),  # written the least the parser takes, the estimate is exact
])
def test_pipelined_heads_at_the_cap_are_counted_exactly(tight: tuple[Gateway, LoopbackServer], sep: bytes,
                                                        under: int, statuses: list[int]) -> None:
    """Heads of the cap's size (or a byte under it) pipelined in one read are all served; a byte over is a 431.
    The pipelined ones are measured from the parser's pieces: that estimate must not exceed the bytes sent (it
    leaves out the optional spaces around values)."""
    _, server = tight
    head = _get_of(2048 - under, sep)
    last = _get_of(2048 - under, sep).replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nconnection: close\r\n", 1)
    last = last.replace(b"p" * len(b"connection: close\r\n"), b"", 1)
    answers = answers_to(server.port, _get_of(2048, sep) + head * 2 + last)
    assert [status for status, _ in answers] == statuses, answers


def test_a_header_line_in_progress_at_the_end_of_a_read_counts(tight: tuple[Gateway, LoopbackServer]) -> None:
    """A pipelined head whose read ends inside a 100 KB header line: the parser reports that line only when the next
    begins, in the next read; the bytes of the head that read held count all the same."""
    _, server = tight
    small = post_head("/v1/chat/completions", f"content-length: {len(_CHAT)}".encode()) + _CHAT
    sock = connect(server.port)
    try:
        sock.sendall(small + b"GET /health HTTP/1.1\r\nhost: t\r\nx-big: " + b"a" * 100_000)
        first = read_response(sock)
        sock.sendall(b"\r\nx-end: 1\r\n\r\n")
        second = read_response(sock)
    finally:
        sock.close()
    assert first.status == 200 and not first.closed, first
    assert second.status == 431 and second.closed, second


@pytest.mark.parametrize("split", [-1, -2, -3])
def test_a_head_whose_end_spans_two_reads_is_not_refused_for_its_body(tight: tuple[Gateway, LoopbackServer],
                                                                       split: int) -> None:
    """The blank line ending a head, split across two reads, the second bringing a 5 KB body: the head is under the
    cap, the body does not count."""
    _, server = tight
    body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "p" * 5000}]})
    head = post_head("/v1/chat/completions", f"content-length: {len(body)}".encode())
    sock = connect(server.port)
    try:
        sock.sendall(head[:split])
        time.sleep(0.2)  # two reads (what is asserted does not depend on it: a single read is served too)
        sock.sendall(head[split:] + body)
        response = read_response(sock)
    finally:
        sock.close()
    assert response.status == 200, response


def _chunked_with_trailer(trailer: bytes) -> bytes:
    return (post_head("/v1/chat/completions", b"transfer-encoding: chunked") + b"%x\r\n" % len(_CHAT) + _CHAT
            + b"\r\n0\r\n" + trailer + b"\r\n\r\n")


def test_a_chunked_body_s_trailers_are_not_request_headers(tight: tuple[Gateway, LoopbackServer]) -> None:
    """A trailer naming a switchman header (here with a value the gateway refuses as a header) changes nothing."""
    _, server = tight
    response = answer_to(server.port, _chunked_with_trailer(b"x-switchman-escalate: maybe"))
    assert response.status == 200, response


def test_trailers_over_the_head_cap_are_refused(tight: tuple[Gateway, LoopbackServer]) -> None:
    """Trailers are header lines: together they count against the head cap."""
    _, server = tight
    response = answer_to(server.port, _chunked_with_trailer(b"x-t: " + b"a" * 100_000))
    assert response.status == 431 and response.closed, response


def test_an_answer_before_100_continue_lets_the_client_finish_sending(tight: tuple[Gateway, LoopbackServer]) -> None:
    """A client that sends its body without waiting for `100 Continue`, while the early answer closes the connection:
    the close lingers (reading and dropping the body), so the client's sending ends without a reset."""
    _, server = tight
    body = b"x" * 16_000_000  # more than the socket buffers hold: the server must read it
    sock = connect(server.port)
    errors: list[BaseException] = []

    def send_body() -> None:
        try:
            sock.sendall(body)
        except OSError as exc:
            errors.append(exc)

    try:
        sock.sendall(post_head("/v1/chat/completions", b"expect: 100-continue", f"content-length: {len(body)}".encode()))
        sender = threading.Thread(target=send_body)
        sender.start()
        sender.join(20)
        response = read_response(sock)
    finally:
        sock.close()
    assert not errors, errors
    assert response.status == 413 and response.closed, response  # over the body cap: answered at once


def test_a_big_messages_head_pipelined_behind_a_small_request_is_refused_in_anthropics_envelope(
        tight: tuple[Gateway, LoopbackServer]) -> None:
    small = _chat_with()
    big = post_head("/v1/messages", b"x-pad: " + b"p" * 100_000, f"content-length: {len(_CHAT)}".encode()) + _CHAT
    answers = answers_to(tight[1].port, small + big)
    assert [status for status, _ in answers] == [200, 431], answers
    refused = orjson.loads(answers[1][1])
    assert refused["type"] == "error" and refused["error"]["type"] == "request_too_large", refused
