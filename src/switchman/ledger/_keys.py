"""Virtual API keys for the gateway, stored hashed in the ledger database.

A secret looks like ``sk-sw-<43 random url-safe characters>`` (256 bits) and is shown once, by
`create`. The database keeps a key id, the name, 8 characters of the secret to find the row, a
per-key salt and ``sha256(salt + secret)``; never the secret. Because the secrets are random rather
than chosen by people, one salted SHA-256 is as strong as a slow password hash and costs about a
microsecond.

The gateway does not look keys up per request: it holds a `KeySet` (every key's hash, agents and
budget, read in one query) and refreshes it every few seconds, so a flood of invalid keys costs no
database query, a database that hangs leaves the last good set serving, and a key created,
changed or revoked from another process takes effect at the next refresh.

Keys can be budgeted (`budget_usd`, a daily or monthly key-scoped budget) and bound to agents
(`agents`: the agents the key may act as; `default_agent`: the agent of a request that names none).
Creating a key switches authentication on for good: the `switchman_settings` table remembers it, so
revoking the last key does not open the gateway (only `server.auth: off` does).

The master key is separate: the gateway reads it from the environment variable named by
``server.master_key_env`` (default ``SWITCHMAN_MASTER_KEY``) and accepts it for admin use (and as a
client key); it is never stored.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from .._config import BudgetConfig
from .._streaks import OnceLog
from ._db import KEYS, SETTINGS, create_ledger_engine, create_tables, resolve_url
from ._period import Period

__all__ = ["KEY_PREFIX", "UNCHANGED", "KeyInfo", "KeySet", "KeyStore", "lookup_of"]

logger = logging.getLogger("switchman.ledger")
#: The ids of the malformed key rows logged already (KeySets are rebuilt at every key refresh: the process remembers).
_MALFORMED = OnceLog()


KEY_PREFIX = "sk-sw-"
_LOOKUP_CHARS = 8
_DISPLAY_CHARS = 4
_MAX_SECRET_LEN = 256
_AUTH_SETTING = "auth"


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


#: `KeyStore.update`'s "leave this field as it is" (None clears a field).
UNCHANGED: Final = _Unchanged()


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
    agents: tuple[str, ...] | None = None
    default_agent: str | None = None

    @property
    def budget(self) -> BudgetConfig | None:
        """The key's own spending limit as a key-scoped budget, if it has one."""
        if self.budget_usd is None:
            return None
        return BudgetConfig(scope="key", name=self.id, usd=self.budget_usd, period=self.budget_period)


def _hash(salt: str, secret: str) -> str:
    return hashlib.sha256(salt.encode() + secret.encode()).hexdigest()


def _info(row: Mapping[Any, Any]) -> KeyInfo:
    agents = row.get("agents")
    return KeyInfo(
        id=row["id"],
        name=row["name"],
        prefix=f"{KEY_PREFIX}{row['lookup'][:_DISPLAY_CHARS]}…",
        created=datetime.fromtimestamp(row["created"], UTC),
        revoked=row["revoked"] is not None,
        budget_usd=row["budget_usd"],
        budget_period=row["budget_period"] or "day",
        agents=tuple(agents) if agents is not None else None,
        default_agent=row.get("default_agent"),
    )


def lookup_of(secret: str) -> str | None:
    """The characters of a secret its row is found by; None when it cannot be one of ours."""
    if not secret.startswith(KEY_PREFIX) or len(secret) > _MAX_SECRET_LEN or len(secret) < len(KEY_PREFIX) + 16:
        return None
    return secret[len(KEY_PREFIX) : len(KEY_PREFIX) + _LOOKUP_CHARS]


def _check_binding(agents: Sequence[str] | None, default_agent: str | None) -> None:
    if agents is not None and not all(isinstance(a, str) and a.strip() for a in agents):
        raise ValueError("agent names must be non-empty strings")
    if agents is not None and default_agent is not None and default_agent not in agents:
        raise ValueError(f"default agent {default_agent!r} is not one of the key's agents {list(agents)}")


