"""API-key authentication: the master key (from the environment) or a virtual key from the KeyStore.

The key comes as `Authorization: Bearer <key>` (OpenAI clients) or `x-api-key: <key>` (Anthropic
clients, Claude Code); either header works on every path, checked the same way.

With no master key and no virtual keys there is nothing to check and every request passes (the
server then refuses to listen beyond loopback, see `check_bind`). A virtual key created while
the server runs switches checking on within `recheck_s`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time

import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Receive, Scope, Send

from ..._exceptions import InvalidRequestError
from ...ledger import KeyStore
from .._errors import dialect_for_path, error_response

__all__ = ["MASTER_KEY_ID", "AuthMiddleware"]

logger = logging.getLogger("switchman.gateway")

MASTER_KEY_ID = "master"
_CACHE_S = 10.0


def _unauthorized(message: str) -> InvalidRequestError:
    return InvalidRequestError(message, status=401, code="invalid_api_key", kind="authentication_error")


def _presented_key(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, str | None]:
    """The key the request presents (Authorization first, then x-api-key), or why there is none."""
    authorization = next((v for k, v in headers if k == b"authorization"), None)
    if authorization is not None:
        scheme, _, secret = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not secret.strip():
            return None, "malformed Authorization header: expected 'Bearer <key>'"
        return secret.strip(), None
    api_key = next((v for k, v in headers if k == b"x-api-key"), None)
    if api_key is not None:
        return (api_key.strip(), None) if api_key.strip() else (None, "empty x-api-key header")
    return None, "missing API key: send the header 'Authorization: Bearer <key>' or 'x-api-key: <key>'"


class AuthMiddleware:
    """Checks `Authorization: Bearer <key>` or `x-api-key: <key>`; sets `scope["state"]["key_id"]`."""

    def __init__(
        self, app: ASGIApp, *, keys: KeyStore | None, master_key: str | None,
        open_paths: frozenset[str] = frozenset({"/health"}), open_prefixes: tuple[str, ...] = (),
        recheck_s: float = 5.0,
    ) -> None:
        self.app = app
        self.keys = keys
        self.master = master_key.encode() if master_key else None
        self.open_paths = open_paths
        #: Mounted apps that authenticate their own requests (the dashboard: a login and a session cookie).
        self.open_prefixes = tuple(p.rstrip("/") for p in open_prefixes)
        self.recheck_s = recheck_s
        self._has_keys: bool | None = None
        self._checked_at = 0.0
        self._verified: dict[bytes, tuple[str, float, int]] = {}  # digest → key id, when, revocations then

    def _own_auth(self, path: str) -> bool:
        return any(path == p or path.startswith(p + "/") for p in self.open_prefixes)

    async def _enabled(self) -> bool:
        if self.master is not None:
            return True
        if self.keys is None:
            return False
        now = time.monotonic()
        if self._has_keys is None or now - self._checked_at > self.recheck_s:
            self._checked_at = now
            try:
                self._has_keys = await anyio.to_thread.run_sync(self.keys.has_keys)
            except SQLAlchemyError as exc:  # a ledger outage must not fail requests: keep the last answer
                logger.warning("cannot read virtual keys (%s); keeping the last known state", type(exc).__name__)
        return bool(self._has_keys)

    async def _key_id(self, secret: bytes) -> str | None:
        if self.master is not None and hmac.compare_digest(secret, self.master):
            return MASTER_KEY_ID
        if self.keys is None:
            return None
        digest = hashlib.sha256(secret).digest()
        now = time.monotonic()
        cached = self._verified.get(digest)
        revocations = self.keys.revocations  # a key revoked in this process (e.g. the dashboard) stops at once
        if cached is not None and now - cached[1] < _CACHE_S and cached[2] == revocations:
            return cached[0]
        info = await anyio.to_thread.run_sync(self.keys.verify, secret.decode("latin-1"))
        if info is None:
            self._verified.pop(digest, None)
            return None
        self._verified[digest] = (info.id, now, revocations)
        return info.id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths or self._own_auth(scope["path"]) \
                or not await self._enabled():
            await self.app(scope, receive, send)
            return
        secret, problem = _presented_key(scope["headers"])
        key_id = await self._key_id(secret) if secret else None
        if key_id is not None:
            scope.setdefault("state", {})["key_id"] = key_id
            await self.app(scope, receive, send)
            return
        error = _unauthorized(problem or "invalid API key")
        await error_response(error, dialect=dialect_for_path(scope["path"]))(scope, receive, send)
