"""Pure-ASGI middleware of the gateway, one per module."""

from ._access_log import ACCESS_LOGGER, AccessLogMiddleware
from ._auth import MASTER_KEY_ID, AuthMiddleware
from ._body_limit import BodySizeLimitMiddleware
from ._request_id import RequestIdMiddleware

__all__ = ["ACCESS_LOGGER", "MASTER_KEY_ID", "AccessLogMiddleware", "AuthMiddleware", "BodySizeLimitMiddleware",
           "RequestIdMiddleware"]
