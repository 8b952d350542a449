"""httpx's exceptions → switchman's, for the one error-mapping context manager of each adapter."""

from __future__ import annotations

import httpx

from .._exceptions import UpstreamConnectionError, UpstreamError, UpstreamServerError, UpstreamTimeout

__all__ = ["TRANSPORT_ERRORS", "transport_error"]

#: What talking to a provider can raise besides our own errors (TimeoutError: a total-time deadline;
#: ValueError: an upstream body that is not the JSON it should be).
TRANSPORT_ERRORS = (httpx.HTTPError, TimeoutError, ValueError, KeyError, TypeError)
_TIMEOUTS = (httpx.TimeoutException, TimeoutError)
_CONNECTION = (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)


def transport_error(exc: BaseException, model: str) -> UpstreamError:
    """The switchman error for a failure talking to `model`'s provider."""
    if isinstance(exc, _TIMEOUTS):
        return UpstreamTimeout(f"{model}: upstream timed out ({type(exc).__name__})", model=model)
    if isinstance(exc, _CONNECTION):
        return UpstreamConnectionError(f"{model}: upstream connection failed ({type(exc).__name__})", model=model)
    return UpstreamServerError(f"{model}: invalid upstream response ({type(exc).__name__})", model=model)
