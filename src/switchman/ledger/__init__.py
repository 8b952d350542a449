"""Spend records, budgets, virtual keys and metrics: the gateway's bookkeeping.

    ledger = Ledger.from_url(None)          # $SWITCHMAN_LEDGER_URL, else SQLite in the user data dir
    budgets = BudgetManager(config.budgets + keys.budgets(), ledger)
    metrics = Metrics(ledger=ledger)
    ledger.views.totals(since=time.time() - 86400, by=("agent",))   # from the hourly rollups

SQLite (WAL) by default, Postgres by URL; writes happen off the request path in batches.
"""

from ._budget import BudgetManager, Budgets, Reservation
from ._db import LEDGER_URL_ENV, display_url, require_existing, resolve_url, unreadable
from ._keys import KEY_PREFIX, UNCHANGED, KeyInfo, KeySet, KeyStore, lookup_of
from ._ledger import Ledger
from ._period import Period, parse_since, period_bounds
from ._prometheus import Metrics
from ._spill import resolve_spill_dir
from ._record import RECORD_STATUSES, CandidateEstimate, LedgerRecord, LedgerStats, RecordStatus, SpendBy, SpendRow
from ._views import (
    ERROR_STATUSES,
    REFUSED_STATUSES,
    FeedbackSummary,
    LatencySummary,
    LedgerViews,
    RequestFilter,
    RequestPage,
    SessionSummary,
    TimelinePoint,
    Totals,
)

__all__ = [
    "BudgetManager",
    "Budgets",
    "CandidateEstimate",
    "ERROR_STATUSES",
    "FeedbackSummary",
    "KEY_PREFIX",
    "KeyInfo",
    "KeySet",
    "KeyStore",
    "LEDGER_URL_ENV",
    "LatencySummary",
    "Ledger",
    "LedgerRecord",
    "LedgerStats",
    "LedgerViews",
    "Metrics",
    "Period",
    "RECORD_STATUSES",
    "REFUSED_STATUSES",
    "RecordStatus",
    "RequestFilter",
    "RequestPage",
    "Reservation",
    "SessionSummary",
    "SpendBy",
    "SpendRow",
    "TimelinePoint",
    "Totals",
    "UNCHANGED",
    "display_url",
    "lookup_of",
    "parse_since",
    "period_bounds",
    "require_existing",
    "resolve_spill_dir",
    "resolve_url",
    "unreadable",
]
