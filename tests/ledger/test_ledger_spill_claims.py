"""Spill files under odd rows and odd neighbours: strings the database refuses, twins across replay chunks,
files held (flock) or left by a process that is gone, relative SQLite URLs, names no start can parse."""

from __future__ import annotations

import fcntl
import logging
import math
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ledger_support import files, make_records, replay, spill_lines, spill_unreachable, wait_until

from switchman.ledger import Ledger, LedgerRecord
from switchman.ledger._spill import SpillDir, resolve_spill_dir

LOG = "switchman.ledger"


def test_a_lone_surrogate_loses_only_its_own_row(
        open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, spill_dir: Path,
        fast_busy: None) -> None:
    """SDK callers can pass any str: the spill file holds it escaped (ASCII JSON), close returns, and only the
    database refuses that one row at the replay."""
    good = make_records(5)
    bad = LedgerRecord(request_id="bad", agent="x\ud800")
    first = spill_unreachable(open_ledger, sqlite_url, sqlite_path, spill_dir, [*good[:2], bad, *good[2:]])
    assert first.stats.spilled == 6
    assert [line["agent"] for line in spill_lines(spill_dir)][2] == "x\ud800"  # round-trips exactly
    after = replay(open_ledger, sqlite_url, spill_dir)
    assert after.records() == good and files(spill_dir) == []
    assert after.stats.discarded == 1 and after.stats.replayed == 5


def test_a_request_id_the_database_cannot_look_up_loses_only_its_own_row(
        open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, spill_dir: Path,
        fast_busy: None) -> None:
    """A lone surrogate in a request id: the replay's look-up of the chunk failed at every retry (taken for an
    outage), so the file was never finished and the chunk's good rows never written."""
    good = make_records(4)
    spill_unreachable(open_ledger, sqlite_url, sqlite_path, spill_dir,
                      [*good[:2], LedgerRecord(request_id="x\ud800"), *good[2:]])
    after = replay(open_ledger, sqlite_url, spill_dir, max_retry_interval=0.05)
    assert after.records() == good and files(spill_dir) == []
    assert (after.stats.replayed, after.stats.discarded, after.stats.write_errors) == (4, 1, 0)


def test_a_row_that_cannot_be_serialized_is_left_out_and_close_still_releases(
        open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, spill_dir: Path,
        fast_busy: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from switchman.ledger import _spill

    real = _spill.json.dumps

    def dumps(obj: object, **kw: object) -> str:
        if isinstance(obj, dict) and obj.get("request_id") == "odd":
            raise ValueError("cannot serialize")
        return real(obj, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(_spill.json, "dumps", dumps)
    good = make_records(3)
    first = spill_unreachable(open_ledger, sqlite_url, sqlite_path, spill_dir,
                              [good[0], LedgerRecord(request_id="odd"), *good[1:]])
    assert (first.stats.spilled, first.stats.discarded) == (3, 1)
    monkeypatch.setattr(_spill.json, "dumps", real)
    assert replay(open_ledger, sqlite_url, spill_dir).records() == good


def test_twins_in_different_replay_chunks_are_both_written(
        open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, spill_dir: Path,
        fast_busy: None) -> None:
    """The second twin's chunk finds the first twin, which this same replay inserted: it is no earlier row."""
    records = make_records(4)
    twin = LedgerRecord(request_id="twin", time=5000.0, cost_usd=1.0)
    rows = [*records[:3], twin, LedgerRecord(request_id="twin", time=5000.0, cost_usd=2.0), records[3]]
    spill_unreachable(open_ledger, sqlite_url, sqlite_path, spill_dir, rows)
    after = replay(open_ledger, sqlite_url, spill_dir, batch_size=4)  # chunks of 4: the twins straddle them
    assert sorted(r.cost_usd for r in after.records() if r.request_id == "twin") == [1.0, 2.0]
    assert after.count() == 6


def test_a_replay_stopped_half_way_writes_each_twin_once_when_taken_again(
        open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, spill_dir: Path,
        fast_busy: None) -> None:
    twins = [LedgerRecord(request_id="twin", time=5000.0, cost_usd=float(n)) for n in range(3)]
    spill_unreachable(open_ledger, sqlite_url, sqlite_path, spill_dir, twins)
    earlier = open_ledger(sqlite_url)
    earlier.record(twins[0])  # as if an earlier replay had written the first twin, then stopped
    earlier.close_sync()
    assert replay(open_ledger, sqlite_url, spill_dir, batch_size=1).count() == 3


def _holder(path: Path) -> subprocess.Popen[str]:
    """Another process holding `path` locked until its stdin closes."""
    code = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); "
            "print('held', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def test_a_claim_goes_by_the_files_lock_not_its_pid(
        open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, spill_dir: Path,
        fast_busy: None, caplog: pytest.LogCaptureFixture) -> None:
    """In a container pid 1 always runs, and a restarted process may get its predecessor's pid: files named for
    them but held by no one are taken. A file another process holds locked is left (logged) until it lets go."""
    records = make_records(6)
    for pid, part in ((1, records[:2]), (os.getpid(), records[2:4]), (None, records[4:])):
        before = set(files(spill_dir))
        spill_unreachable(open_ledger, sqlite_url, sqlite_path, spill_dir, part)
        [new] = set(files(spill_dir)) - before
        if pid is not None:
            (spill_dir / new).rename(spill_dir / f"{new}.replaying-{pid}")
    held = next(name for name in files(spill_dir) if name.endswith(".jsonl"))
    with _holder(spill_dir / held) as other, caplog.at_level(logging.WARNING, logger=LOG):
        assert replay(open_ledger, sqlite_url, spill_dir).records() == records[:4]
        assert "held by a live process" in caplog.text and files(spill_dir) == [held]
        assert other.stdin is not None
        other.stdin.close()
    assert replay(open_ledger, sqlite_url, spill_dir).count() == 6


