"""Transport failures → switchman's errors, for the one error-mapping context manager of each adapter."""

from __future__ import annotations

from types import TracebackType

import aiohttp

from .._exceptions import (
    UpstreamConnectionError,
    UpstreamError,
    UpstreamServerError,
    UpstreamTimeout,
)

__all__ = ["TRANSPORT_ERRORS", "MappedErrors", "transport_error"]

#: What talking to a provider can raise besides our own errors: aiohttp's errors, socket and TLS
#: errors (OSError), a deadline (TimeoutError), an answer that is not the JSON it should be.
TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError, TypeError, AttributeError)

#: Could not connect, or the connection broke: refused, DNS, TLS, reset, closed before or during
#: the answer (ServerDisconnectedError), a body cut short (ClientPayloadError).
_CONNECTION = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)


def transport_error(exc: BaseException, model: str) -> UpstreamError:
    """The switchman error for a failure talking to `model`'s provider.

    Timeouts first: aiohttp's connect and read timeouts are also connection errors.
    """
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"{model}: upstream timed out ({type(exc).__name__})", model=model)
    if isinstance(exc, _CONNECTION):
        return UpstreamConnectionError(f"{model}: upstream connection failed ({type(exc).__name__})", model=model)
    return UpstreamServerError(f"{model}: invalid upstream response ({type(exc).__name__})", model=model)


class MappedErrors:
    """`with MappedErrors(model):` raises what `transport_error` makes of a transport failure inside.

    What the adapters' `map_errors` return: a plain class rather than a `@contextmanager`
    generator, which costs a generator and two more calls on every upstream call.
    """

    __slots__ = ("model",)

    def __init__(self, model: str) -> None:
        self.model = model

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if exc is not None and isinstance(exc, TRANSPORT_ERRORS):
            raise transport_error(exc, self.model) from exc
