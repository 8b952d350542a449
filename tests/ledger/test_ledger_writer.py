"""The ledger's writer: batches, flush on close, outages, bad rows, the queue bound, reading back."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ledger_support import TcpProxy, make_records, pg_url_for, wait_until
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from switchman.ledger import Ledger, LedgerRecord, SpendRow, _db


def count_commits(engine: Engine) -> list[int]:
    """One entry per transaction the engine commits."""
    commits: list[int] = []

    @event.listens_for(engine, "commit")
    def _seen(conn: Any) -> None:
        commits.append(1)

    return commits


def test_batches_write_every_record(open_ledger: Callable[..., Ledger], db_url: str) -> None:
    records = make_records(1234)
    ledger = open_ledger(db_url, batch_size=100)
    assert ledger.count() == 0  # creates the tables
    commits = count_commits(ledger._engine)
    for rec in records:
        ledger.record(rec)
    ledger.start_sync()
    ledger.close_sync()

    assert ledger.stats.written == 1234
    assert len(commits) == math.ceil(1234 / 100)  # one transaction per full batch (all queued before start)
    reader = open_ledger(db_url)
    assert reader.count() == 1234
    assert reader.records() == records  # every field round-trips, tuples included
    reader.close_sync()


def test_awkward_values_round_trip(open_ledger: Callable[..., Ledger], db_url: str) -> None:
    awkward = LedgerRecord(
        request_id="awkward",
        agent='ag"ent\\ \t\n é 漢字 \U0001f600',
        candidates=('a"b', "c\\d", "é", "line\nbreak", ""),
        tags=(1, 2.5),  # type: ignore[arg-type]  # not strings: stored as their text
        error="x" * 10_000,
        tokens_estimated=True,
    )
    ledger = open_ledger(db_url)
    ledger.record(awkward)
    ledger.close_sync()
    [back] = open_ledger(db_url).records()
    assert back.agent == awkward.agent
    assert back.candidates == awkward.candidates
    assert back.tags == ("1", "2.5")
    assert back.error == awkward.error and back.tokens_estimated is True


def test_close_writes_records_queued_just_before(open_ledger: Callable[..., Ledger], db_url: str) -> None:
    ledger = open_ledger(db_url, flush_interval=60.0, batch_size=10_000)  # the timer never fires during the test
    ledger.start_sync()
    for rec in make_records(777):
        ledger.record(rec)
    ledger.close_sync()
    reader = open_ledger(db_url)
    assert reader.count() == 777
    reader.close_sync()


def test_a_row_recorded_while_the_writer_stops_at_close_is_written(
        open_ledger: Callable[..., Ledger], sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row accepted after the writer's last look at the queue, before close refused new ones, was logged as
    lost ("unreachable at shutdown"; spilled, given a spill_dir) with the database there all along."""
    ledger = open_ledger(sqlite_url)
    first, late = make_records(2)
    ledger.record(first)
    ledger.start_sync()
    assert ledger._thread is not None
    join, arriving = ledger._thread.join, [late]

    def join_then_record(timeout: float | None = None) -> None:
        join(timeout)  # the writer has stopped
        if arriving:  # (the fixture's second close joins too)
            assert ledger.record(arriving.pop())  # and close still takes rows

    monkeypatch.setattr(ledger._thread, "join", join_then_record)
    ledger.close_sync()
    assert ledger.records() == [first, late] and ledger.stats.queued == 0


def test_close_without_start_still_writes(open_ledger: Callable[..., Ledger], sqlite_url: str) -> None:
    ledger = open_ledger(sqlite_url)
    for rec in make_records(5):
        ledger.record(rec)
    ledger.close_sync()
    assert open_ledger(sqlite_url).count() == 5


def test_records_after_close_are_counted_as_dropped(open_ledger: Callable[..., Ledger], sqlite_url: str) -> None:
    ledger = open_ledger(sqlite_url)
    ledger.start_sync()
    ledger.close_sync()
    ledger.record(LedgerRecord())
    assert ledger.stats.dropped == 1