def test_relative_sqlite_urls_of_different_directories_are_different_ledgers(
        open_ledger: Callable[..., Ledger], tmp_path: Path, spill_dir: Path, fast_busy: None,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    url = "sqlite:///ledger.sqlite3"
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    monkeypatch.chdir(one)
    spill_unreachable(open_ledger, url, one / "ledger.sqlite3", spill_dir, make_records(3))
    monkeypatch.chdir(two)
    with caplog.at_level(logging.WARNING, logger=LOG):
        assert replay(open_ledger, url, spill_dir).count() == 0
    assert "holds 1 files of other ledgers" in caplog.text and len(files(spill_dir)) == 1
    monkeypatch.chdir(one)
    assert replay(open_ledger, url, spill_dir).count() == 3


def test_a_file_name_no_start_can_read_does_not_stop_the_others(
        open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, spill_dir: Path,
        fast_busy: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    records = make_records(2)
    spill_unreachable(open_ledger, sqlite_url, sqlite_path, spill_dir, records)
    tag = SpillDir(spill_dir, sqlite_url).tag
    odd = f"spill-{tag}-1-00.jsonl.replaying-{10 ** 30}"  # sorts first; its pid overflows a C int
    (spill_dir / odd).write_text("")
    (spill_dir / odd).chmod(0o600)
    from switchman.ledger import _spill

    real = _spill.SpillDir._take

    def take(self: SpillDir, dirfd: int, name: str, ready: str) -> object:
        if name == odd:
            raise OverflowError("a name no start can read")
        return real(self, dirfd, name, ready)

    monkeypatch.setattr(_spill.SpillDir, "_take", take)
    with caplog.at_level(logging.ERROR, logger=LOG):
        assert replay(open_ledger, sqlite_url, spill_dir).records() == records
    assert "OverflowError" in caplog.text and files(spill_dir) == [odd]


def test_a_claim_reads_its_file_a_chunk_at_a_time(
        open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, spill_dir: Path,
        fast_busy: None) -> None:
    spill_unreachable(open_ledger, sqlite_url, sqlite_path, spill_dir, make_records(30))
    claim = SpillDir(spill_dir, sqlite_url).claim()
    assert claim is not None
    try:
        assert claim.line == 0  # nothing parsed by the claim itself
        assert len(claim.read(10)) == 10 and claim.line == 10
        fcntl.flock(claim.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # it holds the lock (re-taking is a no-op)
    finally:
        claim.release()


def test_the_replay_looks_up_only_its_chunks_time_span(
        open_ledger: Callable[..., Ledger], sqlite_url: str) -> None:
    """Client request ids repeat: the look-up must not fetch every row ever written under one."""
    ledger = open_ledger(sqlite_url)
    for n in range(50):
        ledger.record(LedgerRecord(request_id="same", time=1000.0 + n))
    ledger.flush_sync()
    found = ledger._replayer._present([LedgerRecord(request_id="same", time=1010.0), LedgerRecord(request_id="same",
                                                                                      time=1012.0)])
    assert sum(found.values()) == 3


def test_a_time_that_is_no_number_does_not_hide_rows_already_written(
        open_ledger: Callable[..., Ledger], sqlite_url: str) -> None:
    """A NaN time (an SDK caller's, spilled as JSON NaN) first in a chunk made the look-up's time span NaN: it
    found nothing, and the chunk's rows an abandoned writer had committed were written again."""
    ledger = open_ledger(sqlite_url)
    written = make_records(2)
    for rec in written:
        ledger.record(rec)
    assert ledger.flush_sync()
    found = ledger._replayer._present([LedgerRecord(request_id="odd", time=math.nan), *written])
    assert found == Counter((rec.request_id, rec.time) for rec in written)


def test_no_home_gives_no_spill_dir_not_a_failed_start(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    with caplog.at_level(logging.WARNING, logger=LOG):
        assert resolve_spill_dir(None, environ={}) is None
    assert "no ledger spill directory" in caplog.text
    assert resolve_spill_dir(None, environ={"XDG_STATE_HOME": "/x"}) == Path("/x/switchman/ledger-spill")


def test_without_posix_opens_only_a_close_with_rows_to_spill_logs(
        open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, spill_dir: Path, fast_busy: None,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Where O_NOFOLLOW/dir_fd are missing (Windows) every start logged an ERROR; now only a close that has rows
    it cannot spill says so."""
    from switchman.ledger import _spill

    monkeypatch.setattr(_spill, "SUPPORTED", False)
    with caplog.at_level(logging.INFO, logger=LOG):
        assert replay(open_ledger, sqlite_url, spill_dir).count() == 0
    assert caplog.records == []
    with caplog.at_level(logging.ERROR, logger=LOG):
        spill_unreachable(open_ledger, sqlite_url, sqlite_path, spill_dir, make_records(2))
    assert "need O_NOFOLLOW and dir_fd" in caplog.text and "2 rows not written" in caplog.text
    assert not spill_dir.exists()


def test_rows_a_replay_wrote_one_by_one_before_an_outage_are_counted_once(
        open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, spill_dir: Path, fast_busy: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk the database refused a row of is written one row at a time; the database going away half-way
    failed the chunk, and its retry found the rows written before as "in the ledger already": `replayed`
    undercounted them, and the refused row was refused (and counted as discarded) a second time."""
    from switchman.ledger._rows import BulkInsert

    good = make_records(5)
    spill_unreachable(open_ledger, sqlite_url, sqlite_path, spill_dir,
                      [good[0], LedgerRecord(request_id="bad", agent="x\ud800"), *good[1:]])
    real, calls, holder = BulkInsert.__call__, [], []

    def insert(self: BulkInsert, rows: Any, then: Any = None, *, wrapped: bool = False) -> None:
        calls.append(wrapped)
        if calls.count(True) == 3 and not holder:  # the third row alone: the database goes away (a real lock)
            lock = sqlite3.connect(sqlite_path, isolation_level=None, check_same_thread=False)
            lock.execute("BEGIN EXCLUSIVE")
            holder.append(lock)
        real(self, rows, then, wrapped=wrapped)

    monkeypatch.setattr(BulkInsert, "__call__", insert)
    after = open_ledger(sqlite_url, spill_dir=spill_dir, max_retry_interval=0.05)
    try:
        after.start_sync()
        wait_until(lambda: after.stats.write_errors > 0, what="the outage in the one-by-one writes")
        assert holder, "the lock was never taken"
    finally:  # the EXCLUSIVE lock released however the wait ends: a failure here must not lock the next test out
        for lock in holder:
            if lock.in_transaction:
                lock.execute("COMMIT")
            lock.close()
    wait_until(lambda: not after._replayer.due, what="the replay")
    after.close_sync()
    assert after.records() == good and files(spill_dir) == []
    assert (after.stats.replayed, after.stats.discarded) == (5, 1)
