"""What the writer's NaN-for-NULL binding and LIFO pool must not change on SQLite: the log of a refused row, in-memory URLs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from switchman.ledger import Ledger, LedgerRecord


def test_a_refused_rows_log_shows_its_missing_values_as_none(
    open_ledger: Callable[..., Ledger], sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The log of a refused row names its values as main logged them: missing ones None, flags False, so the
    NaN that made SQLite refuse the row (cost_usd) is the only nan in it."""
    ledger = open_ledger(sqlite_url)
    ledger.record(LedgerRecord(time=2.0, request_id="nancost", agent="a", cost_usd=float("nan")))
    with caplog.at_level(logging.ERROR, logger="switchman.ledger"):
        ledger.close_sync()
    assert ledger.stats.discarded == 1
    [message] = [r.getMessage() for r in caplog.records if "refused record nancost" in r.getMessage()]
    params = message.split("[parameters: ", 1)[1]
    assert params.startswith("(2.0, 'nancost', 'a', None, None, None, None, None, None, '[]', 0, 0, False, nan, None,")
    assert params.count("nan") == 2  # 'nancost' and the cost itself


def test_an_in_memory_uri_is_refused_as_in_memory(tmp_path: Path) -> None:
    """`mode=memory` is an in-memory database too: refused with the in-memory ValueError, not create_engine's
    TypeError about pool_use_lifo (SQLAlchemy gives memory databases a SingletonThreadPool, which has no LIFO)."""
    with pytest.raises(ValueError, match="in-memory"):
        Ledger("sqlite:///file:review?mode=memory&cache=shared&uri=true")
