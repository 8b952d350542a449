"""API-key authentication: the master key (from the environment) or a virtual key from the Keyring.

The key comes as `Authorization: Bearer <key>` (OpenAI clients) or `x-api-key: <key>` (Anthropic
clients); either header works on every path, checked the same way.

Whether keys are required (`server.auth`): "required" always; "off" never (the server refuses to
listen beyond loopback then); "auto", the default, once a master key is set or a virtual key was
ever created here (the database remembers, so revoking the last key does not open the gateway).
A gateway configured to listen beyond loopback (`public`) always requires a key.
An address that fails too often is answered 429 without its key being checked.

Sets `scope["state"]`: `auth_enabled`, and for an authenticated request `key_id` ("master" for the
master key) and `key` (the virtual key's KeyInfo, with the agents it is bound to).
"""

from __future__ import annotations

import hmac
from typing import Literal

from starlette.responses import Response
from starlette.types import Scope

from ..._exceptions import InvalidRequestError
from ...ledger import KeyInfo
from .._errors import dialect_for_scope, error_response, retry_after_headers
from .._keyring import Keyring
from .._limiter import AddressLimiter

__all__ = ["MASTER_KEY_ID", "Authenticator", "presented_key"]

MASTER_KEY_ID = "master"


def _unauthorized(message: str) -> InvalidRequestError:
    return InvalidRequestError(message, status=401, code="invalid_api_key", kind="authentication_error")


def presented_key(authorization: bytes | None, api_key: bytes | None) -> tuple[bytes | None, str | None]:
    """The key the request presents (Authorization first, then x-api-key), or why there is none."""
    if authorization is not None:
        scheme, _, secret = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not secret.strip():
            return None, "malformed Authorization header: expected 'Bearer <key>'"
        return secret.strip(), None
    if api_key is not None:
        return (api_key.strip(), None) if api_key.strip() else (None, "empty x-api-key header")
    return None, "missing API key: send the header 'Authorization: Bearer <key>' or 'x-api-key: <key>'"


class Authenticator:
    """Checks the presented key; refuses with 401 (or 429 for an address that keeps failing)."""

    def __init__(
        self, *, keyring: Keyring | None, master_key: str | None,
        mode: Literal["auto", "required", "off"] = "auto", limiter: AddressLimiter | None = None,
        public: bool = False, open_paths: frozenset[str] = frozenset({"/health"}), open_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.keyring = keyring
        self.master = master_key.encode() if master_key else None
        self.mode = mode
        self.limiter = limiter
        self.public = public
        self.open_paths = open_paths
        #: Mounted apps that authenticate their own requests (the dashboard: a login and a session cookie).
        self.open_prefixes = tuple(p.rstrip("/") for p in open_prefixes)

    def own_auth(self, path: str) -> bool:
        """Whether `path` is under a mounted app that authenticates its own requests."""
        return any(path == p or path.startswith(p + "/") for p in self.open_prefixes)

    def required(self) -> bool:
        """Whether requests must present a key now."""
        if self.public:
            return True
        if self.mode != "auto":
            return self.mode == "required"
        return self.master is not None or (self.keyring is not None and self.keyring.auth_enabled)

    async def _identify(self, secret: bytes) -> tuple[str, KeyInfo | None] | None:
        if self.master is not None and hmac.compare_digest(secret, self.master):
            return MASTER_KEY_ID, None
        if self.keyring is None:
            return None
        info = await self.keyring.verify(secret.decode("latin-1"))
        return (info.id, info) if info is not None else None

    async def admit(self, scope: Scope, state: dict[str, object], secret: bytes | None, problem: str | None,
                    ) -> Response | None:
        """None when the request may go on (sets `state`), else the refusal to answer with.

        `secret` and `problem` are `presented_key`'s answer for the request's headers.
        """
        state["auth_enabled"] = required = self.required()
        if not required or scope["path"] in self.open_paths:
            if required and secret is not None and self.master is not None and hmac.compare_digest(secret, self.master):
                state["key_id"] = MASTER_KEY_ID  # an open path still knows the admin (e.g. /health's detail)
            return None
        client = scope.get("client")
        address = client[0] if client else "unknown"
        if self.limiter is not None and not self.limiter.allowed(address):
            wait = self.limiter.retry_after(address)
            headers = retry_after_headers(max(wait, 1.0))
            error = InvalidRequestError(
                f"too many failed authentications from this address; retry in {headers['retry-after']} s",
                status=429, code="too_many_failed_authentications", kind="rate_limit_error")
            return error_response(error, headers=headers, dialect=dialect_for_scope(scope))
        found = await self._identify(secret) if secret else None
        if found is not None:
            state["key_id"], state["key"] = found
            return None
        if self.limiter is not None:
            self.limiter.spend(address)
        return error_response(_unauthorized(problem or "invalid API key"), dialect=dialect_for_scope(scope))
