"""Pure-ASGI middleware of the gateway, one per module."""

from ._auth import AuthMiddleware
from ._body_limit import BodySizeLimitMiddleware
from ._request_id import RequestIdMiddleware

__all__ = ["AuthMiddleware", "BodySizeLimitMiddleware", "RequestIdMiddleware"]
