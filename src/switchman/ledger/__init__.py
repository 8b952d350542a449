"""Spend records, budgets, virtual keys and metrics: the gateway's bookkeeping.

    ledger = Ledger.from_url(None)          # $SWITCHMAN_LEDGER_URL, else SQLite in the user data dir
    budgets = BudgetManager(config.budgets + keys.budgets(), ledger)
    metrics = Metrics(ledger=ledger)

SQLite (WAL) by default, Postgres by URL; writes happen off the request path in batches.
"""

from ._budget import BudgetManager, Budgets, Reservation
from ._db import LEDGER_URL_ENV, display_url, resolve_url
from ._keys import KEY_PREFIX, UNCHANGED, KeyInfo, KeySet, KeyStore, lookup_of
from ._ledger import Ledger
from ._prometheus import Metrics
from ._period import Period, parse_since, period_bounds
from ._record import RECORD_STATUSES, LedgerRecord, LedgerStats, RecordStatus, SpendBy, SpendRow

__all__ = [
    "BudgetManager",
    "Budgets",
    "KEY_PREFIX",
    "KeyInfo",
    "KeySet",
    "KeyStore",
    "LEDGER_URL_ENV",
    "Ledger",
    "LedgerRecord",
    "LedgerStats",
    "Metrics",
    "Period",
    "RECORD_STATUSES",
    "RecordStatus",
    "Reservation",
    "SpendBy",
    "SpendRow",
    "UNCHANGED",
    "display_url",
    "lookup_of",
    "parse_since",
    "period_bounds",
    "resolve_url",
]
