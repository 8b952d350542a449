"""Review of `Deadline` against `asyncio.timeout`: the two places it differs (neither reachable from config today).

`server.timeouts.*` are validated `> 0`, and every call site builds a fresh Deadline, so these are
edge cases of the primitive, not of the gateway: they fail on `dispatch-cpu` to show where the
"asyncio.timeout's behaviour" claim stops holding.
"""

from __future__ import annotations

import asyncio

import pytest

from switchman.gateway._deadline import Deadline


async def _zero_then_one_suspension(make_timeout) -> str:  # type: ignore[no-untyped-def]
    try:
        async with make_timeout():
            await asyncio.sleep(0)
            return "finished"
    except TimeoutError:
        return "timed out"


class _AsAsync:
    def __init__(self, seconds: float) -> None:
        self._deadline = Deadline(seconds)

    async def __aenter__(self) -> Deadline:
        return self._deadline.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self._deadline.__exit__(*exc)  # type: ignore[arg-type]


@pytest.mark.parametrize("seconds", [0.0, -1.0])
def test_a_deadline_already_past_expires_at_the_first_suspension_as_asyncio_timeout(seconds: float) -> None:
    """asyncio.timeout schedules a past deadline with call_soon (fires before the next loop turn's I/O and
    timers); Deadline's call_at lands in the timer heap and fires one turn later, after a sleep(0) resumed."""
    expected = asyncio.run(_zero_then_one_suspension(lambda: asyncio.timeout(seconds)))
    got = asyncio.run(_zero_then_one_suspension(lambda: _AsAsync(seconds)))
    assert got == expected == "timed out"


def test_a_deadline_entered_twice_is_refused_as_asyncio_timeout_is() -> None:
    """asyncio.timeout raises RuntimeError on re-entry; a re-entered Deadline keeps `_expired` from its first
    use, so its second exit uncancels the task once too often and turns an outer cancellation into TimeoutError."""

    async def main() -> str:
        deadline = Deadline(0.001)
        with deadline:
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                pass  # first use expired (and its TimeoutError is not raised: the body swallowed the cancel)
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().call_later(0.01, task.cancel)  # someone else cancels us
        try:
            with deadline:  # asyncio.timeout: RuntimeError("Timeout has already been entered")
                await asyncio.sleep(1)
        except RuntimeError:
            return "refused"
        except TimeoutError:
            return "outer cancellation reported as a timeout"
        except asyncio.CancelledError:
            return "cancelled"
        return "finished"

    assert asyncio.run(main()) == "refused"
