"""Rows a close could not write: spilled to a file, replayed once at the next start, never into a stranger's file.

The database is made unreachable the way the writer tests do it: SQLite held by another connection's
`BEGIN EXCLUSIVE` (with a short busy timeout), Postgres behind a TCP proxy that is switched off.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ledger_support import (
    TcpProxy,
    files,
    locked,
    make_records,
    pg_url_for,
    replay,
    samples,
    spill_lines,
    spill_through_stopped_proxy,
    spill_unreachable,
    value,
    wait_until,
)
from sqlalchemy import text
from sqlalchemy.engine import Engine

from switchman.ledger import Ledger, LedgerRecord, Metrics, _db
from switchman.ledger._spill import Claim, SpillDir

LOG = "switchman.ledger"


def rollup_requests(ledger: Ledger) -> int:
    with ledger._engine.connect() as conn:
        total = conn.execute(text("SELECT sum(requests) FROM switchman_rollup WHERE slice = 'all' AND grain = 3600")
                             ).scalar()
    return int(total or 0)


def test_rows_spilled_at_close_are_replayed_exactly_once_at_the_next_start(
        open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, spill_dir: Path, fast_busy: None,
        caplog: pytest.LogCaptureFixture) -> None:
    records = make_records(25, key_id="key-1", prompt="hello", scores=(("small", 0.5, 1e-6), ("large", None, 0.1)),
                           excluded=(("huge", "too dear"),), escalated=True, tokens_estimated=True)
    with caplog.at_level(logging.WARNING, logger=LOG):
        first = spill_unreachable(open_ledger, sqlite_url, sqlite_path, spill_dir, records)
    assert first.stats.written == 0 and first.stats.spilled == 25
    first.close_sync()  # a second close spills nothing again
    assert "25 rows spilled to" in caplog.text and "not written" not in caplog.text
    lines = spill_lines(spill_dir)
    assert [(line["request_id"], line["time"]) for line in lines] == [(r.request_id, r.time) for r in records]
    assert oct(spill_dir.stat().st_mode & 0o777) == "0o700"
    assert oct((spill_dir / files(spill_dir)[0]).stat().st_mode & 0o777) == "0o600"

    second = replay(open_ledger, sqlite_url, spill_dir)
    assert files(spill_dir) == []
    assert second.records() == records  # every field as recorded, request id and time included
    exposed = [samples(Metrics(ledger=ledger)) for ledger in (first, second)]  # an operator sees both in /metrics
    assert [value(found, "switchman_ledger_spilled_rows_total") for found in exposed] == [25, 0]
    assert [value(found, "switchman_ledger_replayed_rows_total") for found in exposed] == [0, 25]
    assert rollup_requests(second) == 25  # the rollups got them too, in the same transactions
    replay(open_ledger, sqlite_url, spill_dir)  # a third start finds nothing to replay
    assert second.count() == 25


def test_a_batch_the_abandoned_writer_commits_after_the_spill_is_neither_continued_nor_duplicated(
        open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, spill_dir: Path,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The writer is stuck in an insert when close gives up: its batch is spilled with the rest, then commits; it
    must write nothing more (the rest is spilled), and the replay must not insert that batch again. Until that
    writer ends the file stays locked: a ledger opened again in this process (the SDK's next router) must not
    replay the batch it may yet commit (both would)."""
    monkeypatch.setattr(_db, "SQLITE_BUSY_TIMEOUT_S", 60.0)  # the stuck insert outlives the close
    records = make_records(12)
    ledger = open_ledger(sqlite_url, spill_dir=spill_dir, close_timeout=0, batch_size=5)
    ledger.count()
    with locked(sqlite_path):
        for rec in records:
            ledger.record(rec)
        ledger.start_sync()
        wait_until(lambda: bool(ledger._pending), what="the writer's first batch")
        writer = ledger._thread
        assert writer is not None
        ledger.close_sync()
        assert writer.is_alive()  # still waiting on the lock
        assert len(spill_lines(spill_dir)) == 12
        assert SpillDir(spill_dir, sqlite_url).claim() is None  # held while the writer may commit
    writer.join(60)  # the lock is gone: its batch commits
    assert not writer.is_alive()
    claims: list[Claim | None] = []
    wait_until(lambda: claims.append(SpillDir(spill_dir, sqlite_url).claim()) or claims[-1] is not None,
               what="the file let go once the writer ended")
    claim = claims[-1]
    assert claim is not None
    claim.release()
    assert ledger.count() == 5  # that batch, and nothing of what was spilled behind it

    with caplog.at_level(logging.WARNING, logger=LOG):
        after = replay(open_ledger, sqlite_url, spill_dir)
    assert sorted(r.request_id for r in after.records()) == [r.request_id for r in records]
    assert rollup_requests(after) == 12
    assert "7 written, 5 in the ledger already" in caplog.text


