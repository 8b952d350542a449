"""Who may see the dashboard and who may change things: keys, signed session cookies, CSRF tokens.

    access = Access(master_key=..., dashboard_key=..., loopback=True, ttl_s=43200)
    access.role_of(typed_key)            # "admin" (master key), "viewer" (dashboard key) or None
    cookie = access.issue("admin")       # signed, expiring; holds the role and the CSRF token
    session = access.read(cookie)        # Session, or None when forged, expired or from an old key
    device = access.device_of(cookie)    # a known device's id (login throttle), or None likewise

Three modes: `login` when a master or dashboard key is configured; `open` (read-only, no login)
when neither is and the server listens on loopback only; `closed` otherwise: nothing of the
dashboard is served without a key to log in with.

The signing secret is derived from the configured keys (HMAC-SHA256), so every worker of one
server accepts the same cookies, a restart keeps people logged in, and changing a key logs
everyone out. The master key takes part in it, so holding the read-only key is not enough to
forge an admin cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from itsdangerous import BadSignature, URLSafeTimedSerializer

__all__ = ["DEVICE_TTL_S", "Access", "Mode", "Role", "Session"]

Role = Literal["admin", "viewer"]
Mode = Literal["login", "open", "closed"]
_SESSION_SALT = "switchman-ui-session"
_LOGIN_SALT = "switchman-ui-login"
_DEVICE_SALT = "switchman-ui-device"
_LOGIN_FORM_TTL_S = 3600
#: How long a browser that logged in with the master key stays a known device to the login throttle (see `_throttle`).
DEVICE_TTL_S = 30 * 86400


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in browser: its role and the token its forms must send back."""

    role: Role
    csrf: str

    @property
    def admin(self) -> bool:
        """Whether this session may create and revoke keys."""
        return self.role == "admin"


class Access:
    """The dashboard's keys and the cookies and tokens derived from them."""

    def __init__(self, *, master_key: str | None, dashboard_key: str | None, loopback: bool, ttl_s: float) -> None:
        self._keys: list[tuple[bytes, Role]] = []
        if master_key:
            self._keys.append((master_key.encode(), "admin"))
        if dashboard_key:
            self._keys.append((dashboard_key.encode(), "viewer"))
        self.mode: Mode = "login" if self._keys else ("open" if loopback else "closed")
        self.ttl_s = ttl_s
        material = b"\0".join(key for key, _ in self._keys) or secrets.token_bytes(32)
        secret = hmac.new(material, b"switchman dashboard session v1", hashlib.sha256).hexdigest()
        self._sessions = URLSafeTimedSerializer(secret, salt=_SESSION_SALT)
        self._logins = URLSafeTimedSerializer(secret, salt=_LOGIN_SALT)
        self._devices = URLSafeTimedSerializer(secret, salt=_DEVICE_SALT)
        #: In open mode every visitor browses read-only under this session (no cookie needed).
        self.open_session = Session("viewer", secrets.token_urlsafe(24)) if self.mode == "open" else None

    def role_of(self, typed: str) -> Role | None:
        """The role a typed key logs in as; every configured key is compared (constant time)."""
        found: Role | None = None
        candidate = typed.encode()
        for key, role in self._keys:
            if hmac.compare_digest(candidate, key) and found is None:
                found = role
        return found

    def issue(self, role: Role) -> tuple[str, Session]:
        """A new session for `role` and the signed cookie value that carries it."""
        session = Session(role, secrets.token_urlsafe(24))
        return self._sessions.dumps({"r": session.role, "c": session.csrf}), session

    def read(self, cookie: str | None) -> Session | None:
        """The session in a cookie, or None when absent, forged, expired or signed with another key."""
        if self.open_session is not None:
            return self.open_session
        if not cookie or self.mode != "login":
            return None
        try:
            data = self._sessions.loads(cookie, max_age=int(self.ttl_s))
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict) or data.get("r") not in ("admin", "viewer") or not isinstance(data.get("c"), str):
            return None
        role: Role = "admin" if data["r"] == "admin" else "viewer"
        return Session(role, data["c"])

    def login_token(self) -> tuple[str, str]:
        """(cookie value, form token) for the login form: the POST must bring both back, matching."""
        token = secrets.token_urlsafe(24)
        return self._logins.dumps(token), token

    def device_cookie(self, device: str | None = None) -> str:
        """A signed device cookie value for a browser that just logged in (`device`: the id it already had)."""
        return self._devices.dumps(device or secrets.token_urlsafe(18))

    def device_of(self, cookie: str | None) -> str | None:
        """The device id in a cookie, or None when absent, forged, older than DEVICE_TTL_S or from another key."""
        if not cookie or self.mode != "login":
            return None
        try:
            device = self._devices.loads(cookie, max_age=DEVICE_TTL_S)
        except BadSignature:  # also SignatureExpired
            return None
        return device if isinstance(device, str) and device else None

    def check_login_token(self, cookie: str | None, form_token: str | None) -> bool:
        """Whether a login POST carries the token its form was given (double-submit, signed)."""
        if not cookie or not form_token:
            return False
        try:
            expected = self._logins.loads(cookie, max_age=_LOGIN_FORM_TTL_S)
        except BadSignature:
            return False
        return isinstance(expected, str) and hmac.compare_digest(expected.encode(), form_token.encode())


def check_csrf(session: Session, token: str | None) -> bool:
    """Whether a mutation carries its session's CSRF token."""
    return bool(token) and hmac.compare_digest(session.csrf.encode(), (token or "").encode())
