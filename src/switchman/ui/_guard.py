"""The dashboard's front door (pure ASGI): a session for every page, a CSRF token on every mutation.

Unauthenticated: a page request is sent to the login form (an htmx request gets 401 and an
HX-Redirect), anything else gets 401. Only the login form and the static files are served without a
session, and nothing at all when there is no key to log in with on a non-loopback bind. A mutation (any method but GET/HEAD) must carry the session's CSRF token, in the
X-CSRF-Token header or a `csrf` form field, and, when the browser says where it comes from
(Origin), come from this same host. The login POST, made before any session exists, checks the
signed token its form was given instead. Every response gets a strict Content-Security-Policy
(scripts and styles from this server only) and is never cached or framed.
"""

from __future__ import annotations

import urllib.parse
from http.cookies import CookieError, SimpleCookie

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._access import Access, check_csrf

__all__ = ["CSRF_FIELD", "CSRF_HEADER", "DEVICE_COOKIE", "LOGIN_COOKIE", "MAX_FORM_BYTES", "SESSION_COOKIE",
           "DashboardGuard", "form_fields"]

SESSION_COOKIE = "switchman_session"
LOGIN_COOKIE = "switchman_login"
#: Set on a master-key login: the browser is a known device to the login throttle (see `_throttle`).
DEVICE_COOKIE = "switchman_device"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
MAX_FORM_BYTES = 64_000
_SAFE_METHODS = frozenset({"GET", "HEAD"})
_LOGIN, _STATIC = "/login", "/static/"
_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


def form_fields(body: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body as a dict (the last value of a repeated field wins)."""
    return dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _cookie(headers: Headers, name: str) -> str | None:
    raw = headers.get("cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:  # a garbled header: no cookie
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def _same_origin(headers: Headers) -> bool:
    """False when the browser says the request comes from another site (Sec-Fetch-Site, Origin)."""
    if headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
        return False
    origin = headers.get("origin")
    if origin is None:
        return True
    try:
        netloc = urllib.parse.urlsplit(origin).netloc
    except ValueError:  # not a URL (e.g. an unclosed IPv6 bracket): no browser sends it, so not this site
        return False
    return netloc == headers.get("host", "")


class DashboardGuard:
    """Sets `scope["state"]["ui_session"]`; refuses what lacks a session or a CSRF token."""

    def __init__(self, app: ASGIApp, *, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._with_headers(send)
        root = scope.get("root_path", "")
        path = scope["path"][len(root):] if scope["path"].startswith(root) else scope["path"]
        headers = Headers(scope=scope)
        if self.access.mode == "closed":
            await _closed()(scope, receive, send)
            return
        method = scope["method"]
        token: str | None = None
        if method not in _SAFE_METHODS:
            if not _same_origin(headers):
                await PlainTextResponse("cross-origin request refused", status_code=403)(scope, receive, send)
                return
            body = await _read_body(receive)
            if body is None:
                await PlainTextResponse("form too large", status_code=413)(scope, receive, send)
                return
            receive = _replay(body, receive)
            token = headers.get(CSRF_HEADER) or form_fields(body).get(CSRF_FIELD)
        if path == _LOGIN or path.startswith(_STATIC):
            if path == _LOGIN and method not in _SAFE_METHODS:
                if not self.access.check_login_token(_cookie(headers, LOGIN_COOKIE), token):
                    await _refused("the login form expired or did not come from this page: reload it")(
                        scope, receive, send)
                    return
            await self.app(scope, receive, send)
            return
        session = self.access.read(_cookie(headers, SESSION_COOKIE))
        if session is None:
            await self._to_login(scope, headers, path)(scope, receive, send)
            return
        if method not in _SAFE_METHODS and not check_csrf(session, token):
            await _refused("missing or wrong CSRF token: reload the page and try again")(scope, receive, send)
            return
        scope.setdefault("state", {})["ui_session"] = session
        await self.app(scope, receive, send)

    def _to_login(self, scope: Scope, headers: Headers, path: str) -> Response:
        root = scope.get("root_path", "")
        query = scope.get("query_string", b"").decode("latin-1")
        target = f"{root}/login?" + urllib.parse.urlencode({"next": root + path + (f"?{query}" if query else "")})
        if scope["method"] not in _SAFE_METHODS:
            return PlainTextResponse("log in first", status_code=401)
        if headers.get("hx-request"):
            return Response(status_code=401, headers={"hx-redirect": target})
        return RedirectResponse(target, status_code=303)

    @staticmethod
    def _with_headers(send: Send) -> Send:
        async def sender(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = list(_HEADERS)
                names = {k.lower() for k, _ in message.get("headers", ())}
                if b"cache-control" not in names:
                    extra.append((b"cache-control", b"no-store"))
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        return sender


def _refused(message: str) -> Response:
    return PlainTextResponse(message, status_code=403)


def _closed() -> Response:
    return PlainTextResponse(
        "The dashboard is switched off: this server listens beyond loopback and no key to log in with is "
        "configured. Set the master key variable (SWITCHMAN_MASTER_KEY) or the dashboard key variable "
        "(SWITCHMAN_DASHBOARD_KEY) and restart.", status_code=403)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None beyond MAX_FORM_BYTES (a dashboard form is small)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, original: Receive) -> Receive:
    """A receive that hands the app the body already read, then listens to the client again."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await original()

    return receive
