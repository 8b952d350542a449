"""The web dashboard `switchman serve` mounts at /ui: spend, the saving, agents, models, requests, keys.

    from starlette.routing import Mount
    from switchman.gateway import Gateway, build_app
    from switchman.ui import build_dashboard

    gateway = Gateway.from_config(config)
    app = build_app(gateway, mounts=[Mount("/ui", build_dashboard(gateway, bind_host="127.0.0.1"))])

Server-rendered (Starlette + Jinja2) with htmx and uPlot shipped in the package: no build step,
nothing fetched at run time. It reads the ledger, keys, budgets and health board through their
packages' public names and holds no routing logic.
"""

from ._access import Access, Session
from .._hosts import is_loopback
from ._app import Dashboard, build_dashboard
from ._serve import serving_app

__all__ = ["Access", "Dashboard", "Session", "build_dashboard", "is_loopback", "serving_app"]
