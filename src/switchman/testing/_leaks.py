"""What a caller can read of an exception, as one text to search for a secret that must not be there."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from functools import partial

__all__ = ["exception_text"]


def exception_text(exc: BaseException) -> str:
    """`exc` as its caller, a log and an error tracker capturing locals (Sentry's default) see it.

    The formatted chain, then for every exception it reaches (causes, contexts, exception-group members): its
    str, repr, args and every attribute (an OSError's file names, `__slots__`, a group's message too), and the
    repr of every local of every frame of its traceback.
    """
    found = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    queue: list[BaseException | None] = [exc]  # a queue, not recursion: a chain of retries can be long
    while queue:
        error = queue.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        found += [_shown(str, error), _shown(repr, error), _shown(repr, error.args),
                  _shown(repr, getattr(error, "__dict__", {})),
                  *(_shown(partial(_attribute, name), error) for name in _attributes(error))]
        for frame, _ in traceback.walk_tb(error.__traceback__):
            found += [f"{frame.f_code.co_name}.{name}={_shown(repr, value)}" for name, value in frame.f_locals.items()]
        queue += [error.__cause__, error.__context__, *getattr(error, "exceptions", ())]
    return "\n".join(found)


def _attribute(name: str, error: object) -> str:
    """`name=value` of one attribute, as a leak report shows it."""
    return f"{name}={getattr(error, name)!r}"


def _attributes(error: BaseException) -> list[str]:
    """Every attribute a caller can read, wherever it is kept (`__dict__`, `__slots__`, a built-in exception's own
    fields such as OSError's file names, AttributeError's `obj`, a group's message; a property), not its methods."""
    return [name for name in dir(error) if not name.startswith("__") and not callable(getattr(type(error), name, None))]


def _shown(show: Callable[[object], str], value: object) -> str:
    try:
        return show(value)
    except Exception:  # noqa: BLE001 - what cannot be shown holds nothing to find
        return "<unshowable>"
