"""`Router.close()` called on the router's own event-loop thread (code the router runs there) must not wait for that
loop, which cannot run while its thread waits: close refuses at once with RuntimeError, closing nothing, as anyio's
portal refuses a blocking call from its loop's thread."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from switchman import Router

from .conftest import CallThread


def _guarded(work: Callable[[], object]) -> list[BaseException | None]:
    """Run `work` in a thread that the test waits for only so long: a deadlock fails the test, not the run."""
    thread = CallThread(work)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "deadlocked"
    return thread.outcome


@pytest.mark.parametrize("closing", ["close", "aclose"])
def test_close_on_the_routers_own_loop_refuses_instead_of_deadlocking(sdk_router: Router, closing: str) -> None:
    router = sdk_router
    router.chat("warm up", model="mid")
    portal = router._inprocess._portal  # type: ignore[union-attr]  # run code on the router's loop, as it would
    outcome = _guarded(lambda: portal.call(getattr(router, closing)))
    assert len(outcome) == 1 and isinstance(outcome[0], RuntimeError), outcome
    assert "event-loop thread" in str(outcome[0]) and "another thread" in str(outcome[0])
    assert router.chat("still open", model="mid").model == "mid"  # nothing was closed half-way



def test_a_closed_client_closes_again_from_a_thread_with_the_dead_loop_threads_ident(
        sdk_router: Router, monkeypatch: pytest.MonkeyPatch) -> None:
    """Linux gives a dead thread's ident to new threads: a second close from a thread that got the closed loop
    thread's ident is a no-op, not a RuntimeError saying it runs on the router's loop."""
    router = sdk_router
    router.chat("warm up", model="mid")
    client = router._inprocess
    assert client is not None
    loop_ident = client._portal.call(threading.get_ident)
    client.close()

    def close_again() -> None:
        monkeypatch.setattr(threading, "get_ident", lambda: loop_ident)  # as if this thread got the ident
        try:
            client.close()
        finally:
            monkeypatch.undo()

    assert _guarded(close_again) == [None]