def test_two_rows_sharing_a_request_id_and_time_are_both_kept(
        open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, spill_dir: Path,
        fast_busy: None) -> None:
    """Presence is counted, not just tested: two spilled twins of which one is written already give two rows."""
    twin = make_records(1)[0]
    writer = open_ledger(sqlite_url)
    writer.record(twin)
    writer.close_sync()
    spill_unreachable(open_ledger, sqlite_url, sqlite_path, spill_dir, [twin, twin])
    assert replay(open_ledger, sqlite_url, spill_dir).count() == 2


def test_postgres_unreachable_at_close_then_back(
        open_ledger: Callable[..., Ledger], pg_proxy: TcpProxy, pg_admin: tuple[Engine, str], pg_schema: str,
        spill_dir: Path) -> None:
    url = pg_url_for(pg_admin[1], pg_schema, port=pg_proxy.port)
    records = make_records(40, prompt="p\x01é")
    ledger = spill_through_stopped_proxy(open_ledger, url, pg_proxy, spill_dir, records)
    assert ledger.stats.spilled == 40 and len(spill_lines(spill_dir)) == 40

    pg_proxy.start()
    after = replay(open_ledger, url, spill_dir)
    assert files(spill_dir) == []
    assert after.records() == records
    with pg_admin[0].connect() as conn:
        assert conn.execute(text(f"select count(*) from {pg_schema}.switchman_requests")).scalar_one() == 40


def test_another_databases_spill_is_left_alone(
        open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, spill_dir: Path, tmp_path: Path,
        fast_busy: None) -> None:
    spill_unreachable(open_ledger, sqlite_url, sqlite_path, spill_dir, make_records(3))
    other = replay(open_ledger, f"sqlite:///{tmp_path / 'other.sqlite3'}", spill_dir)
    assert other.count() == 0 and len(files(spill_dir)) == 1
    assert replay(open_ledger, sqlite_url, spill_dir).count() == 3


def test_a_truncated_last_line_is_skipped_and_the_rest_replayed(
        open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, spill_dir: Path, fast_busy: None,
        caplog: pytest.LogCaptureFixture) -> None:
    """A process killed while writing its spill file leaves `.writing-<pid>` with half a line: taken over."""
    records = make_records(6)
    spill_unreachable(open_ledger, sqlite_url, sqlite_path, spill_dir, records)
    [name] = files(spill_dir)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    crashed = spill_dir / f"{name}.writing-{int(dead.stdout)}"
    (spill_dir / name).rename(crashed)
    lines = crashed.read_bytes().splitlines(keepends=True)
    lines[2:2] = [b"[" * 100_000 + b"\n", b"\xff\xfe\n", b'{"time": 1, "request_id": "x", "scores": 5}\n', b"{}\n"]
    crashed.write_bytes(b"".join(lines) + b'{"time": 1700000099.0, "request_id": "half')  # the crash: half a line
    with caplog.at_level(logging.WARNING, logger=LOG):
        after = replay(open_ledger, sqlite_url, spill_dir)
    assert after.records() == records and files(spill_dir) == []
    for number in (3, 4, 5, 6, 11):  # too deep, not UTF-8, a field of the wrong shape, no id, truncated
        assert f"line {number} skipped: not a ledger row" in caplog.text
    assert "5 unreadable lines skipped" in caplog.text


