"""Which database a spill file belongs to: one tag for every spelling of the same database's URL (so a replica
restarted with an equivalent URL replays its spill), different tags for different databases."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from ledger_support import TcpProxy, files, make_records, replay, spill_through_stopped_proxy, spill_unreachable
from sqlalchemy.engine import Engine

from switchman.ledger import Ledger
from switchman.ledger._db import display_url, identity_url
from switchman.ledger._spill import SpillDir, ledger_tag

BASE = "postgresql+psycopg://app@db.example:5432/ledger?application_name=sw&sslmode=require"


@pytest.mark.parametrize("same", [
    "postgresql://app@db.example:5432/ledger?application_name=sw&sslmode=require",  # the default driver
    "postgres://app@db.example:5432/ledger?application_name=sw&sslmode=require",  # libpq's short scheme
    "postgresql+psycopg2://app@db.example:5432/ledger?application_name=sw&sslmode=require",  # another driver
    "postgresql+psycopg://app@DB.Example:5432/ledger?application_name=sw&sslmode=require",  # host case
    "postgresql+psycopg://app:s3cret@db.example:5432/ledger?application_name=sw&sslmode=require",  # a password
    "postgresql+psycopg://app@db.example:5432/ledger?sslmode=require&application_name=sw",  # query order
    "postgresql+psycopg://app@db.example:5432/ledger?application_name=sw&sslmode=require&password=x",  # ?password=
])
def test_spellings_of_one_postgres_database_share_a_tag(same: str) -> None:
    assert ledger_tag(same) == ledger_tag(BASE)


@pytest.mark.parametrize("other", [
    "postgresql+psycopg://app@db.example:5432/ledger2?application_name=sw&sslmode=require",  # database
    "postgresql+psycopg://app@db2.example:5432/ledger?application_name=sw&sslmode=require",  # host
    "postgresql+psycopg://app@db.example:5433/ledger?application_name=sw&sslmode=require",  # port
    "postgresql+psycopg://ops@db.example:5432/ledger?application_name=sw&sslmode=require",  # user
    "postgresql+psycopg://APP@db.example:5432/ledger?application_name=sw&sslmode=require",  # user (case counts)
    "postgresql+psycopg://app@/ledger?application_name=sw&sslmode=require",  # a Unix socket, not that host
    "postgresql+psycopg://app@db.example/ledger?application_name=sw&sslmode=require",  # no port: PGPORT's
    "postgresql+psycopg://app@db.example:5432/Ledger?application_name=sw&sslmode=require",  # database case
    "postgresql+psycopg://app@db.example:5432/ledger?options=-csearch_path%3Dother&sslmode=require",  # options
    "mysql://app@db.example:5432/ledger?application_name=sw&sslmode=require",  # another kind of database
])
def test_different_databases_keep_different_tags(other: str) -> None:
    assert ledger_tag(other) != ledger_tag(BASE)


def test_a_socket_directory_as_the_host_keeps_its_case() -> None:
    """A host that is a Unix socket's directory is a path: its case counts."""
    assert ledger_tag("postgresql://app@%2Frun%2FPG/ledger") != ledger_tag("postgresql://app@%2Frun%2Fpg/ledger")
    assert identity_url("postgresql://app@%2Frun%2FPG/ledger") == "postgresql://app@%2Frun%2FPG/ledger"


def test_a_url_without_a_host_gets_no_port() -> None:
    """Which port libpq uses for a socket the URL does not name is not in the URL (PGPORT)."""
    assert identity_url("postgresql://app@/ledger?host=/run/pg") == "postgresql://app@/ledger?host=%2Frun%2Fpg"


def test_a_url_without_a_port_gets_none_filled_in() -> None:
    """libpq takes a port the URL leaves out from PGPORT (5432 only when unset): with PGPORT=6433,
    `postgresql://h/db` is another database than `postgresql://h:5432/db`, and a tag they shared would replay one's
    rows into the other's ledger (a file left under another tag is only stranded, and logged). Before, 5432 was
    filled in for any URL with a host."""
    assert identity_url("postgresql://app@db.example/ledger") == "postgresql://app@db.example/ledger"
    assert ledger_tag("postgresql://app@db.example/ledger") != ledger_tag("postgresql://app@db.example:5432/ledger")


def test_spellings_of_one_sqlite_file_share_a_tag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "data"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    monkeypatch.chdir(tmp_path)
    tag = ledger_tag(f"sqlite:///{real / 'ledger.sqlite3'}")
    for same in ("sqlite:///data/ledger.sqlite3", "sqlite:///link/ledger.sqlite3", "sqlite:///./data/../data/"
                 "ledger.sqlite3", f"sqlite+pysqlite:///{tmp_path / 'link' / 'ledger.sqlite3'}"):
        assert ledger_tag(same) == tag, same
    assert ledger_tag("sqlite:///data/other.sqlite3") != tag


def test_a_spill_is_replayed_by_an_equivalent_postgres_url(
        open_ledger: Callable[..., Ledger], pg_proxy: TcpProxy, pg_admin: tuple[Engine, str], pg_schema: str,
        spill_dir: Path) -> None:
    """The replica spilled under one spelling of its URL and restarts with another (driver, password, query order):
    its rows are replayed, not stranded."""
    user = pg_admin[1]
    spelled = f"postgresql+psycopg://{user}@127.0.0.1:{pg_proxy.port}/test?connect_timeout=5&" \
              f"options=-csearch_path%3D{pg_schema}"
    respelled = f"postgresql://{user}:unused@127.0.0.1:{pg_proxy.port}/test?options=-csearch_path%3D{pg_schema}" \
                "&connect_timeout=5"
    records = make_records(7)
    ledger = spill_through_stopped_proxy(open_ledger, spelled, pg_proxy, spill_dir, records)
    assert ledger.stats.spilled == 7 and len(files(spill_dir)) == 1
    pg_proxy.start()
    after = replay(open_ledger, respelled, spill_dir)
    assert files(spill_dir) == [] and after.records() == records and after.stats.replayed == 7


def test_a_sqlite_spill_is_replayed_through_a_symlinked_path(
        open_ledger: Callable[..., Ledger], tmp_path: Path, spill_dir: Path, fast_busy: None) -> None:
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    spill_unreachable(open_ledger, f"sqlite:///{real / 'l.sqlite3'}", real / "l.sqlite3", spill_dir,
                      make_records(3))
    assert replay(open_ledger, f"sqlite:///{tmp_path / 'link' / 'l.sqlite3'}", spill_dir).count() == 3


def test_a_file_named_the_way_an_earlier_version_named_it_is_still_claimed(spill_dir: Path) -> None:
    """Spilled by a version that hashed the URL as written (password masked), replayed after the upgrade."""
    url = "postgresql://app:s3cret@DB.example/ledger"
    spill = SpillDir(spill_dir, url)
    written = spill.write([{"request_id": "r1", "time": 1.0}])
    written.release()
    legacy = hashlib.sha256(display_url(url).encode()).hexdigest()[:16]
    assert legacy != spill.tag
    written.path.rename(spill_dir / written.path.name.replace(spill.tag, legacy))
    assert SpillDir(spill_dir, "postgresql://app@db.example:5433/ledger").claim() is None  # another database's
    claim = SpillDir(spill_dir, url).claim()
    assert claim is not None and [rec.request_id for rec in claim.read(10)] == ["r1"]
    claim.finish()
