"""The gateway's middleware: one pure-ASGI layer (`GatewayMiddleware`) over one module per concern."""

from ._access_log import ACCESS_LOGGER, AccessLineFormatter, AccessLineHandler, hold_access_lines
from ._auth import MASTER_KEY_ID, Authenticator
from ._layer import GatewayMiddleware
from ._request_id import REQUEST_ID_HEADER, new_request_id

__all__ = ["ACCESS_LOGGER", "MASTER_KEY_ID", "AccessLineFormatter", "AccessLineHandler", "REQUEST_ID_HEADER", "Authenticator", "GatewayMiddleware",
           "hold_access_lines", "new_request_id"]
