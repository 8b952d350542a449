"""`Router.route(session=...)` reads the session state the Router's chats left on the caller's own thread: while
other threads chat, while the client's loop is busy, after `close()`; it reads the session id as `chat` does."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from switchman import InvalidRequestError, Router
from switchman.routing import Decision, RouteRequest


def _escalated(router: Router, session: str) -> None:
    router.chat("Hi", session=session)
    assert router.chat("Try harder.", session=session, escalate=True).model == "mid"


def test_route_with_a_session_from_threads_while_others_chat(sdk_router: Router, tmp_path: Path) -> None:
    _escalated(sdk_router, "kept")
    errors: list[BaseException] = []
    routed: list[str] = []
    chatted: list[str] = []
    start = threading.Barrier(6)

    def routing() -> None:
        start.wait()
        try:
            for _ in range(200):
                routed.append(sdk_router.route("And now?", session="kept").model)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    def chatting(n: int) -> None:
        start.wait()
        try:
            for turn in range(5):
                session = f"chat-{n}-{turn}"
                sdk_router.chat("Hi", session=session)
                chatted.append(sdk_router.chat("Try harder.", session=session, escalate=True).model)
                routed_here = sdk_router.route("And now?", session=session).model
                chatted.append(routed_here)  # this thread's own escalation, visible to its route at once
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=routing) for _ in range(3)]
    threads += [threading.Thread(target=chatting, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert routed == ["mid"] * 600
    assert chatted == ["mid"] * 30
    sdk_router.close()
    # Closed: route still works (no loop to ask), and a session starts afresh with the next client.
    assert sdk_router.route("And now?", session="kept").model == "cheap"
    _escalated(sdk_router, "again")
    assert sdk_router.route("And now?", session="again").model == "mid"


def test_route_with_a_session_does_not_wait_for_the_clients_loop(sdk_router: Router) -> None:
    """The state is read on the caller's thread: a loop busy (or stopping) cannot hold `route`."""
    _escalated(sdk_router, "busy")
    portal = sdk_router._client()._portal
    held, release = threading.Event(), threading.Event()

    def hold_the_loop() -> None:
        held.set()
        release.wait(60)

    blocked = portal.start_task_soon(hold_the_loop)
    try:
        assert held.wait(30)
        answers: list[Decision] = []
        router = threading.Thread(target=lambda: answers.append(sdk_router.route("And now?", session="busy")))
        router.start()
        router.join(30)
        assert not router.is_alive(), "route waited for the client's event loop"
        assert [a.model for a in answers] == ["mid"]
    finally:
        release.set()
        blocked.result(30)


def test_a_runtime_error_from_the_session_steer_propagates(sdk_router: Router, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a stopped loop ever meant "closed": any other RuntimeError is a bug to see, not a silent fresh decision."""
    _escalated(sdk_router, "broken")
    sessions = sdk_router._client().dispatcher.sessions

    def broken(request: RouteRequest, decision: Decision, context: Any) -> Decision:
        raise RuntimeError("a bug in the session steer")

    monkeypatch.setattr(sessions, "steer", broken)
    with pytest.raises(RuntimeError, match="a bug in the session steer"):
        sdk_router.route("And now?", session="broken")


def test_route_reads_the_session_id_as_chat_does(sdk_router: Router) -> None:
    _escalated(sdk_router, "s1")
    assert sdk_router.chat("Go on.", session=" s1 ").model == "mid"  # chat strips it: the same session
    assert sdk_router.route("Go on.", session=" s1 ").model == "mid"
    assert sdk_router.route("Go on.", session="   ").model == "cheap"  # empty: no session
    with pytest.raises(InvalidRequestError, match="control characters"):
        sdk_router.route("Go on.", session="s1\nx")
    with pytest.raises(InvalidRequestError, match="longer than 256"):
        sdk_router.route("Go on.", session="s" * 257)
    with pytest.raises(InvalidRequestError, match="control characters"):
        sdk_router.chat("Go on.", session="s1\nx")  # (as chat refuses them)
