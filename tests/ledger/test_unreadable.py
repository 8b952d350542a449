"""unreadable: the one line a command shows for a ledger it cannot read, whatever the driver said."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from switchman.ledger._db import unreadable


@pytest.mark.parametrize("exc", [
    OperationalError("select 1", {}, Exception("")),
    SQLAlchemyError(""),
    OSError(),
])
def test_a_driver_error_without_a_message_still_gives_one_line(exc: BaseException) -> None:
    line = unreadable("postgresql://app:s3cret@db.example/ledger", exc)
    assert line.startswith("cannot read the ledger at postgresql+psycopg://app:***@db.example/ledger: ")
    assert "s3cret" not in line and "\n" not in line
    assert line.rsplit(": ", 1)[1]  # a reason is named (the error's type when the driver gave no text)


def test_the_driver_first_line_is_the_reason() -> None:
    exc = OperationalError("select 1", {}, Exception("connection refused\nIs the server running?"))
    assert unreadable("sqlite:///x.db", exc) == "cannot read the ledger at sqlite+pysqlite:///x.db: connection refused"
