"""Trailing-slash redirects that never name a host.

Starlette's router answers `/ui` with a 307 to `/ui/` (and `/v1/models/` to `/v1/models`), but builds the
Location from the request's Host header: `Host: evil.example` got `Location: http://evil.example/ui/`, so a
cache or a proxy that keys on the path, or a page that links to the gateway, could be made to send people
elsewhere. The redirect is kept (people type `/ui`), with a Location that is the path alone: the browser
stays on whatever host it asked.
"""

from __future__ import annotations

import urllib.parse

from starlette.responses import RedirectResponse
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["relative_slash_redirects"]


def relative_slash_redirects(router: Router) -> None:
    """Replace `router`'s slash redirect with one whose Location is a path (then its own not-found answer)."""
    router.redirect_slashes = False
    fallback: ASGIApp = router.default

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        target = _slash_twin(router, scope)
        if target is None:
            await fallback(scope, receive, send)
            return
        await RedirectResponse(target, status_code=307)(scope, receive, send)

    router.default = not_found


def _slash_twin(router: Router, scope: Scope) -> str | None:
    """The Location (path and query) with the trailing slash added or removed, when a route serves that; else None."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if scope["type"] != "http" or (path[len(root):] if path.startswith(root) else path) in ("", "/"):
        return None
    twin = path.rstrip("/") if path.endswith("/") else path + "/"
    # "//host/..." (or "/\host", which browsers read the same way) would be a reference to another host.
    if twin.startswith(("//", "/\\")) or not twin.startswith("/"):
        return None
    twin_scope = {**scope, "path": twin}
    if not any(route.matches(twin_scope)[0] is not Match.NONE for route in router.routes):
        return None
    location = _encoded(scope.get("raw_path"), twin)  # decodes to `twin`, so it starts as `twin` does: not "//"
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{location}?{query}" if query else location


def _encoded(raw_path: bytes | None, twin: str) -> str:
    """`twin` as the client encoded it: its raw path with the slash added or removed on the bytes (a decoded `?`,
    `#` or `%` would start a query, a fragment or an escape). Without a raw path that decodes to `twin` (none given,
    or the slash was itself encoded, `%2F`), the decoded twin quoted."""
    if raw_path is not None and raw_path.isascii():
        raw = raw_path.decode("ascii")
        candidate = raw + "/" if twin.endswith("/") else raw.rstrip("/")
        if urllib.parse.unquote(candidate) == twin:
            return candidate
    return urllib.parse.quote(twin, safe="/:@!$&'()*+,;=~")