def test_async_lifecycle_from_an_event_loop(open_ledger: Callable[..., Ledger], sqlite_url: str) -> None:
    async def main() -> int:
        ledger = open_ledger(sqlite_url)
        await ledger.start()
        for rec in make_records(300):
            ledger.record(rec)
        assert await ledger.flush(timeout=30)
        await ledger.close()
        return ledger.stats.written

    assert asyncio.run(main()) == 300
    assert open_ledger(sqlite_url).count() == 300


def test_a_commit_wait_cancelled_on_a_loop_since_closed_does_not_end_the_writer(
    open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled `committed` leaves its waiter; waking it on its closed loop raised in the writer thread, which
    died: no row recorded after that was written."""
    monkeypatch.setattr(_db, "SQLITE_BUSY_TIMEOUT_S", 0.05)
    ledger = open_ledger(sqlite_url, max_retry_interval=0.05)
    ledger.count()
    first, later = make_records(2)

    async def cancelled_wait() -> None:
        waiting = asyncio.create_task(ledger.committed(ledger.record(first)))
        await asyncio.sleep(0)  # registered, and the writer started
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    lock = sqlite3.connect(sqlite_path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # the row stays uncommitted until its loop is closed
    asyncio.run(cancelled_wait())
    lock.execute("COMMIT")
    lock.close()
    wait_until(lambda: ledger.stats.written == 1, what="the first row")
    ledger.record(later)
    assert ledger.flush_sync(timeout=30)
    assert ledger.records() == [first, later]


def test_sqlite_locked_file_then_released(
    open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_db, "SQLITE_BUSY_TIMEOUT_S", 0.05)
    ledger = open_ledger(sqlite_url, max_retry_interval=0.1)
    assert ledger.count() == 0  # creates the file and tables
    ledger.start_sync()
    lock = sqlite3.connect(sqlite_path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    for rec in make_records(50):
        ledger.record(rec)  # returns at once even though the file is locked
    wait_until(lambda: ledger.stats.write_errors >= 2, what="write attempts against the locked file")
    assert ledger.stats.written == 0
    assert ledger.stats.queued == 50
    lock.execute("COMMIT")
    lock.close()
    assert ledger.flush_sync(timeout=30)
    assert ledger.count() == 50
    ledger.close_sync()


def test_table_dropped_while_running_is_recreated(open_ledger: Callable[..., Ledger], db_url: str) -> None:
    ledger = open_ledger(db_url, max_retry_interval=0.1)
    ledger.start_sync()
    for rec in make_records(10):
        ledger.record(rec)
    assert ledger.flush_sync(timeout=30)
    with ledger._engine.begin() as conn:
        conn.execute(text("DROP TABLE switchman_requests"))
    for rec in make_records(25):
        ledger.record(rec)
    assert ledger.flush_sync(timeout=30)
    assert ledger.stats.write_errors >= 1
    assert ledger.count() == 25  # the dropped rows are gone; every row recorded since is there
    ledger.close_sync()


def test_postgres_down_at_start_then_up_then_restarted(
    open_ledger: Callable[..., Ledger], pg_proxy: TcpProxy, pg_admin: tuple[Engine, str], pg_schema: str
) -> None:
    url = pg_url_for(pg_admin[1], pg_schema, port=pg_proxy.port)
    ledger = open_ledger(url, max_retry_interval=0.1)
    ledger.start_sync()  # nothing listens yet: starting must not fail
    for rec in make_records(40):
        ledger.record(rec)
    wait_until(lambda: ledger.stats.write_errors >= 2, what="failed writes while Postgres is down")
    assert ledger.stats.queued == 40

    pg_proxy.start()
    assert ledger.flush_sync(timeout=30)
    assert ledger.count() == 40

    pg_proxy.stop()  # cuts the pooled connections too
    errors = ledger.stats.write_errors
    for rec in make_records(60):
        ledger.record(rec)
    wait_until(lambda: ledger.stats.write_errors > errors, what="failed writes after the cut")
    pg_proxy.start()
    assert ledger.flush_sync(timeout=30)
    ledger.close_sync()
    assert ledger.stats.written == 100
    with pg_admin[0].connect() as conn:
        assert conn.execute(text(f"select count(*) from {pg_schema}.switchman_requests")).scalar_one() == 100


def test_close_gives_up_after_timeout_when_database_stays_down(
    open_ledger: Callable[..., Ledger], pg_proxy: TcpProxy, pg_admin: tuple[Engine, str], pg_schema: str
) -> None:
    ledger = open_ledger(pg_url_for(pg_admin[1], pg_schema, port=pg_proxy.port), max_retry_interval=0.05)
    ledger.start_sync()
    for rec in make_records(3):
        ledger.record(rec)
    ledger.close_sync(timeout=0.3)
    assert ledger.stats.written == 0
    assert ledger.stats.queued == 3


def test_queue_bound_drops_and_counts(
    open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_db, "SQLITE_BUSY_TIMEOUT_S", 0.05)
    ledger = open_ledger(sqlite_url, batch_size=1, max_queued=20, max_retry_interval=0.1)
    ledger.count()
    lock = sqlite3.connect(sqlite_path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    ledger.start_sync()
    for rec in make_records(30):
        ledger.record(rec)
    stats = ledger.stats
    assert stats.dropped >= 30 - 20 - 1  # the queue holds 20, the writer's pending batch 1
    assert stats.queued + stats.dropped == 30
    lock.execute("COMMIT")
    lock.close()
    ledger.close_sync()
    assert ledger.count() == 30 - stats.dropped


def test_invalid_row_is_discarded_and_the_rest_written(open_ledger: Callable[..., Ledger], db_url: str) -> None:
    good = make_records(9)
    bad = LedgerRecord(request_id="bad", time="yesterday")  # type: ignore[arg-type]  # not a number
    ledger = open_ledger(db_url)
    for rec in good[:4] + [bad] + good[4:]:
        ledger.record(rec)
    ledger.close_sync()
    assert ledger.stats.discarded == 1
    assert ledger.stats.written == 9
    assert [r.request_id for r in open_ledger(db_url).records()] == [r.request_id for r in good]



@pytest.mark.parametrize("bad", [
    LedgerRecord(request_id="surrogate", agent="bad\ud800"),  # no UTF-8 for it: the driver's UnicodeEncodeError
    LedgerRecord(request_id="huge", cluster=2**64),  # past a 64-bit integer: the driver's OverflowError
], ids=["lone-surrogate", "int-overflow"])
def test_a_value_the_driver_cannot_bind_is_discarded_and_the_writer_lives_on(
        open_ledger: Callable[..., Ledger], db_url: str, bad: LedgerRecord) -> None:
    """`record` never raises, so an SDK caller's odd value reaches the writer: one bad row, not a dead writer."""
    good = make_records(12)
    ledger = open_ledger(db_url)
    for rec in good[:4] + [bad] + good[4:8]:
        ledger.record(rec)
    assert ledger.flush_sync(10)
    for rec in good[8:]:  # accepted after the bad row: written too
        ledger.record(rec)
    ledger.close_sync(10)
    assert (ledger.stats.discarded, ledger.stats.written) == (1, 12)
    assert [r.request_id for r in open_ledger(db_url).records()] == [r.request_id for r in good]


def test_a_row_its_rollup_refuses_is_rolled_back_and_the_refusal_logged_in_one_line(
        open_ledger: Callable[..., Ledger], db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A NaN shadow cost passes the insert and fails the rollup's NOT NULL sum: the batch's rows are rolled back with
    it, retried one by one, and only that row is left out, with a log line that formats."""
    good = make_records(6)
    bad = LedgerRecord(request_id="nan-shadow", shadow_model="small", shadow_cost_usd=math.nan)
    ledger = open_ledger(db_url)
    with caplog.at_level("ERROR", logger="switchman.ledger"):
        for rec in good[:3] + [bad] + good[3:]:
            ledger.record(rec)
        ledger.close_sync(10)
    written = [r.request_id for r in open_ledger(db_url).records()]
    assert ledger.stats.discarded + len(written) == 7 and set(written) >= {r.request_id for r in good}
    refusals = [r.getMessage() for r in caplog.records if "refused record" in r.msg]
    assert len(refusals) == ledger.stats.discarded and all("nan-shadow" in m for m in refusals)
    with open_ledger(db_url)._engine.connect() as conn:
        total = conn.execute(text("SELECT sum(requests) FROM switchman_rollup WHERE slice = 'all' AND grain = 3600")
                             ).scalar()
    assert total == len(written)  # rows and their rollups were committed together

def test_postgres_refuses_nul_bytes_without_blocking_the_queue(open_ledger: Callable[..., Ledger], pg_url: str) -> None:
    ledger = open_ledger(pg_url)
    ledger.record(LedgerRecord(request_id="nul", agent="a\x00b"))
    ledger.record(LedgerRecord(request_id="fine", agent="ab"))
    ledger.close_sync()
    assert ledger.stats.discarded == 1
    assert [r.request_id for r in open_ledger(pg_url).records()] == ["fine"]


def test_query_spend_matches_a_hand_calculation(open_ledger: Callable[..., Ledger], db_url: str) -> None:
    t0 = datetime(2025, 3, 1, tzinfo=UTC).timestamp()
    rows = [
        # agent, model, key, route, in, out, cost, baseline, time offset
        ("triage", "small", "key-1", "default", 100, 10, 0.001, 0.010, 0),
        ("triage", "small", "key-1", "default", 200, 20, 0.002, 0.020, 60),
        ("triage", "large", "key-2", "default", 300, 30, 0.030, 0.030, 120),
        ("coder", "large", None, "code", 400, 40, 0.040, None, 180),  # no baseline: counts at cost
        ("coder", "small", "key-2", "code", 500, 50, 0.005, 0.050, -86400),  # before `since`
    ]
    ledger = open_ledger(db_url)
    for i, (agent, model, key, route, tin, tout, cost, base, dt) in enumerate(rows):
        ledger.record(
            LedgerRecord(
                time=t0 + dt,
                request_id=f"r{i}",
                agent=agent,
                model=model,
                key_id=key,
                route=route,
                input_tokens=tin,
                output_tokens=tout,
                cost_usd=cost,
                baseline_cost_usd=base,
            )
        )
    ledger.close_sync()
    since = datetime(2025, 3, 1, tzinfo=UTC)

    by_model = {r.group: r for r in ledger.query_spend("model", since=since)}
    assert by_model.keys() == {"small", "large"}
    assert by_model["small"] == SpendRow("small", 2, 300, 30, pytest.approx(0.003), pytest.approx(0.030))  # type: ignore[arg-type]
    assert by_model["large"] == SpendRow("large", 2, 700, 70, pytest.approx(0.070), pytest.approx(0.070))  # type: ignore[arg-type]
    assert by_model["small"].saving_pct == pytest.approx(90.0)
    assert by_model["large"].saving_pct == pytest.approx(0.0)

    by_key = {r.group: (r.requests, round(r.cost_usd, 6)) for r in ledger.query_spend("key", since=since)}
    assert by_key == {"key-1": (2, 0.003), "key-2": (1, 0.03), None: (1, 0.04)}
    by_agent = {r.group: r.requests for r in ledger.query_spend("agent", since=since)}
    assert by_agent == {"triage": 3, "coder": 1}
    by_route = [(r.group, round(r.cost_usd, 6)) for r in ledger.query_spend("route", since=0)]
    assert by_route == [("code", 0.045), ("default", 0.033)]  # most expensive first
    until = ledger.query_spend("model", since=since, until=t0 + 61)
    assert {r.group: r.requests for r in until} == {"small": 2}
    with pytest.raises(ValueError, match="cannot group spend by 'tenant'"):
        ledger.query_spend("tenant", since=since)  # type: ignore[arg-type]


def test_feedback_is_stored(open_ledger: Callable[..., Ledger], db_url: str) -> None:
    ledger = open_ledger(db_url)
    ledger.add_feedback("req-1", 0.8, "good answer")
    ledger.add_feedback("req-1", 0.2)
    assert ledger.feedback("req-1") == [(0.8, "good answer"), (0.2, None)]
    assert ledger.feedback("req-2") == []
    ledger.close_sync()


def test_url_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    assert _db.resolve_url(None, environ=env) == f"sqlite:///{tmp_path}/xdg/switchman/ledger.sqlite3"
    assert _db.resolve_url(None, environ={**env, "SWITCHMAN_LEDGER_URL": "sqlite:///a.db"}) == "sqlite:///a.db"
    assert _db.resolve_url("sqlite:///b.db", environ={"SWITCHMAN_LEDGER_URL": "sqlite:///a.db"}) == "sqlite:///b.db"
    home = _db.resolve_url(None, environ={})
    assert home.endswith("/.local/share/switchman/ledger.sqlite3")

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("SWITCHMAN_LEDGER_URL", raising=False)
    ledger = Ledger.from_url(None)
    ledger.record(LedgerRecord())
    ledger.close_sync()
    assert (tmp_path / "data" / "switchman" / "ledger.sqlite3").is_file()
    with sqlite3.connect(tmp_path / "data" / "switchman" / "ledger.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_url_errors_and_password_masking() -> None:
    with pytest.raises(ValueError, match="in-memory"):
        Ledger("sqlite:///:memory:")
    with pytest.raises(ValueError, match="unsupported ledger URL"):
        Ledger("mysql://u:hunter2@db/x")
    ledger = Ledger("postgres://user:hunter2@127.0.0.1:1/x")
    assert "hunter2" not in repr(ledger)
    assert "postgresql+psycopg://user:***@127.0.0.1:1/x" in repr(ledger)


def test_a_password_in_the_query_is_masked_too(open_ledger: Callable[..., Ledger],
                                               caplog: pytest.LogCaptureFixture) -> None:
    # libpq takes `?password=` (and `sslpassword=`) as well as `user:password@`.
    url = "postgresql://user@127.0.0.1:1/x?password=hunter2q&sslpassword=hunter3s&connect_timeout=1"
    ledger = open_ledger(url, max_retry_interval=0.05)
    ledger.start_sync()
    ledger.record(LedgerRecord())
    wait_until(lambda: ledger.stats.write_errors >= 1, what="a failed write")
    ledger.close_sync(timeout=0.3)
    shown = f"{ledger!r} {caplog.text}"
    assert "ledger postgresql+psycopg://user@127.0.0.1:1/x" in caplog.text  # the outage and the loss are logged
    assert "hunter2q" not in shown and "hunter3s" not in shown
    assert "connect_timeout=1" in repr(ledger)  # the rest of the URL still says which database


def test_each_streak_of_dropped_records_is_logged(
    open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(_db, "SQLITE_BUSY_TIMEOUT_S", 0.05)
    ledger = open_ledger(sqlite_url, batch_size=1, max_queued=5, max_retry_interval=0.05)
    ledger.count()
    ledger.start_sync()
    for outage in (1, 2):  # the database goes away twice; each time the queue fills and records are dropped
        lock = sqlite3.connect(sqlite_path, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        for rec in make_records(10):
            ledger.record(rec)
        assert ledger.stats.dropped >= 4 * outage
        lock.execute("COMMIT")
        lock.close()
        assert ledger.flush_sync(timeout=10)
    full = [r for r in caplog.records if "ledger queue full" in r.getMessage()]
    assert len(full) == 2, caplog.text  # the second loss is said too, not only the first ever
    assert "ledger queue drained" in caplog.text
    ledger.close_sync()
