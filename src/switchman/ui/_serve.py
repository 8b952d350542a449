"""The app `switchman serve` runs: the gateway with the dashboard mounted at /ui (when enabled)."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount

from ..gateway import ConfigReloader, Gateway, build_app
from ._app import build_dashboard

__all__ = ["DASHBOARD_PATH", "serving_app"]

DASHBOARD_PATH = "/ui"


def serving_app(
    gateway: Gateway, *, bind_host: str, base_dir: str | Path = ".", reloader: ConfigReloader | None = None,
    settle_heap: bool = False,
) -> Starlette:
    """The gateway's ASGI app, with the dashboard at /ui unless `dashboard.enabled` is false (SIGHUP: `reloader`).

    `settle_heap`: see `build_app` (a server process's choice).
    """
    if not gateway.config.dashboard.enabled:
        return build_app(gateway, reloader=reloader, settle_heap=settle_heap)
    dashboard = build_dashboard(gateway, bind_host=bind_host, base_dir=base_dir)
    return build_app(gateway, mounts=[Mount(DASHBOARD_PATH, dashboard)], reloader=reloader, settle_heap=settle_heap)
