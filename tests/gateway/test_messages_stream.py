"""`MessagesStream` holding back a tool call's arguments that cannot begin a JSON object (what its Anthropic client
reads is tested end to end in test_upstream_shapes.py): what the held text costs, what an operator is told."""

from __future__ import annotations

import logging
import tracemalloc

import orjson
import pytest

from switchman.gateway._dialects._messages_stream import MessagesStream


def _arguments(text: str, *, first: bool = False) -> bytes:
    call: dict[str, object] = {"index": 0, "function": {"arguments": text}}
    if first:
        call.update(id="t1", function={"name": "f", "arguments": text})
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
             "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _stream() -> MessagesStream:
    return MessagesStream(message_id="msg_1", model="m", input_tokens=1)


def test_held_arguments_a_character_a_piece_cost_a_few_bytes_each() -> None:
    """100,000 one-character pieces held (not Latin-1: no cached one-character strings) keep under 8 bytes each;
    kept as a list of the pieces they cost ~80 (a str object and a pointer each)."""
    stream = _stream()
    stream.feed(_arguments("ж", first=True))  # no JSON: held from the first
    pieces = [_arguments("ж") for _ in range(100_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for piece in pieces:
            assert stream.feed(piece) == []
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 8 * len(pieces), kept
    closed = b"".join(stream.on_done())
    assert "ж" * 100_001 in orjson.loads(closed.split(b"data: ")[1].split(b"\n")[0])["delta"]["partial_json"]


@pytest.mark.parametrize("end", ["done", "error"])
def test_arguments_dropped_after_part_went_out_are_logged_without_their_text(
        end: str, caplog: pytest.LogCaptureFixture) -> None:
    """The client read `{"token": "sk-1"}`; the stray text after it is held and dropped: one INFO line says so (with
    the count of characters, never the text), so an operator can see the client got the call's arguments cut."""
    stream = _stream()
    with caplog.at_level(logging.INFO, logger="switchman.gateway"):
        sent = stream.feed(_arguments('{"token": "sk-1"}', first=True))
        assert b"input_json_delta" in b"".join(sent)
        assert stream.feed(_arguments('} "sk-secret-rest"')) == []  # cannot go on: held
        stream.feed(b"data: [DONE]\n\n" if end == "done" else b'data: {"error": {"message": "boom"}}\n\n')
    lines = [r for r in caplog.records if r.name == "switchman.gateway"]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO, [r.getMessage() for r in lines]
    message = lines[0].getMessage()
    assert "msg_1" in message and "18 characters" in message and "sk-" not in message, message


def test_arguments_held_before_any_went_out_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    """None went out: the client gets them whole as {"arguments": <text>}; nothing was cut."""
    stream = _stream()
    with caplog.at_level(logging.INFO, logger="switchman.gateway"):
        stream.feed(_arguments("{not json", first=True))
        stream.feed(b"data: [DONE]\n\n")
    assert not [r for r in caplog.records if r.name == "switchman.gateway"]
