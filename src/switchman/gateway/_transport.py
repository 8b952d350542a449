"""Transport failures → switchman's errors, for the one error-mapping context manager of each adapter."""

from __future__ import annotations

import httptools

from .._exceptions import UpstreamConnectionError, UpstreamError, UpstreamServerError, UpstreamTimeout

__all__ = ["TRANSPORT_ERRORS", "transport_error"]

#: What talking to a provider can raise besides our own errors: socket and TLS errors (OSError),
#: a deadline (TimeoutError), a response that is not HTTP or not the JSON it should be.
TRANSPORT_ERRORS = (OSError, TimeoutError, ValueError, KeyError, TypeError, httptools.HttpParserError)


def transport_error(exc: BaseException, model: str) -> UpstreamError:
    """The switchman error for a failure talking to `model`'s provider."""
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"{model}: upstream timed out", model=model)
    if isinstance(exc, OSError):
        return UpstreamConnectionError(f"{model}: upstream connection failed ({type(exc).__name__})", model=model)
    return UpstreamServerError(f"{model}: invalid upstream response ({type(exc).__name__})", model=model)
