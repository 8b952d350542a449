"""What `switchman serve` checks and sets up before uvicorn starts: one clear line instead of a traceback.

The port is free (else: which flag to change), every router file a route names loads, the running
local model's address reaches the configuration (its port is picked at start), and the log
configuration: uvicorn's, plus switchman's loggers and the per-request access line.
"""

from __future__ import annotations

import copy
import errno
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._config import Config
from .._environ import Environment
from .._exceptions import ArtifactError, ConfigError
from ..gateway import ACCESS_LOGGER, AccessLineFormatter, AccessLineHandler, CancelledByShutdown
from ..learn import BUNDLED, TrainedRouter
from ..local import with_local_url

__all__ = ["check_port_free", "check_router_files", "local_address", "log_config"]


def check_port_free(host: str, port: int) -> None:
    """Refuse, naming `--port`, a port something else already listens on (0: any free port, always fine)."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is already in use (another `switchman serve`?); "
                                  f"choose another with --port, e.g. --port {port + 1}") from None
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another address with "
                              "--host and --port") from None


def check_router_files(config: Config, base_dir: Path) -> None:
    """Load every router file the routes name (learned, cascade, shadow): a missing or bad one is a ConfigError line."""
    for name, route in config.routes.items():
        for key, value in (("router", route.router), ("shadow", route.shadow)):
            if value is None or value == BUNDLED:  # the bundled router ships inside the package
                continue
            path = Path(value) if Path(value).is_absolute() else base_dir / value
            try:
                TrainedRouter.load(path)
            except ArtifactError as exc:
                raise ConfigError(f"routes.{name}.{key}: {exc}") from None


def local_address(env: Environment) -> Callable[[Config], Config]:
    """What a worker or a reload applies to a configuration: the running local model's address, if one runs."""
    url = env.local_url

    def adjust(config: Config) -> Config:
        return with_local_url(config, url) if url else config

    return adjust


def log_config(*, access_log: bool) -> dict[str, Any]:
    """uvicorn's log configuration plus switchman's: INFO and up to stderr, access lines to stdout (unless off)."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["switchman"] = {"formatter": "default", "class": "logging.StreamHandler",
                                       "stream": "ext://sys.stderr"}
    # Access lines of one moment go out in one write (see AccessLineHandler).
    config["formatters"]["switchman_access"] = {"()": f"{AccessLineFormatter.__module__}.{AccessLineFormatter.__qualname__}",
                                                "fmt": "%(levelprefix)s %(message)s", "use_colors": None}
    config["handlers"]["switchman_access"] = {"formatter": "switchman_access", "class": f"{AccessLineHandler.__module__}."
                                              f"{AccessLineHandler.__qualname__}", "stream": "ext://sys.stdout"}
    # A request the shutdown cancelled is one line, not uvicorn's "Exception in ASGI application" traceback.
    config.setdefault("filters", {})["cancelled_by_shutdown"] = {
        "()": f"{CancelledByShutdown.__module__}.{CancelledByShutdown.__qualname__}"}
    config["handlers"]["default"].setdefault("filters", []).append("cancelled_by_shutdown")
    config["loggers"]["switchman"] = {"handlers": ["switchman"], "level": "INFO", "propagate": False}
    config["loggers"][ACCESS_LOGGER] = {"handlers": ["switchman_access"], "level": "INFO" if access_log else "WARNING",
                                        "propagate": False}
    return config