@dataclass(frozen=True, slots=True)
class KeySet:
    """Every key as the database held it at one moment: verified in memory, no query per request.

    `auth_enabled` is whether authentication was ever switched on (a key was created).
    """

    by_lookup: Mapping[str, tuple[tuple[str, str, KeyInfo], ...]] = field(default_factory=dict)
    auth_enabled: bool = False

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[Any, Any]], *, auth_enabled: bool) -> KeySet:
        """A set from rows of the keys table (revoked ones are kept: they verify to None)."""
        grouped: dict[str, list[tuple[str, str, KeyInfo]]] = {}
        for row in rows:
            try:  # one malformed row (a direct edit, a version skew) must not keep every other key from the set
                info = _info(row)
                info.budget  # noqa: B018 (validated here: the gateway reads it at each key refresh)
            except (ValueError, TypeError, OverflowError, OSError) as exc:
                if _MALFORMED.first(row.get("id")):
                    logger.warning("virtual key %s left out: malformed row in the keys table (%s)", row.get("id"), exc)
                continue
            grouped.setdefault(row["lookup"], []).append((row["salt"], row["hash"], info))
        return cls({k: tuple(v) for k, v in grouped.items()}, auth_enabled=auth_enabled or bool(rows))

    def verify(self, secret: str) -> KeyInfo | None:
        """The active key a secret belongs to, or None (unknown, malformed or revoked). Constant-time compare."""
        lookup = lookup_of(secret)
        if lookup is None:
            return None
        for salt, digest, info in self.by_lookup.get(lookup, ()):
            if hmac.compare_digest(_hash(salt, secret), digest):
                return None if info.revoked else info
        return None

    def with_lookup(self, lookup: str, rows: Sequence[Mapping[Any, Any]]) -> KeySet:
        """A copy whose keys under one lookup prefix are these rows (what a targeted read found)."""
        entries = dict(self.by_lookup)
        fresh = KeySet.from_rows(rows, auth_enabled=self.auth_enabled)
        entries[lookup] = fresh.by_lookup.get(lookup, ())
        return KeySet(entries, auth_enabled=self.auth_enabled or bool(rows))

    def budgets(self) -> list[BudgetConfig]:
        """The key-scoped budgets of every active key that has one."""
        return [info.budget for entries in self.by_lookup.values() for _, _, info in entries
                if info.budget is not None and not info.revoked]

    def __len__(self) -> int:
        return sum(len(entries) for entries in self.by_lookup.values())


def _check_budget(budget_usd: float | None) -> None:
    """A budget is a finite amount above $0: NaN was stored as NULL, which is no budget at all."""
    if budget_usd is not None and not (math.isfinite(budget_usd) and budget_usd > 0):
        raise ValueError(f"a key's budget must be a finite amount more than $0, not {budget_usd!r} "
                         "(leave the budget out for none)")


