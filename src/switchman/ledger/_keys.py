"""Virtual API keys for the gateway, stored hashed in the ledger database.

A secret looks like ``sk-sw-<43 random url-safe characters>`` (256 bits) and is shown once, by
`create`. The database keeps a key id, the name, 8 characters of the secret to find the row, a
per-key salt and ``sha256(salt + secret)``; never the secret. Because the secrets are random rather
than chosen by people, one salted SHA-256 is as strong as a slow password hash and costs about a
microsecond; verified keys are also cached in memory for `cache_ttl` seconds, so the gateway does
not touch the database per request (a key revoked from another process stops working within
`cache_ttl`; one revoked through this store stops at once).

The master key is separate: the gateway reads it from the environment variable named by
``server.master_key_env`` (default ``SWITCHMAN_MASTER_KEY``) and accepts it for admin use (and as a
client key); it is never stored. Keys can be budgeted: `create(..., budget_usd=5)` gives the key
a daily (or monthly) limit that `KeyStore.budgets()` hands to the BudgetManager.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from .._config import BudgetConfig
from ._db import KEYS, create_ledger_engine, create_tables, resolve_url
from ._period import Period

__all__ = ["KEY_PREFIX", "KeyInfo", "KeyStore"]

logger = logging.getLogger("switchman.ledger")

KEY_PREFIX = "sk-sw-"
_LOOKUP_CHARS = 8
_DISPLAY_CHARS = 4
_MAX_SECRET_LEN = 256


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A virtual key as `list` shows it: never the secret, only its first characters."""

    id: str
    name: str
    prefix: str
    created: datetime
    revoked: bool = False
    budget_usd: float | None = None
    budget_period: Period = "day"

    @property
    def budget(self) -> BudgetConfig | None:
        """The key's own spending limit as a key-scoped budget, if it has one."""
        if self.budget_usd is None:
            return None
        return BudgetConfig(scope="key", name=self.id, usd=self.budget_usd, period=self.budget_period)


def _hash(salt: str, secret: str) -> str:
    return hashlib.sha256(salt.encode() + secret.encode()).hexdigest()


def _info(row: Mapping[Any, Any]) -> KeyInfo:
    return KeyInfo(
        id=row["id"],
        name=row["name"],
        prefix=f"{KEY_PREFIX}{row['lookup'][:_DISPLAY_CHARS]}…",
        created=datetime.fromtimestamp(row["created"], UTC),
        revoked=row["revoked"] is not None,
        budget_usd=row["budget_usd"],
        budget_period=row["budget_period"] or "day",
    )


