"""Closing the in-process clients their callers never closed: when their owner is collected, or at exit.

A client its caller never closed is closed when its owner (the Router) is garbage-collected, or as the interpreter
exits. Its finalizer only hands the runtime to the reaper thread, which closes it: a collection runs wherever an
allocation triggers it, on the client's own loop thread too (where closing would wait for ever), the ledger's
writer (which the close joins) or a caller's event loop (blocked for the close); `SimpleQueue.put` is safe
anywhere, inside another lock's holder too. The finalizer holds the runtime, never the owner (the dispatcher
holds a face of it, `Router`'s `_sharing`), so nothing here keeps the owner from being collected.
threading's exit hooks run before Python joins non-daemon threads (anyio's worker threads are such), so the loop
is still alive to close with; plain `atexit` runs after that join, too late. `_register_atexit` is what
concurrent.futures uses.

    finalizer = close_when_collected(owner, runtime)   # a client's start
    if take_back(finalizer): runtime.close(timeout)     # its own close (else the reaper has it)
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import weakref
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher

__all__ = ["EXIT_TIMEOUT_S", "Closable", "close_when_collected", "drain_reaper", "take_back"]

logger = logging.getLogger("switchman.sdk")

#: Seconds `close()` waits for in-flight work and the ledger when the interpreter exits.
EXIT_TIMEOUT_S = 10.0


class Closable(Protocol):
    """What the reaper closes: an in-process client's runtime."""

    @property
    def dispatcher(self) -> Dispatcher:
        """Its dispatcher (the reaper logs a failed close through its scrubber)."""
        ...

    def close(self, timeout: float | None = None) -> None:
        """Close it, waiting at most about `timeout` seconds."""
        ...


_unclosed: set[weakref.finalize[..., Any]] = set()
_handed: queue.SimpleQueue[Closable | threading.Event] = queue.SimpleQueue()
_hook_lock = threading.Lock()
_hooked = False
_thread: threading.Thread | None = None


def _forget_in_child() -> None:
    """A forked child holds copies of its parent's clients but none of their threads: it neither closes them (the
    parent does; their queued rows would be written twice) nor waits at exit for a reaper or loop it lacks."""
    global _hook_lock, _handed, _thread
    for finalizer in list(_unclosed):
        finalizer.detach()
    _unclosed.clear()
    _hook_lock, _handed, _thread = threading.Lock(), queue.SimpleQueue(), None  # (held by a parent's thread?)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _close_unclosed() -> None:
    for finalizer in list(_unclosed):
        finalizer()
    drain_reaper()


def _close_at_exit(finalizer: weakref.finalize[..., Any]) -> None:
    global _hooked, _thread
    with _hook_lock:
        _unclosed.add(finalizer)
        if not _hooked:
            register = getattr(threading, "_register_atexit", atexit.register)
            register(_close_unclosed)
            _hooked = True
        if _thread is None:
            _thread = threading.Thread(target=_reap, args=(_handed,), name="switchman-sdk-reaper", daemon=True)
            _thread.start()


def close_when_collected(owner: object, runtime: Closable) -> weakref.finalize[..., Any]:
    """Have the reaper close `runtime` once `owner` is garbage-collected, or as the interpreter exits (the
    finalizer returned; `owner` must not be reachable from `runtime`)."""
    finalizer = weakref.finalize(owner, _hand_over, runtime)
    finalizer.atexit = False  # _close_unclosed runs it, earlier than atexit would
    _close_at_exit(finalizer)
    return finalizer


def take_back(finalizer: weakref.finalize[..., Any]) -> bool:
    """Cancel a `close_when_collected`: whether the close is still the caller's (False: the reaper has it)."""
    finalizer.atexit = False
    with _hook_lock:
        _unclosed.discard(finalizer)
    return finalizer.detach() is not None


def _hand_over(runtime: Closable) -> None:
    """The finalizer's whole work (it may run on any thread, inside a lock's holder): queue the close."""
    _handed.put(runtime)


def _reap(handed: queue.SimpleQueue[Closable | threading.Event]) -> None:
    """The reaper thread: close each runtime handed over, forget the finalizers spent; set each Event (`drain`)."""
    while True:
        item = handed.get()
        if isinstance(item, threading.Event):
            item.set()
            continue
        try:
            item.close(EXIT_TIMEOUT_S)
        except BaseException as exc:  # noqa: BLE001 - the loop is gone or stuck (logged); even a SystemExit raised
            # in one close must not end the reaper: the closes after it, and `drain_reaper`, wait on it. Scrubbed:
            # what an upstream answered may echo its key
            logger.error("switchman: could not close the in-process client cleanly: %s",
                         item.dispatcher.scrub(repr(exc)))
        del item  # (the runtime and what it holds go now, not at the next hand-over)
        with _hook_lock:
            _unclosed.difference_update([finalizer for finalizer in _unclosed if not finalizer.alive])


def drain_reaper() -> None:
    """Wait until every close handed to the reaper so far has ended (at exit; in tests)."""
    with _hook_lock:
        reaper = _thread
    if reaper is None or not reaper.is_alive():  # (none started, or a forked child's: its parent's)
        return
    done = threading.Event()
    _handed.put(done)
    while not done.wait(1.0):  # (not for ever: a reaper that died since will never set it)
        if not reaper.is_alive():
            return