class KeyStore:
    """Create, change, list, revoke and verify virtual keys in the ledger database.

    keys = KeyStore("sqlite:///ledger.sqlite3")
    info, secret = keys.create("ci-bot", budget_usd=5.0, agents=["ci"])   # show `secret` once
    keys.verify(secret)                                                   # -> KeyInfo, or None
    snapshot = keys.snapshot()                                            # every key, for the gateway
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = resolve_url(url)
        self._engine: Engine = create_ledger_engine(self.url)
        self._schema_ready = False
        #: Ids of the keys revoked through this store (e.g. on the dashboard): the gateway in the same process
        #: refuses them at once, before its next key refresh.
        self.revoked_here: set[str] = set()
        self._revoke_listeners: list[Callable[[str], None]] = []

    def _ensure_schema(self) -> None:
        if not self._schema_ready:
            create_tables(self._engine)
            self._schema_ready = True

    def create(
        self, name: str, *, budget_usd: float | None = None, budget_period: Period = "day",
        agents: Sequence[str] | None = None, default_agent: str | None = None,
    ) -> tuple[KeyInfo, str]:
        """A new key and its secret (shown once, never stored); switches authentication on for good."""
        if not name.strip():
            raise ValueError("a key needs a non-empty name")
        _check_budget(budget_usd)
        if budget_period not in ("day", "month"):
            raise ValueError(f"unknown budget period {budget_period!r}: use 'day' or 'month'")
        _check_binding(agents, default_agent)
        self._ensure_schema()
        for _ in range(5):
            secret = KEY_PREFIX + secrets.token_urlsafe(32)
            salt = secrets.token_hex(16)
            now = time.time()
            row = {
                "id": "key-" + secrets.token_hex(4),
                "name": name,
                "lookup": secret[len(KEY_PREFIX) : len(KEY_PREFIX) + _LOOKUP_CHARS],
                "salt": salt,
                "hash": _hash(salt, secret),
                "created": now,
                "revoked": None,
                "budget_usd": budget_usd,
                "budget_period": budget_period,
                "agents": list(agents) if agents is not None else None,
                "default_agent": default_agent,
                "updated": now,
            }
            try:
                with self._engine.begin() as conn:
                    conn.execute(KEYS.insert(), [row])
                    self._enable_auth(conn, now)
            except IntegrityError:
                continue  # a key id collision: draw again
            return _info(row), secret
        raise RuntimeError("could not draw a unique key id")  # pragma: no cover - 2**32 ids

    @staticmethod
    def _enable_auth(conn: Connection, now: float) -> None:
        if conn.execute(select(SETTINGS.c.name).where(SETTINGS.c.name == _AUTH_SETTING)).first() is None:
            conn.execute(SETTINGS.insert(), [{"name": _AUTH_SETTING, "value": "on", "time": now}])

    def update(
        self, key_id: str, *, budget_usd: float | None | _Unchanged = UNCHANGED,
        budget_period: Period | _Unchanged = UNCHANGED, agents: Sequence[str] | None | _Unchanged = UNCHANGED,
        default_agent: str | None | _Unchanged = UNCHANGED,
    ) -> KeyInfo:
        """Change a key's budget or agents (None clears one); the gateway applies it at its next key refresh."""
        current = self.get(key_id)
        if current is None or current.revoked:
            raise ValueError(f"no active key with id {key_id!r}")
        values: dict[str, Any] = {}
        if not isinstance(budget_usd, _Unchanged):
            _check_budget(budget_usd)
            values["budget_usd"] = budget_usd
        if not isinstance(budget_period, _Unchanged):
            if budget_period not in ("day", "month"):
                raise ValueError(f"unknown budget period {budget_period!r}: use 'day' or 'month'")
            values["budget_period"] = budget_period
        new_agents = current.agents if isinstance(agents, _Unchanged) else agents
        new_default = current.default_agent if isinstance(default_agent, _Unchanged) else default_agent
        _check_binding(new_agents, new_default)
        if not isinstance(agents, _Unchanged):
            values["agents"] = list(agents) if agents is not None else None
        if not isinstance(default_agent, _Unchanged):
            values["default_agent"] = default_agent
        with self._engine.begin() as conn:
            conn.execute(update(KEYS).where(KEYS.c.id == key_id).values(updated=time.time(), **values))
        updated = self.get(key_id)
        assert updated is not None
        return updated

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
        """Revoke a key (the gateway stops accepting it at its next key refresh); False if no active key has that id."""
        if "\x00" in key_id:
            return False  # no id holds a NUL, and PostgreSQL refuses to compare one (a DataError)
        self._ensure_schema()
        now = time.time()
        with self._engine.begin() as conn:
            result = conn.execute(
                update(KEYS).where(KEYS.c.id == key_id, KEYS.c.revoked.is_(None)).values(revoked=now, updated=now)
            )
        if result.rowcount:
            self.revoked_here.add(key_id)
            for listener in self._revoke_listeners:
                listener(key_id)
        return bool(result.rowcount)

    def on_revoke(self, listener: Callable[[str], None]) -> None:
        """Call `listener(key_id)` after each key this store revokes (from the revoking thread)."""
        self._revoke_listeners.append(listener)

    def auth_enabled(self) -> bool:
        """Whether authentication was ever switched on here (a key was created), revoked keys or not."""
        self._ensure_schema()
        with self._engine.connect() as conn:
            flagged = conn.execute(select(SETTINGS.c.name).where(SETTINGS.c.name == _AUTH_SETTING)).first()
            return flagged is not None or conn.execute(select(KEYS.c.id).limit(1)).first() is not None

    def has_keys(self) -> bool:
        """Whether any key that is not revoked exists."""
        self._ensure_schema()
        with self._engine.connect() as conn:
            return conn.execute(select(KEYS.c.id).where(KEYS.c.revoked.is_(None)).limit(1)).first() is not None

    def snapshot(self) -> KeySet:
        """Every key and whether authentication is on, read in one transaction (raises SQLAlchemyError)."""
        try:
            self._ensure_schema()
            with self._engine.connect() as conn:
                rows = [row._mapping for row in conn.execute(select(KEYS))]
                flagged = conn.execute(select(SETTINGS.c.name).where(SETTINGS.c.name == _AUTH_SETTING)).first()
        except SQLAlchemyError:
            self._schema_ready = False
            raise
        return KeySet.from_rows(rows, auth_enabled=flagged is not None)

    def budgets(self) -> builtins.list[BudgetConfig]:
        """The key-scoped budgets of every active key that has one."""
        return [info.budget for info in self.list() if info.budget is not None and not info.revoked]

    def rows_for(self, lookup: str) -> builtins.list[Mapping[Any, Any]]:
        """The rows under one lookup prefix (an indexed read: what the gateway asks about a key it does not know)."""
        self._ensure_schema()
        with self._engine.connect() as conn:
            return [row._mapping for row in conn.execute(select(KEYS).where(KEYS.c.lookup == lookup))]

    def verify(self, secret: str) -> KeyInfo | None:
        """The key a secret belongs to, or None (unknown, malformed or revoked), read from the database now."""
        lookup = lookup_of(secret)
        if lookup is None:
            return None
        return KeySet.from_rows(self.rows_for(lookup), auth_enabled=True).verify(secret)

    def close(self) -> None:
        """Release database connections."""
        self._engine.dispose()