def test_a_close_during_a_replay_returns_and_gives_the_file_back(
        open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, spill_dir: Path,
        fast_busy: None) -> None:
    """A close is never kept waiting by a replay (its file lock is only tried): a close while it retries against
    a locked database ends it; the file goes back to its ready name and the next start replays it. A file
    claimed by a process that died is taken over."""
    records = make_records(30)
    spill_unreachable(open_ledger, sqlite_url, sqlite_path, spill_dir, records)
    [ready] = files(spill_dir)
    with locked(sqlite_path):
        ledger = open_ledger(sqlite_url, spill_dir=spill_dir, max_retry_interval=0.05)
        ledger.start_sync()
        wait_until(lambda: ledger.stats.write_errors >= 2, what="a replay that fails")
        assert files(spill_dir) == [f"{ready}.replaying-{os.getpid()}"]
        ledger.close_sync(timeout=5)
        assert ledger._thread is not None and not ledger._thread.is_alive()
    assert files(spill_dir) == [ready]

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    (spill_dir / ready).rename(spill_dir / f"{ready}.replaying-{int(dead.stdout)}")
    assert replay(open_ledger, sqlite_url, spill_dir).records() == records


# -- an unusable spill directory: logged, the rows counted lost, the writer alive -------------------------------


def test_a_symlinked_spill_dir_is_refused(
        open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, spill_dir: Path, tmp_path: Path,
        fast_busy: None, caplog: pytest.LogCaptureFixture) -> None:
    spill_unreachable(open_ledger, sqlite_url, sqlite_path, spill_dir, make_records(4))
    link = tmp_path / "link"
    link.symlink_to(spill_dir, target_is_directory=True)
    with caplog.at_level(logging.ERROR, logger=LOG):
        refused = replay(open_ledger, sqlite_url, link)
        assert refused.count() == 0 and len(files(spill_dir)) == 1  # not read through the link
        assert "spill directory" in caplog.text and "unusable (a symlink, not a directory of its own)" in caplog.text
        caplog.clear()
        spill_unreachable(open_ledger, sqlite_url, sqlite_path, link, make_records(2))
    assert len(files(spill_dir)) == 1  # nothing written through it either
    assert "unusable" in caplog.text and "2 rows not written" in caplog.text


def test_a_symlink_planted_as_a_spill_file_is_not_followed(
        open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, spill_dir: Path, tmp_path: Path,
        fast_busy: None, caplog: pytest.LogCaptureFixture) -> None:
    spill_unreachable(open_ledger, sqlite_url, sqlite_path, spill_dir, make_records(4))
    [ready] = files(spill_dir)
    elsewhere = tmp_path / "planted.jsonl"
    (spill_dir / ready).rename(elsewhere)
    (spill_dir / ready).symlink_to(elsewhere)
    with caplog.at_level(logging.ERROR, logger=LOG):
        assert replay(open_ledger, sqlite_url, spill_dir).count() == 0
    assert "not replayed: not a regular file (a symlink?)" in caplog.text
    assert elsewhere.is_file() and (spill_dir / ready).is_symlink()


@pytest.mark.parametrize("fault", ["world-writable", "group-writable", "another user's"])
def test_a_spill_dir_others_can_write_is_refused(
        open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, spill_dir: Path, fast_busy: None,
        caplog: pytest.LogCaptureFixture, fault: str) -> None:
    spill_unreachable(open_ledger, sqlite_url, sqlite_path, spill_dir, make_records(4))
    if fault == "another user's":
        if os.geteuid() != 0:
            pytest.skip("giving a folder to another user takes root")
        os.chown(spill_dir, 65534, 65534)
    else:
        spill_dir.chmod(0o777 if fault == "world-writable" else 0o770)
    with caplog.at_level(logging.ERROR, logger=LOG):
        assert replay(open_ledger, sqlite_url, spill_dir).count() == 0
        spill_unreachable(open_ledger, sqlite_url, sqlite_path, spill_dir, make_records(2))
    assert len(files(spill_dir)) == 1
    reason = "owned by uid 65534" if fault == "another user's" else "writable by group or others"
    assert caplog.text.count(reason) == 2 and "2 rows not written" in caplog.text


def test_a_spill_file_of_another_user_is_not_replayed(
        open_ledger: Callable[..., Ledger], sqlite_path: Path, sqlite_url: str, spill_dir: Path, fast_busy: None,
        caplog: pytest.LogCaptureFixture) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user takes root")
    spill_unreachable(open_ledger, sqlite_url, sqlite_path, spill_dir, make_records(4))
    [ready] = files(spill_dir)
    os.chown(spill_dir / ready, 65534, 65534)
    with caplog.at_level(logging.ERROR, logger=LOG):
        assert replay(open_ledger, sqlite_url, spill_dir).count() == 0
    assert f"{ready} not replayed: owned by uid 65534" in caplog.text


