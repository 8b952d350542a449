"""The ledger's thread tokens: held by a thread until its work ends (not until its caller stops waiting), and given
back at once by a call that never started."""

from __future__ import annotations

import threading

import anyio
import pytest

from switchman.gateway import ledger_limiter, run_in_ledger_thread
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
