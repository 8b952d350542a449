"""The OpenAI-compatible gateway: `switchman serve`, and the dispatcher the SDK shares with it.

    from switchman.gateway import Gateway, build_app
    app = build_app(Gateway.from_config(config))      # any ASGI server can run it

`server.limits`' connection, header, body-timeout, write and keep-alive bounds live in the HTTP protocol, not the
app: only a server built with `server_config` (what `switchman serve` runs) enforces them (the body's size
limit is the app's own middleware, under any server).
"""

from ._app import build_app, build_middleware_stack
from ._balancer import Balancer, DeploymentStatus, Lease
from ._context import RequestContext
from ._defaults import (
    KNOWN_PROVIDERS,
    default_config,
    default_config_data,
    local_models,
)
from ._dispatcher import Completion, Dispatcher
from ._errors import Scrubber
from ._feedback import submit_feedback
from ._gateway import Gateway
from ._inprocess import InProcessClient
from ._ledger_threads import ledger_call  # for the dashboard (ui may not reach a private module)
from ._middleware import ACCESS_LOGGER, AccessLineFormatter, AccessLineHandler
from ._providers import Deployment, Provider
from ._reload import ConfigReloader
from ._feed import StreamFeed
from ._stopping import CancelledByShutdown, GatewayServer
from ._server import GuardedHttpProtocol, guarded_protocol, raise_fd_limit, server_config
from ._stream import ChatStream
from .._hosts import is_loopback
from ..state import HealthBoard

__all__ = [
    "ACCESS_LOGGER",
    "AccessLineFormatter",
    "AccessLineHandler",
    "Balancer",
    "CancelledByShutdown",
    "ChatStream",
    "Completion",
    "ConfigReloader",
    "Deployment",
    "DeploymentStatus",
    "Dispatcher",
    "Gateway",
    "GatewayServer",
    "GuardedHttpProtocol",
    "HealthBoard",
    "InProcessClient",
    "KNOWN_PROVIDERS",
    "Lease",
    "Provider",
    "RequestContext",
    "Scrubber",
    "StreamFeed",
    "build_app",
    "build_middleware_stack",
    "default_config",
    "default_config_data",
    "guarded_protocol",
    "is_loopback",
    "ledger_call",
    "local_models",
    "raise_fd_limit",
    "server_config",
    "submit_feedback",
]