class KeyStore:
    """Create, list, revoke and verify virtual keys in the ledger database.

    keys = KeyStore("sqlite:///ledger.sqlite3")
    info, secret = keys.create("ci-bot", budget_usd=5.0)   # show `secret` once
    keys.verify(secret)                                    # -> KeyInfo, or None
    """

    def __init__(self, url: str | None = None, *, cache_ttl: float = 10.0) -> None:
        self.url = resolve_url(url)
        self._engine: Engine = create_ledger_engine(self.url)
        self._cache_ttl = cache_ttl
        self._cache: dict[bytes, tuple[KeyInfo, float]] = {}
        self._lock = threading.Lock()
        self._schema_ready = False
        self._has_keys: bool | None = None
        #: Bumped by every revoke through this store, so callers' own caches can drop what they verified.
        self.revocations = 0

    def _ensure_schema(self) -> None:
        if not self._schema_ready:
            create_tables(self._engine)
            self._schema_ready = True

    def create(
        self, name: str, *, budget_usd: float | None = None, budget_period: Period = "day"
    ) -> tuple[KeyInfo, str]:
        """A new key and its secret; the secret is not stored and cannot be shown again."""
        if not name.strip():
            raise ValueError("a key needs a non-empty name")
        if budget_usd is not None and budget_usd <= 0:
            raise ValueError("a key's budget must be more than $0")
        if budget_period not in ("day", "month"):
            raise ValueError(f"unknown budget period {budget_period!r}: use 'day' or 'month'")
        self._ensure_schema()
        for _ in range(5):
            secret = KEY_PREFIX + secrets.token_urlsafe(32)
            salt = secrets.token_hex(16)
            row = {
                "id": "key-" + secrets.token_hex(4),
                "name": name,
                "lookup": secret[len(KEY_PREFIX) : len(KEY_PREFIX) + _LOOKUP_CHARS],
                "salt": salt,
                "hash": _hash(salt, secret),
                "created": time.time(),
                "revoked": None,
                "budget_usd": budget_usd,
                "budget_period": budget_period,
            }
            try:
                with self._engine.begin() as conn:
                    conn.execute(KEYS.insert(), [row])
            except IntegrityError:
                continue  # a key id collision: draw again
            return _info(row), secret
        raise RuntimeError("could not draw a unique key id")  # pragma: no cover - 2**32 ids

    def list(self) -> list[KeyInfo]:
        """Every key, revoked ones included, oldest first."""
        self._ensure_schema()
        with self._engine.connect() as conn:
            return [_info(row._mapping) for row in conn.execute(select(KEYS).order_by(KEYS.c.created, KEYS.c.id))]

    def get(self, key_id: str) -> KeyInfo | None:
        """One key by id."""
        self._ensure_schema()
        with self._engine.connect() as conn:
            row = conn.execute(select(KEYS).where(KEYS.c.id == key_id)).first()
        return None if row is None else _info(row._mapping)

    def revoke(self, key_id: str) -> bool:
        """Revoke a key at once; False if no active key has that id."""
        self._ensure_schema()
        with self._engine.begin() as conn:
            result = conn.execute(
                update(KEYS).where(KEYS.c.id == key_id, KEYS.c.revoked.is_(None)).values(revoked=time.time())
            )
        with self._lock:
            for digest in [d for d, (info, _) in self._cache.items() if info.id == key_id]:
                del self._cache[digest]
            self.revocations += 1
        return bool(result.rowcount)

    def has_keys(self) -> bool:
        """Whether any key that is not revoked exists.

        While the database is unreachable: the last answer, or True (ask for a key) if there was none.
        """
        try:
            self._ensure_schema()
            with self._engine.connect() as conn:
                found = conn.execute(select(KEYS.c.id).where(KEYS.c.revoked.is_(None)).limit(1)).first() is not None
        except SQLAlchemyError as exc:
            self._schema_ready = False
            logger.warning("cannot read virtual keys (%s); assuming keys are required", type(exc).__name__)
            return True if self._has_keys is None else self._has_keys
        self._has_keys = found
        return found

    def budgets(self) -> builtins.list[BudgetConfig]:
        """The key-scoped budgets of every active key that has one."""
        return [info.budget for info in self.list() if info.budget is not None and not info.revoked]

    def verify(self, secret: str) -> KeyInfo | None:
        """The key a secret belongs to, or None (unknown, malformed or revoked). Constant-time compare.

        While the database is unreachable, keys verified before keep working from the cache.
        """
        if not secret.startswith(KEY_PREFIX) or len(secret) > _MAX_SECRET_LEN:
            return None
        digest = hashlib.sha256(secret.encode()).digest()
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[1] < self._cache_ttl:
            return cached[0]
        lookup = secret[len(KEY_PREFIX) : len(KEY_PREFIX) + _LOOKUP_CHARS]
        try:
            self._ensure_schema()
            with self._engine.connect() as conn:
                rows = conn.execute(select(KEYS).where(KEYS.c.lookup == lookup)).all()
        except SQLAlchemyError as exc:
            logger.warning("cannot read virtual keys (%s); using keys verified before", type(exc).__name__)
            self._schema_ready = False
            return cached[0] if cached is not None else None
        for row in rows:
            if hmac.compare_digest(_hash(row.salt, secret), row.hash):
                if row.revoked is not None:
                    break
                info = _info(row._mapping)
                with self._lock:
                    self._cache[digest] = (info, now)
                return info
        with self._lock:
            self._cache.pop(digest, None)
        return None

    def close(self) -> None:
        """Release database connections."""
        self._engine.dispose()
