"""Reload the configuration file on SIGHUP, as a service manager expects (`systemctl reload`, `kill -HUP`).

The new file is validated and everything it needs is built — models priced, providers reachable by
configuration, router files and embedders loaded — before anything changes; then the gateway's
dispatcher is swapped in one assignment, so each request sees the old configuration or the new,
never a mix. A file that fails leaves the running configuration in place, and the log says why.
Ledger, keys, metrics, health and sessions carry over; what is built once at start (the listening
address, the ledger and Redis URLs, the body and connection limits, the master key variable,
authentication, /metrics access, the circuit breaker and live latency of the carried-over health
board, the key refresh interval, the dashboard) keeps its old value, and a change to it is logged
as needing a restart.

With `serve --workers N`, uvicorn's supervisor owns SIGHUP: it starts fresh workers, which read the
file, and retires the old ones only once a fresh one is serving, so a file that fails keeps the old
workers (see the README).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import anyio.to_thread

from .._config import Config, load_config
from .._decider import Decider
from .._exceptions import SwitchmanError
from ._dispatcher import Dispatcher
from ._gateway import Gateway

__all__ = ["ConfigReloader"]

logger = logging.getLogger("switchman.gateway")

#: `server.*` settings a running server cannot change: they are read when it starts (the authentication
#: middleware, the connection guard, the health board and the key ring are built once).
_AT_START = ("host", "port", "ledger_url", "ledger_close_timeout_s", "ledger_spill_dir", "max_body_bytes",
             "master_key_env", "auth", "metrics_access", "redis_url", "redis", "key_refresh_s", "circuit_breaker",
             "live_latency")

#: `server.limits.*` each request reads from the configuration it is served by: a reload applies them at once
#: (the others are the connection guard's and the authentication layer's, built at start).
_LIMITS_PER_REQUEST = frozenset({"max_prompt_chars", "max_json_depth", "max_messages", "max_content_parts",
                                  "max_tool_calls", "max_tools", "max_embedding_inputs"})


def _same(config: Config) -> Config:
    return config


class ConfigReloader:
    """Reloads `path` into `gateway` on demand (`await reload()`) or on SIGHUP once `install`ed."""

    def __init__(self, gateway: Gateway, path: str | Path, *, adjust: Callable[[Config], Config] = _same) -> None:
        self.gateway = gateway
        self.path = Path(path)
        self.adjust = adjust  # e.g. the running local model's address for a `local` provider
        self._running: asyncio.Task[bool] | None = None
        self._installed = False

    def _build(self) -> Dispatcher:
        """Validate the file and build its dispatcher (blocking: loads router files and embedders)."""
        config = self.gateway.pinned(self.adjust(load_config(self.path)))
        decider = Decider(config, base_dir=self.path.parent)
        decider.warm_up()
        return self.gateway.replacement(decider)

    async def reload(self) -> bool:
        """Load, validate and swap in the file; False (the old configuration kept, the reason logged) if it fails."""
        try:
            dispatcher = await anyio.to_thread.run_sync(self._build)
        except (SwitchmanError, OSError) as exc:
            logger.error("configuration reload failed, still serving the previous configuration: %s", exc)
            return False
        old, new = self.gateway.config, dispatcher.decider.config
        needs_restart = [f"server.{name}" for name in _AT_START
                         if getattr(old.server, name) != getattr(new.server, name)]
        needs_restart += [f"server.limits.{name}" for name in type(old.server.limits).model_fields
                          if name not in _LIMITS_PER_REQUEST
                          and getattr(old.server.limits, name) != getattr(new.server.limits, name)]
        if old.dashboard != new.dashboard:
            needs_restart.append("dashboard")
        self.gateway.swap(dispatcher)
        config = self.gateway.config
        logger.info("configuration reloaded from %s: %d models, %d routes", self.path, len(config.models),
                    len(config.routes))
        if needs_restart:
            logger.warning("%s changed in %s: takes effect at the next restart", ", ".join(needs_restart), self.path)
        return True

    def _on_signal(self) -> None:
        if self._running is not None and not self._running.done():
            logger.warning("SIGHUP while a reload is running: ignored (send it again once it has finished)")
            return
        self._running = asyncio.get_running_loop().create_task(self.reload())

    def install(self) -> bool:
        """Reload on SIGHUP from now on (main thread of a POSIX process only); whether it could."""
        if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
            return False
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_signal)
        self._installed = True
        return True

    def uninstall(self) -> None:
        """Stop handling SIGHUP."""
        if self._installed:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self._installed = False
