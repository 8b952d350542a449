"""The dashboard as a Starlette app: one route table, server-rendered pages, a guard in front.

    from starlette.routing import Mount
    app = build_app(gateway, mounts=[Mount("/ui", build_dashboard(gateway, bind_host="127.0.0.1"))])

Pages are rendered in a worker thread (their queries block), never on the event loop the gateway's
requests run on. Nothing here routes or prices a request: it reads what the ledger, the key store,
the budgets and the health board already hold.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .._exceptions import LedgerTimeoutError
from .._hosts import is_loopback
from .._slashes import relative_slash_redirects
from .._streaks import FailureStreak
from ..gateway import Gateway, ledger_call
from ._access import DEVICE_TTL_S, Access, Session
from ._format import FILTERS
from ._guard import DEVICE_COOKIE, LOGIN_COOKIE, SESSION_COOKIE, DashboardGuard, form_fields
from ._keys import KeyForm, create_key, keys_context, revoke_key
from ._overview import agents_context, models_context, overview_context
from ._requests import LogQuery, log_context, request_context
from ._routers import routers_context
from ._sources import WINDOWS, Sources, window_named
from ._throttle import LoginThrottle

__all__ = ["PAGE_TIMEOUT_S", "Dashboard", "build_dashboard"]

logger = logging.getLogger("switchman.ui")
_T = TypeVar("_T")

#: Seconds a page waits on the ledger database before answering 503. libpq has no read timeout: a database
#: that hangs on an open connection (the pool's ping included) would otherwise hold the page for ever.
PAGE_TIMEOUT_S = 20.0

_STATIC = Path(__file__).parent / "static"
_NAV = (("overview", "/", "Overview"), ("agents", "/agents", "Agents"), ("models", "/models", "Models"),
        ("requests", "/requests", "Requests"), ("routers", "/routers", "Routers"), ("keys", "/keys", "Keys & budgets"))


class Dashboard:
    """The page handlers, bound to one gateway's sources and one set of login keys."""

    def __init__(self, sources: Sources, access: Access) -> None:
        self.src = sources
        self.access = access
        self.throttle = LoginThrottle()
        self.env = Environment(loader=PackageLoader("switchman.ui", "templates"), autoescape=select_autoescape(),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(FILTERS)
        #: Logs the first page that finds the ledger down and its recovery, not every page in between (a hang).
        self.ledger_streak = FailureStreak(logger, "dashboard: %s", "dashboard: the ledger answers again",
                                           traceback=False)

    # -- rendering ---------------------------------------------------------------------------------
    def _common(self, request: Request, page: str) -> dict[str, Any]:
        session: Session | None = request.scope.get("state", {}).get("ui_session")
        return {"root": request.scope.get("root_path", ""), "page": page, "nav": _NAV, "session": session,
                "mode": self.access.mode, "windows": WINDOWS}

    async def _page(self, request: Request, template: str, build: Callable[[], dict[str, Any] | None], *,
                    status: int = 200, **extra: Any) -> Response:
        page = template.removesuffix(".html")

        def render() -> tuple[str, int]:
            context = build()
            if context is None:
                return self.env.get_template("missing.html").render(**self._common(request, page), **extra), 404
            return self.env.get_template(template).render(**self._common(request, page), **context, **extra), status

        try:
            html, code = await _off_loop(self.ledger_streak, render)
        except LedgerDown as exc:
            return self._unavailable(request, page, str(exc))
        return HTMLResponse(html, status_code=code)

    def _unavailable(self, request: Request, page: str, problem: str) -> Response:
        """503: the ledger database failed or did not answer (rendered without touching it)."""
        html = self.env.get_template("unavailable.html").render(**self._common(request, page), problem=problem)
        return HTMLResponse(html, status_code=503)

    # -- pages -------------------------------------------------------------------------------------
    async def overview(self, request: Request) -> Response:
        """GET / — spend, the saving over time, errors and latency."""
        window = window_named(request.query_params.get("window"))
        return await self._page(request, "overview.html", lambda: overview_context(self.src, window), window=window)

    async def agents(self, request: Request) -> Response:
        """GET /agents — per agent spend, budgets, model mix, sessions."""
        window = window_named(request.query_params.get("window"))
        return await self._page(request, "agents.html", lambda: agents_context(self.src, window), window=window)

    async def models(self, request: Request) -> Response:
        """GET /models — per model and deployment share, cost, latency, errors, circuit state."""
        window = window_named(request.query_params.get("window"))
        return await self._page(request, "models.html", lambda: models_context(self.src, window), window=window)

    async def routers(self, request: Request) -> Response:
        """GET /routers — targets, feedback, shadow comparison, last evaluation."""
        window = window_named(request.query_params.get("window"))
        return await self._page(request, "routers.html", lambda: routers_context(self.src, window), window=window)

    async def requests(self, request: Request) -> Response:
        """GET /requests — the filterable log, newest first."""
        query = LogQuery.from_params(request.query_params)
        return await self._page(request, "requests.html", lambda: log_context(self.src, query))

    async def request(self, request: Request) -> Response:
        """GET /requests/{request_id} — one request's decision and outcome."""
        request_id = request.path_params["request_id"]
        return await self._page(request, "request.html", lambda: request_context(self.src, request_id),
                                request_id=request_id)

    async def keys(self, request: Request) -> Response:
        """GET /keys — virtual keys and budgets."""
        revoked = request.query_params.get("revoked")
        return await self._page(request, "keys.html", lambda: keys_context(self.src), revoked=revoked)

    async def create(self, request: Request) -> Response:
        """POST /keys — create a key (admin); its secret is shown on this response only."""
        if not self._admin(request):
            return HTMLResponse("creating keys needs the master key's login", status_code=403)
        form = KeyForm.parse(form_fields(await request.body()))
        if form.problem is not None or self.src.keys is None:
            return await self._page(request, "keys.html", lambda: keys_context(self.src), status=400, form=form,
                                    problem=form.problem or "no key store")
        try:
            info, secret = await _off_loop(self.ledger_streak, lambda: create_key(self.src, form))
        except LedgerDown as exc:
            return self._unavailable(request, "keys", f"{exc}: the key may or may not have been created")
        return await self._page(request, "keys.html", lambda: keys_context(self.src), created=info, secret=secret)

    async def revoke(self, request: Request) -> Response:
        """POST /keys/{key_id}/revoke — revoke a key (admin); refused by the API from now on."""
        if not self._admin(request):
            return HTMLResponse("revoking keys needs the master key's login", status_code=403)
        key_id = request.path_params["key_id"]
        try:
            revoked = await _off_loop(self.ledger_streak, lambda: revoke_key(self.src, key_id))
        except LedgerDown as exc:
            return self._unavailable(request, "keys", f"{exc}: the key may or may not have been revoked")
        if not revoked:
            return await self._page(request, "keys.html", lambda: keys_context(self.src), status=404,
                                    problem=f"no active key {key_id!r}")
        return RedirectResponse(f"{request.scope.get('root_path', '')}/keys?revoked={key_id}", status_code=303)

    def _admin(self, request: Request) -> bool:
        """Whether this request may change keys: an admin session, and a master key to have signed it.

        `Access.read` already refuses admin sessions without a master key; this is the second lock on every mutation.
        """
        session: Session | None = request.scope.get("state", {}).get("ui_session")
        return self.access.has_master and session is not None and session.admin

    # -- logging in and out ------------------------------------------------------------------------
    def _login_page(self, request: Request, *, problem: str | None = None, status: int = 200,
                    headers: dict[str, str] | None = None) -> Response:
        cookie, token = self.access.login_token()
        root = request.scope.get("root_path", "")
        html = self.env.get_template("login.html").render(
            **self._common(request, "login"), token=token, problem=problem, next=_safe_next(request, root))
        response = HTMLResponse(html, status_code=status, headers=headers)
        _set_cookie(request, response, LOGIN_COOKIE, cookie, 3600)
        return response

    async def login_form(self, request: Request) -> Response:
        """GET /login."""
        if self.access.mode == "open":
            return RedirectResponse(f"{request.scope.get('root_path', '')}/", status_code=303)
        return self._login_page(request)

    async def login(self, request: Request) -> Response:
        """POST /login — the master key (admin) or the dashboard key (read-only) → a session cookie."""
        root = request.scope.get("root_path", "")
        address = request.client.host if request.client else "?"
        if self.access.mode != "login":
            return RedirectResponse(f"{root}/", status_code=303)
        fields = form_fields(await request.body())
        device = self.access.device_of(request.cookies.get(DEVICE_COOKIE))  # None: forged, expired, another key
        # Nothing may await from asking the throttle to counting the failure: a concurrent login checked in between
        # would pass a bucket one short of full (the body is read above for this reason).
        wait = self.throttle.retry_after(address, device)
        if wait:
            return self._login_page(request, problem="too many wrong keys: wait a few minutes", status=429,
                                    headers={"retry-after": str(wait)})
        role = self.access.role_of(fields.get("key", ""))
        if role is None:
            self.throttle.failed(address, device)
            return self._login_page(request, problem="that key is not the master key or the dashboard key",
                                    status=401)
        cookie, _ = self.access.issue(role)
        response = RedirectResponse(_safe_next(request, root, fields.get("next")), status_code=303)
        _set_cookie(request, response, SESSION_COOKIE, cookie, int(self.access.ttl_s))
        if role == "admin":  # not the read-only key: its holders could mint devices to guess the master key freely
            _set_cookie(request, response, DEVICE_COOKIE, self.access.device_cookie(device), DEVICE_TTL_S)
        response.delete_cookie(LOGIN_COOKIE, path=root or "/")
        return response

    async def logout(self, request: Request) -> Response:
        """POST /logout."""
        root = request.scope.get("root_path", "")
        response = RedirectResponse(f"{root}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=root or "/")
        return response


class LedgerDown(Exception):
    """The ledger database raised or did not answer within PAGE_TIMEOUT_S (the message says which)."""


async def _off_loop(streak: FailureStreak, work: Callable[[], _T]) -> _T:
    """`work()` (blocking database reads) in a worker thread, bounded by PAGE_TIMEOUT_S.

    A thread stuck on a hung connection is left behind (nothing can interrupt libpq's read), holding one of the
    ledger's few threads until it ends; the page is answered. A failure is logged once per streak (`streak`).
    """
    try:
        result = await ledger_call(work, PAGE_TIMEOUT_S)
    except LedgerTimeoutError as exc:
        message = str(exc)
        streak.failed(message)
    except (SQLAlchemyError, OSError) as exc:
        message = f"the ledger is unavailable ({type(exc).__name__})"
        streak.failed(message)
    else:
        streak.succeeded()
        return result
    raise LedgerDown(message)


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    """A dashboard cookie: HttpOnly, SameSite=Strict, for the dashboard's path, Secure when the request is https."""
    response.set_cookie(name, value, max_age=max_age, path=request.scope.get("root_path", "") or "/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def _safe_next(request: Request, root: str, given: str | None = None) -> str:
    """Where to go after logging in: a path of this dashboard only (never another site)."""
    target = given if given is not None else request.query_params.get("next", "")
    if target.startswith(root + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{root}/"


def build_dashboard(gateway: Gateway, *, bind_host: str = "127.0.0.1", base_dir: str | Path = ".") -> Starlette:
    """The dashboard over one gateway, to mount (at /ui) in the gateway's app.

    `bind_host` is where the server listens: without a master or dashboard key the dashboard is
    open (read-only) on loopback and closed anywhere else.
    """
    settings = gateway.config.dashboard
    access = Access(master_key=gateway.master_key, dashboard_key=gateway.dashboard_key,
                    loopback=is_loopback(bind_host), ttl_s=settings.session_ttl_s)
    board = Dashboard(Sources.from_gateway(gateway, base_dir=base_dir), access)
    routes = [
        Route("/", board.overview, methods=["GET"]),
        Route("/agents", board.agents, methods=["GET"]),
        Route("/models", board.models, methods=["GET"]),
        Route("/routers", board.routers, methods=["GET"]),
        Route("/requests", board.requests, methods=["GET"]),
        Route("/requests/{request_id}", board.request, methods=["GET"]),
        Route("/keys", board.keys, methods=["GET"]),
        Route("/keys", board.create, methods=["POST"]),
        Route("/keys/{key_id}/revoke", board.revoke, methods=["POST"]),
        Route("/login", board.login_form, methods=["GET"]),
        Route("/login", board.login, methods=["POST"]),
        Route("/logout", board.logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=_STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(DashboardGuard, access=access)])
    relative_slash_redirects(app.router)
    app.state.dashboard = board
    return app
