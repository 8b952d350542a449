"""The upstream call's deadline behaves as `asyncio.timeout` did: same error on expiry, cancellations kept."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from switchman._exceptions import UpstreamTimeout
from switchman._router import Router
from switchman.gateway._context import RequestContext
from switchman.gateway._deadline import Deadline
from switchman.gateway._dispatcher import Dispatcher

from .conftest import ENV


@asynccontextmanager
async def _deadline(seconds: float) -> Any:
    with Deadline(seconds):
        yield


KINDS: list[Callable[[float], AbstractAsyncContextManager[Any]]] = [asyncio.timeout, _deadline]


async def _outcome(kind: Callable[[float], AbstractAsyncContextManager[Any]], seconds: float, work: float,
                   cancel_after: float | None = None) -> tuple[str, str | None, int]:
    """What the block ended with (and its cause), and the task's `cancelling()` count after it."""

    async def run() -> tuple[str, str | None, int]:
        try:
            async with kind(seconds):
                await asyncio.sleep(work)
        except (TimeoutError, asyncio.CancelledError) as exc:
            cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else None
            task = asyncio.current_task()
            assert task is not None
            outcome = (type(exc).__name__, cause, task.cancelling())
            if isinstance(exc, asyncio.CancelledError):
                raise asyncio.CancelledError(outcome) from None
            return outcome
        task = asyncio.current_task()
        assert task is not None
        return "done", None, task.cancelling()

    task = asyncio.ensure_future(run())
    if cancel_after is not None:
        asyncio.get_running_loop().call_later(cancel_after, task.cancel)
    try:
        return await task
    except asyncio.CancelledError as exc:
        return exc.args[0] if exc.args else ("CancelledError", None, -1)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("seconds", "work", "cancel_after"), [
    (1.0, 0.0, None),  # in time
    (0.01, 1.0, None),  # expired
    (1.0, 1.0, 0.01),  # cancelled from outside (the client left)
    (0.02, 1.0, 0.02),  # both at once: the outside cancellation wins
    (0.0, 1.0, None),  # no time at all
])
def test_deadline_ends_blocks_as_asyncio_timeout_does(seconds: float, work: float, cancel_after: float | None) -> None:
    outcomes = [asyncio.run(_outcome(kind, seconds, work, cancel_after)) for kind in KINDS]
    assert outcomes[0] == outcomes[1]


def test_deadline_outside_a_task_is_refused() -> None:
    with pytest.raises(RuntimeError):
        Deadline(1.0).__enter__()


class _SlowBody:
    """An upstream that answers its headers at once and then its body too slowly."""

    status_code = 200
    headers: dict[str, str] = {}

    async def aread(self) -> bytes:
        await asyncio.sleep(5)
        return b"{}"

    async def aclose(self) -> None:
        pass


class _SlowPool:
    def __init__(self, real: Any) -> None:
        self.real = real

    def request(self, *args: Any) -> Any:
        return self.real.request(*args)

    async def send(self, request: Any, **_: Any) -> _SlowBody:
        return _SlowBody()

    async def aclose(self) -> None:
        await self.real.aclose()


def _slow_dispatcher(pool: type[_SlowPool], *, first_byte: float, total: float) -> Dispatcher:
    """A dispatcher whose one model ("slow") has these deadlines and whose every provider sends through `pool`."""
    router = Router.from_dict({
        "providers": {"fake": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "FAKE_OPENAI_KEY"}},
        "models": {"slow": {"provider": "fake", "input_price": 0.1, "output_price": 0.2,
                            "timeouts": {"connect": 1.0, "first_byte": first_byte, "total": total}}},
        "server": {"retries": {"attempts": 0}},
    })
    dispatcher = Dispatcher.from_decider(router, env=ENV)
    for deployments in dispatcher.deployments.values():
        for deployment in deployments:
            deployment.provider.pool = pool(deployment.provider.pool)  # type: ignore[assignment]
    return dispatcher


def _raised_by(dispatcher: Dispatcher, call: Coroutine[Any, Any, object]) -> UpstreamTimeout:
    """The UpstreamTimeout `call` (one of `dispatcher`'s) raises; the dispatcher is closed after it."""
    async def go() -> None:
        try:
            await call
        finally:
            await dispatcher.aclose()

    with pytest.raises(UpstreamTimeout) as raised:
        asyncio.run(go())
    return raised.value


def test_an_answer_past_the_models_total_time_is_an_upstream_timeout() -> None:
    dispatcher = _slow_dispatcher(_SlowPool, first_byte=1.0, total=0.05)
    raised = _raised_by(dispatcher, dispatcher.complete(
        {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}, RequestContext(request_id="r1")))
    assert str(raised) == "slow: upstream timed out (TimeoutError)"
    assert isinstance(raised.__cause__, TimeoutError)


class _SilentPool(_SlowPool):
    """An upstream that sends nothing back (not even headers) in time."""

    async def send(self, request: Any, **_: Any) -> _SlowBody:
        await asyncio.sleep(5)
        return _SlowBody()


def test_a_stream_silent_past_its_first_byte_time_is_an_upstream_timeout() -> None:
    dispatcher = _slow_dispatcher(_SilentPool, first_byte=0.05, total=5.0)
    raised = _raised_by(dispatcher, dispatcher.open_stream(
        {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        RequestContext(request_id="r2")))
    assert str(raised) == "slow: upstream timed out (TimeoutError)"
