"""Pure-ASGI middleware of the gateway, one per module."""

from ._auth import MASTER_KEY_ID, AuthMiddleware
from ._body_limit import BodySizeLimitMiddleware
from ._request_id import RequestIdMiddleware

__all__ = ["MASTER_KEY_ID", "AuthMiddleware", "BodySizeLimitMiddleware", "RequestIdMiddleware"]
