"""The keys and budgets page: every virtual key with its spend, every budget with what is left.

Creating and revoking keys (admin sessions only) goes through the gateway's own KeyStore, so a
revoked key is refused by this server's API at once, and a key created with a budget is enforced
from its first request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..ledger import KeyInfo, Totals
from ._overview import budget_rows
from ._sources import Sources

__all__ = ["KeyForm", "create_key", "keys_context", "revoke_key"]

_MAX_NAME = 100


@dataclass(frozen=True, slots=True)
class KeyForm:
    """The create-key form, read and checked; `problem` says what is wrong with it."""

    name: str = ""
    budget_usd: float | None = None
    period: str = "day"
    problem: str | None = None

    @classmethod
    def parse(cls, fields: Mapping[str, str]) -> KeyForm:
        """Read the submitted fields."""
        name = (fields.get("name") or "").strip()
        period = fields.get("period") or "day"
        raw = (fields.get("budget_usd") or "").strip()
        if not name:
            return cls(name, None, period, "a key needs a name")
        if len(name) > _MAX_NAME or not name.isprintable():
            return cls(name[:_MAX_NAME], None, period, f"a key's name is printable text of at most {_MAX_NAME} characters")
        if period not in ("day", "month"):
            return cls(name, None, "day", "the budget period is 'day' or 'month'")
        budget = None
        if raw:
            try:
                budget = float(raw)
            except ValueError:
                return cls(name, None, period, f"the budget {raw!r} is not a number of dollars")
            if not math.isfinite(budget) or budget <= 0:
                return cls(name, None, period, "a budget is more than $0")
        return cls(name, budget, period)


def keys_context(src: Sources) -> dict[str, Any]:
    """Every key (newest first) with its spend today and in the last 30 days, and every budget."""
    keys: list[KeyInfo] = list(reversed(src.keys.list())) if src.keys is not None else []
    today: dict[str | None, Totals] = {}
    month: dict[str | None, Totals] = {}
    if src.ledger is not None:
        views = src.ledger.views
        now = src.clock()
        today = {t.group["key"]: t for t in views.totals(since=now - 86_400, by=("key",))}
        month = {t.group["key"]: t for t in views.totals(since=now - 30 * 86_400, by=("key",))}
    rows = [{"info": k, "day": today.get(k.id, Totals()), "month": month.get(k.id, Totals())} for k in keys]
    return {"keys": rows, "budgets": budget_rows(src), "has_store": src.keys is not None}


def create_key(src: Sources, form: KeyForm) -> tuple[KeyInfo, str]:
    """Create a key (and start enforcing its budget at once); returns its info and its secret."""
    assert src.keys is not None and form.problem is None
    info, secret = src.keys.create(form.name, budget_usd=form.budget_usd,
                                   budget_period="month" if form.period == "month" else "day")
    if info.budget is not None and src.budgets is not None:
        src.budgets.add(info.budget)
    return info, secret


def revoke_key(src: Sources, key_id: str) -> bool:
    """Revoke a key; False if there is no active key with that id."""
    return src.keys is not None and len(key_id) <= 64 and src.keys.revoke(key_id)