def _as_another_user(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run `work` in a forked child that cannot reach the folders made 000 (as root: the child becomes nobody, for
    whom a root-owned 0700 folder raises PermissionError as it does for any user); its result as JSON."""
    read, write = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns of forking a process with threads: the child starts its own
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report and leave without running the parent's cleanup
        os.close(read)
        code = 1
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            result: dict[str, Any] = work()
            code = 0
        except BaseException as exc:  # noqa: BLE001 (reported to the parent, which fails the test with it)
            result = {"error": repr(exc)}
        with os.fdopen(write, "w") as out:
            json.dump(result, out)
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as got:
        result = json.load(got)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, result
    return dict(result)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def visible() -> Iterator[Path]:
    """A temporary folder the child can reach (pytest's tmp_path is 0700: nobody's child could not)."""
    folder = Path(tempfile.mkdtemp(prefix="switchman-spill-test-"))
    folder.chmod(0o755)
    yield folder
    for inner in folder.iterdir():
        inner.chmod(0o700)
    shutil.rmtree(folder)


def _made(parent: Path, name: str, mode: int) -> Path:
    folder = parent / name
    folder.mkdir()
    folder.chmod(mode)
    return folder


@pytest.fixture
def blocked(visible: Path) -> Path:
    """A folder no one but root may enter (mode 000): a spill dir under it raises PermissionError (os.stat,
    mkdir, open)."""
    return _made(visible, "blocked", 0o000)


@pytest.fixture
def open_to_all(visible: Path) -> Path:
    """A folder the child may write its SQLite ledger in."""
    return _made(visible, "open", 0o777)


@pytest.fixture
def read_only(visible: Path) -> Path:
    """A folder the child cannot create its SQLite ledger in: the database is unreachable for it."""
    return _made(visible, "read-only", 0o555)


def test_an_unsearchable_spill_dir_at_start_leaves_the_writer_writing(blocked: Path, open_to_all: Path) -> None:
    def work() -> dict[str, Any]:
        lines = _Lines()
        logging.getLogger(LOG).addHandler(lines)
        with pytest.raises(PermissionError):
            (blocked / "spill").exists()  # the child really is shut out
        ledger = Ledger(f"sqlite:///{open_to_all / 'l.sqlite3'}", spill_dir=blocked / "spill")
        ledger.start_sync()
        for rec in make_records(7):
            ledger.record(rec)
        flushed = ledger.flush_sync(30)
        alive = ledger._thread is not None and ledger._thread.is_alive()
        ledger.record(LedgerRecord(request_id="later"))  # the writer still takes rows
        ledger.close_sync(30)
        return {"flushed": flushed, "alive": alive, "written": ledger.stats.written, "lines": lines.lines}

    got = _as_another_user(work)
    assert got["flushed"] and got["alive"] and got["written"] == 8
    [line] = got["lines"]
    assert "spill directory" in line and "unusable (Permission denied)" in line and "not replayed" in line


def test_an_unwritable_spill_dir_at_close_logs_the_rows_lost(blocked: Path, read_only: Path) -> None:
    def work() -> dict[str, Any]:
        lines = _Lines()
        logging.getLogger(LOG).addHandler(lines)
        ledger = Ledger(f"sqlite:///{read_only / 'l.sqlite3'}", spill_dir=blocked / "spill",
                        close_timeout=0.3, max_retry_interval=0.05)
        ledger.start_sync()
        for rec in make_records(5):
            ledger.record(rec)
        ledger.close_sync()
        return {"lines": lines.lines, "spilled": ledger.stats.spilled}

    got = _as_another_user(work)
    assert got["spilled"] == 0
    assert any("unusable (Permission denied): 5 rows not written" in line for line in got["lines"]), got["lines"]
    assert files(read_only) == []


def test_a_spill_dir_is_not_touched_before_it_is_needed(tmp_path: Path) -> None:
    folder = tmp_path / "never"
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}", spill_dir=folder)
    ledger.record(LedgerRecord())
    ledger.close_sync()  # written: nothing spilled, and a ledger never started replays nothing
    assert not folder.exists()
    assert SpillDir(folder, ledger.url).claim() is None  # a missing directory: nothing to replay


# -- settings ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan"), "10"])
def test_the_close_timeout_must_be_a_finite_number_of_seconds(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ValueError, match="close timeout must be a finite number of seconds >= 0"):
        Ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}", close_timeout=bad)
