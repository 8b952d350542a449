"""The stream relay's ledger status when an upstream failure and the client leaving meet (driven in process)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from switchman._router import Router
from switchman.gateway._context import RequestContext  # noqa: PLC2701
from switchman.gateway._dispatcher import Dispatcher  # noqa: PLC2701
from switchman.gateway._stream import ChatStream, RelayResponse  # noqa: PLC2701
from switchman.ledger import LedgerRecord
from switchman.testing import FakeUpstream

from .conftest import ANTHROPIC_KEY, ENV, OPENAI_KEY

ASK = [{"role": "user", "content": "hello"}]


class Records:
    """Stands in for the ledger: keeps what the dispatcher records."""

    def __init__(self) -> None:
        self.records: list[LedgerRecord] = []

    def record(self, record: LedgerRecord) -> None:
        self.records.append(record)


def _dispatcher(upstream: FakeUpstream) -> tuple[Dispatcher, Records]:
    assert OPENAI_KEY in ENV.values() and ANTHROPIC_KEY in ENV.values()
    router = Router.from_dict({
        "providers": {
            "fake": {"kind": "openai", "base_url": upstream.openai_base_url, "api_key_env": "FAKE_OPENAI_KEY"},
            "fake-anthropic": {"kind": "anthropic", "base_url": upstream.anthropic_base_url,
                               "api_key_env": "FAKE_ANTHROPIC_KEY"},
        },
        "models": {
            "relay-gpt": {"provider": "fake", "input_price": 1.0, "output_price": 2.0},
            "relay-claude": {"provider": "fake-anthropic", "input_price": 1.0, "output_price": 2.0},
        },
        "routes": {"default": {"candidates": ["relay-gpt"], "strategy": "cheapest"}},
        "default_route": "default",
        "server": {"retries": {"attempts": 0}},
    })
    records = Records()
    return Dispatcher.from_decider(router, env=ENV, ledger=records), records


@pytest.mark.parametrize("model", ["relay-gpt", "relay-claude"])
@pytest.mark.parametrize("leaves", ["cancelled", "write_fails"])
def test_a_malformed_event_read_before_the_client_left_is_the_rows_status(
    upstream: FakeUpstream, model: str, leaves: str,
) -> None:
    """The upstream event carrying "beta" comes with a malformed one in one read; the client leaves while
    the "beta" event's bytes are being written (the relay's task cancelled by the disconnect watcher, or the write failing).
    The malformed event was read first: the row says stream_error with its error, not client_disconnected."""
    upstream.clear()
    upstream.set_reply(model, "alpha beta gamma")
    upstream.inject("malformed_event", model=model, after_events=4 if model == "relay-claude" else 2)
    dispatcher, records = _dispatcher(upstream)
    left = asyncio.Event()
    written: list[bytes] = []
    interrupted: list[bytes] = []

    async def receive() -> dict[str, Any]:
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        body = message.get("body", b"")
        if b"beta" in body:  # the event read with the malformed one: the client leaves during its write
            interrupted.append(body)
            if leaves == "write_fails":
                raise OSError("client gone")
            left.set()
            await asyncio.get_running_loop().create_future()  # the watcher's cancellation ends this write
        written.append(body)

    async def main() -> None:
        stream = await dispatcher.open_stream({"model": model, "messages": ASK, "stream": True},
                                              RequestContext(request_id="req-relay-1"))
        assert isinstance(stream, ChatStream)
        await RelayResponse(stream, {})({"type": "http"}, receive, send)  # type: ignore[arg-type]
        await dispatcher.aclose()

    asyncio.run(main())
    assert interrupted, "the client never left while the event read with the malformed one was written"
    assert not any(b"error" in body for body in written)  # the client was gone before the error event
    (record,) = records.records
    assert record.status == "stream_error", (record.status, record.error)
    assert "invalid upstream response" in (record.error or "")


async def _one_event_per_batch(rest: list[bytes], events: Any) -> Any:
    """The events as if each came in a read of its own (the relay's one-event path)."""
    for event in rest:
        yield [event]
    async for batch in events:
        for event in batch:
            yield [event]


class _ExhaustedReservation:
    """A held reservation no budget can grow: the first chunk past it stops the answer."""

    held = True
    estimated_usd = 1e-9
    downgrade_to = None

    async def aresize(self, estimated_usd: float, **_: Any) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: True


@pytest.mark.parametrize("model", ["relay-gpt", "relay-claude"])
@pytest.mark.parametrize("ending", ["malformed_event", "budget_stop"])
def test_an_event_read_alone_ends_the_stream_as_one_read_with_others_does(
    upstream: FakeUpstream, model: str, ending: str,
) -> None:
    """A malformed event, or the chunk past the budget, in a read of its own: the client gets the error event
    and [DONE], and the row says stream_error with that error (as when it comes with other events)."""
    upstream.clear()
    upstream.set_reply(model, "alpha beta gamma")
    if ending == "malformed_event":
        upstream.inject("malformed_event", model=model, after_events=4 if model == "relay-claude" else 2)
    dispatcher, records = _dispatcher(upstream)
    written: list[bytes] = []

    async def receive() -> dict[str, Any]:
        await asyncio.get_running_loop().create_future()
        return {}

    async def send(message: dict[str, Any]) -> None:
        written.append(message.get("body", b""))

    async def main() -> None:
        stream = await dispatcher.open_stream({"model": model, "messages": ASK, "stream": True},
                                              RequestContext(request_id="req-relay-2"))
        assert isinstance(stream, ChatStream)
        opened = stream._opened  # noqa: SLF001
        opened.events, opened.rest = _one_event_per_batch(opened.rest, opened.events), []
        if ending == "budget_stop":
            stream._exchange.reservation = _ExhaustedReservation()  # type: ignore[assignment]  # noqa: SLF001
        await RelayResponse(stream, {})({"type": "http"}, receive, send)  # type: ignore[arg-type]
        await dispatcher.aclose()

    asyncio.run(main())
    body = b"".join(written)
    expected = "invalid upstream response" if ending == "malformed_event" else "running cost passed"
    assert body.rstrip().endswith(b"data: [DONE]") and expected.encode() in body, body[-300:]
    if ending == "budget_stop":
        assert b"alpha" not in body  # the chunk past the reservation is not sent
    (record,) = records.records
    assert record.status == "stream_error", (record.status, record.error)
    assert expected in (record.error or "")
