"""The ledger's thread tokens: held by a thread until its work ends (not until its caller stops waiting), and given
back at once by a call that never started."""

from __future__ import annotations

import threading

import anyio
import pytest

from switchman import LedgerTimeoutError
from switchman.gateway._ledger_threads import ledger_call, ledger_limiter, run_in_ledger_thread
from switchman.gateway._ledger_threads import LEDGER_THREADS


@pytest.mark.anyio
async def test_a_thread_blocked_past_its_callers_timeout_keeps_its_token_until_it_ends() -> None:
    release = threading.Event()
    for _ in range(LEDGER_THREADS + 4):  # more callers than tokens, each giving up after 0.1 s
        with anyio.move_on_after(0.1):
            await run_in_ledger_thread(release.wait)
    limiter = ledger_limiter()
    assert limiter.borrowed_tokens == LEDGER_THREADS  # the blocked threads, no more started
    release.set()
    with anyio.fail_after(5):
        while limiter.borrowed_tokens:
            await anyio.sleep(0.01)
    assert await run_in_ledger_thread(lambda: 42) == 42


@pytest.mark.anyio
async def test_a_call_cancelled_before_its_thread_starts_gives_its_token_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The token is taken, then the caller leaves while no thread has picked the work up: `drop` gives it back."""
    ran: list[bool] = []

    async def never_started(*args: object, **kwargs: object) -> None:
        await anyio.sleep_forever()  # every worker thread busy: the work waits for one

    monkeypatch.setattr(anyio.to_thread, "run_sync", never_started)
    with anyio.move_on_after(0.05):
        await run_in_ledger_thread(lambda: ran.append(True))
    assert ledger_limiter().borrowed_tokens == 0
    assert ran == []


@pytest.mark.anyio
async def test_ledger_call_answers_or_says_how_long_it_waited() -> None:
    """The one timeout wrapper the feedback endpoint and the dashboard share: the answer, else LedgerTimeoutError."""
    assert await ledger_call(lambda: 42, 5.0) == 42
    release = threading.Event()
    try:
        with pytest.raises(LedgerTimeoutError, match=r"did not answer within 0\.05 s"):
            await ledger_call(release.wait, 0.05)  # blocked until released: the time runs out, whatever the load
    finally:
        release.set()


@pytest.mark.anyio
async def test_ledger_calls_own_timeout_error_is_not_taken_for_the_callers() -> None:
    """A socket timeout inside the work is the database's error (the dashboard says which), not a wait run out."""
    def times_out() -> None:
        raise TimeoutError("socket read timed out")

    with pytest.raises(TimeoutError, match="socket read") as raised:
        await ledger_call(times_out, 5.0)
    assert not isinstance(raised.value, LedgerTimeoutError)


@pytest.mark.anyio
async def test_a_ledger_timeout_nobody_caught_is_a_503_ledger_unavailable() -> None:
    """LedgerTimeoutError is a LedgerUnavailableError: a handler that forgets to catch it still answers 503, not 500."""
    from switchman import LedgerUnavailableError
    from switchman.gateway._errors import error_payload

    release = threading.Event()
    try:
        with pytest.raises(LedgerTimeoutError) as raised:
            await ledger_call(release.wait, 0.01)
    finally:
        release.set()
    assert isinstance(raised.value, LedgerUnavailableError)
    status, payload = error_payload(raised.value)
    assert status == 503 and payload["error"] == {"message": "the ledger did not answer within 0.01 s",
                                                  "type": "api_error", "param": None, "code": "ledger_unavailable"}
