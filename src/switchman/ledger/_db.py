"""Where the ledger lives and what its tables look like.

`resolve_url` is the one place the ledger reads the environment: an explicit URL wins, then
``SWITCHMAN_LEDGER_URL``, then a SQLite file in the user's data directory
(``$XDG_DATA_HOME/switchman/ledger.sqlite3``, else ``~/.local/share/switchman/ledger.sqlite3``).

URLs: ``sqlite:///relative/path``, ``sqlite:////absolute/path`` (WAL mode, busy timeout) and
``postgresql://user@host:port/db`` (driven by psycopg 3; ``postgres://`` is accepted too; a
``?options=-csearch_path%3Dmyschema`` query puts the tables in another schema).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    make_url,
)
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.schema import CreateIndex, CreateTable

from .._environ import LEDGER_URL_ENV, Environment

__all__ = [
    "FEEDBACK",
    "FILTER_COLUMNS",
    "KEYS",
    "SETTINGS",
    "LEDGER_URL_ENV",
    "METADATA",
    "REQUESTS",
    "create_ledger_engine",
    "create_tables",
    "default_sqlite_path",
    "display_url",
    "identity_url",
    "migrate",
    "require_existing",
    "resolve_url",
    "unreadable",
    "up_to_date",
]

SQLITE_BUSY_TIMEOUT_S = 2.0
#: Postgres bounds, so a database that hangs instead of refusing cannot hold a caller for ever:
#: connecting (libpq's connect_timeout covers the whole handshake), one statement (server side),
#: unacknowledged data and dead peers (TCP), and waiting for a pooled connection.
POSTGRES_CONNECT_TIMEOUT_S = 5
POSTGRES_STATEMENT_TIMEOUT_S = 15
POSTGRES_TCP_USER_TIMEOUT_S = 15
POOL_TIMEOUT_S = 5.0
#: Request-log filters with an index ending in the row id: the selective ones. Route and status take
#: few values, so the log's id-range scan finds their rows without one (each index costs the writer ~2 µs a row).
FILTER_COLUMNS = ("agent", "session", "key_id", "model")

METADATA = MetaData()

REQUESTS = Table(
    "switchman_requests",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Float, nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("agent", Text),
    Column("session", Text),
    Column("key_id", String(64)),
    Column("route", Text),
    Column("model", Text),
    Column("reason", Text),
    Column("strategy", Text),
    Column("candidates", JSON),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("tokens_estimated", Boolean, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("baseline_cost_usd", Float),
    Column("latency_ms", Float, nullable=False),
    Column("ttft_ms", Float),
    Column("status", String(32), nullable=False),
    Column("error", Text),
    Column("fallback_chain", JSON),
    Column("tags", JSON),
    Column("prompt", Text),
    Column("shadow_model", Text),
    Column("shadow_quality", Float),
    Column("shadow_cost_usd", Float),
    Column("cluster", Integer),
    Column("api", String(32)),
    Column("deployment", Text),
    Column("cache", String(8)),
    Column("task", Text),
    Column("scores", JSON),
    Column("excluded", JSON),
    Column("escalated", Boolean),
    Index("ix_switchman_requests_time", "time"),
    Index("ix_switchman_requests_request_id", "request_id"),
)
# The dashboard's request log filters on these and shows the newest first: (column, id) serves
# "WHERE agent = ? ORDER BY id DESC LIMIT 50" from the index alone, however rare the value. Partial: a row
# without the value (most gateways' rows have no agent, session or key) costs no index entry, and both SQLite and
# PostgreSQL use such an index for `agent = ?`, which implies `agent IS NOT NULL`. A ledger made before keeps its
# full indexes of the same names (IF NOT EXISTS), which serve the same queries.


def _filter_index(name: str) -> Index:
    present = REQUESTS.c[name].is_not(None)
    return Index(f"ix_switchman_requests_{name}_id", REQUESTS.c[name], REQUESTS.c.id,
                 sqlite_where=present, postgresql_where=present)


for _name in FILTER_COLUMNS:
    _filter_index(_name)  # an Index of a table's columns joins the table
del _name

FEEDBACK = Table(
    "switchman_feedback",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Float, nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("score", Float, nullable=False),
    Column("comment", Text),
    # Copied from the request when the feedback arrives, so per-route quality needs no join.
    Column("route", Text),
    Column("model", Text),
    Column("agent", Text),
    # The key of the request scored: two keys may have chosen the same request id (X-Request-Id).
    Column("key_id", String(64)),  # as wide as the requests' (a 33-64 character id broke every start on Postgres)
    Index("ix_switchman_feedback_request_id", "request_id"),
    Index("ix_switchman_feedback_time", "time"),
)

KEYS = Table(
    "switchman_keys",
    METADATA,
    Column("id", String(32), primary_key=True),
    Column("name", Text, nullable=False),
    Column("lookup", String(16), nullable=False),
    Column("salt", String(64), nullable=False),
    Column("hash", String(128), nullable=False),
    Column("created", Float, nullable=False),
    Column("revoked", Float),
    Column("budget_usd", Float),
    Column("budget_period", String(16)),
    Column("agents", JSON),  # the agents the key may act as (None: any)
    Column("default_agent", Text),  # the agent of a request that names none
    Column("updated", Float),  # last create / change / revoke, for the gateway's incremental key refresh
    Index("ix_switchman_keys_lookup", "lookup"),
)

#: Gateway-wide settings that must outlive a process, e.g. that authentication was switched on.
SETTINGS = Table(
    "switchman_settings",
    METADATA,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("time", Float, nullable=False),
)


def create_tables(engine: Engine) -> None:
    """Create the ledger's tables and indexes where missing, and add the columns a newer version has (`migrate`)."""
    migrate(engine, lambda conn: up_to_date(conn, METADATA), _create_tables)


def _create_tables(conn: Connection) -> None:
    """The ledger's own tables' change (under the lock): IF NOT EXISTS, so what another process made is kept."""
    for table in METADATA.sorted_tables:
        conn.execute(CreateTable(table, if_not_exists=True))
        for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
            conn.execute(CreateIndex(index, if_not_exists=True))
    _add_missing_columns(conn)


def migrate(engine: Engine, done: Callable[[Connection], bool], change: Callable[[Connection], None]) -> None:
    """Run `change` unless `done` already holds: one transaction under the schema lock (`_lock_schema`), so one
    process changes the schema at a time, and tried again after a lost race with a growing pause.

    `done` is read first without the lock: the common start takes no lock and writes nothing (a read-only ledger
    opens too). `change` runs once the lock is held, so a process that held it before may have made it all: it
    must be idempotent (IF NOT EXISTS, or look again). What is tried again: Postgres's lost race on its catalog (a
    duplicate type), which a process without the lock (an older version) can still cause, and SQLite's "database
    is locked" reported without waiting out the busy timeout (a transaction that read the schema and then writes,
    while another connection wrote first); CREATE_ATTEMPTS tries, paused 0.05, 0.1, 0.2, 0.4 s apart.
    """
    for attempt in range(CREATE_ATTEMPTS):
        try:
            with engine.connect() as conn:
                if done(conn):
                    conn.rollback()
                    return
                _lock_schema(conn)
                change(conn)
                conn.commit()
            return
        except (IntegrityError, ProgrammingError, OperationalError) as exc:
            locked = isinstance(exc, OperationalError) and "database is locked" in str(exc)
            if attempt == CREATE_ATTEMPTS - 1 or (isinstance(exc, OperationalError) and not locked):
                raise
            time.sleep(_RETRY_PAUSE_S * 2**attempt)  # a tight loop would lose to the same holder again


#: Attempts of `migrate` against a lost race (Postgres's catalog, SQLite's lock).
CREATE_ATTEMPTS = 5
#: The pause before `migrate`'s second attempt, doubled before each later one.
_RETRY_PAUSE_S = 0.05

#: The first key of the Postgres advisory lock that serialises `migrate` (the second: the schema's name).
_SCHEMA_LOCK = 0x5357_4D4E


def up_to_date(conn: Connection, metadata: MetaData) -> bool:
    """Every table, column and index of `metadata` is there already (read from the catalog, nothing written)."""
    found = inspect(conn)
    names = set(found.get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in names:
            return False
        if not {c.name for c in table.columns} <= {c["name"] for c in found.get_columns(table.name)}:
            return False
        if not {str(ix.name) for ix in table.indexes} <= {str(ix["name"]) for ix in found.get_indexes(table.name)}:
            return False
    return True


def _lock_schema(conn: Connection) -> None:
    """Make the schema changes one transaction that one process runs at a time.

    Postgres: an advisory lock held to the transaction's end, so replicas starting together on an older ledger do
    not deadlock (each's CREATE INDEX IF NOT EXISTS holding a lock the other's ALTER TABLE waits for). SQLite:
    BEGIN IMMEDIATE, since pysqlite runs DDL outside any transaction of its own, committing an ALTER TABLE at once:
    an interrupted back-fill then left the added column empty for good, and a second process added it again
    ("duplicate column name").
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK}, hashtext(current_schema()))")
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _add_missing_columns(conn: Connection) -> None:
    """Give a ledger made by an older switchman the nullable columns added since (prompt, shadow_*, cluster, api,
    deployment, cache, ...; the keys' agents)."""
    for table in (REQUESTS, FEEDBACK, KEYS):
        present = {c["name"] for c in inspect(conn).get_columns(table.name, schema=table.schema)}
        added = []
        for column in table.columns:
            if column.name not in present and column.nullable and not column.primary_key:
                kind = column.type.compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}")
                added.append(column.name)
        if table is FEEDBACK and added:  # feedback given before: copy its request's names (and key)
            for name in [n for n in ("route", "model", "agent", "key_id") if n in added]:
                conn.exec_driver_sql(
                    f"UPDATE {FEEDBACK.name} SET {name} = (SELECT r.{name} FROM {REQUESTS.name} r "
                    f"WHERE r.request_id = {FEEDBACK.name}.request_id ORDER BY r.id DESC LIMIT 1)"
                )


def default_sqlite_path(environ: Mapping[str, str]) -> Path:
    """The per-user ledger file, following the XDG base-directory convention."""
    return Environment(environ).data_home / "switchman" / "ledger.sqlite3"


def resolve_url(url: str | None, *, environ: Mapping[str, str] | None = None) -> str:
    """The ledger URL to use: `url`, else $SWITCHMAN_LEDGER_URL, else the user's SQLite file."""
    if url:
        return url
    env = Environment.read() if environ is None else Environment(environ)
    return env.ledger_url or f"sqlite:///{default_sqlite_path(env)}"


#: Query parameter names holding this are secrets (`password`, `sslpassword`).
_SECRET_PARAM = "password"


def _driver_url(url: str) -> URL:
    try:
        parsed = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    except (ArgumentError, ValueError):  # not shown: an unparseable URL's password cannot be found to be masked
        raise ValueError("cannot parse the ledger URL: use sqlite:///path or postgresql://user@host/db") from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+pysqlite")
    return parsed


def require_existing(url: str) -> None:
    """Refuse a SQLite ledger file that does not exist, for the commands that only read the ledger: opening one
    creates it, so a mistyped path (or a relative `sqlite:///` path run from another folder) was reported on as
    an empty ledger. Other URLs, and a path whose folder cannot exist, are left to the engine to judge."""
    parsed = _driver_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:") \
            or parsed.username or parsed.host or parsed.port:  # SQLite takes none: the engine refuses the URL
        return
    path = Path(database).expanduser().absolute()
    if not path.exists() and (path.parent.is_dir() or not path.parent.exists()):
        raise ValueError(f"no ledger at {path}: the file does not exist (a gateway creates it when it starts); "
                         "check --ledger or --config (a relative sqlite:/// path is taken from the working folder)")


def display_url(url: str) -> str:
    """The URL with any password masked, for messages and logs: `user:***@`, and without the query
    parameters that carry one (libpq reads `?password=` and `?sslpassword=` too).

    Not `shown_url` (providers' and embedders' URLs): a database's user and its other options (`?sslmode=`) say
    which database and how it was reached, which a connection error needs, and they are no secret."""
    parsed = _driver_url(url)
    hidden = [name for name in parsed.query if _SECRET_PARAM in name.lower()]
    return parsed.difference_update_query(hidden).render_as_string(hide_password=True)


def identity_url(url: str) -> str:
    """Which database `url` names, spelled one way (no password): the backend for the driver (psycopg or psycopg2
    reach the same database), the host lower-cased, the query sorted without its secret parameters. What still
    differs names another database or reaches it another way: database name, user, port, a Unix socket (no host)
    against a host, `?options=` (a search_path is another schema).

    A host that is a Unix socket's directory (`/run/pg`, percent-encoded `%2Frun%2Fpg`) is a path: its case counts.
    No port is filled in: which one libpq uses for a URL without one is not in the URL (PGPORT, 5432 only when
    unset), so `h/db` and `h:5432/db` keep tags of their own — a file left under the other tag is stranded (and
    logged), where one shared tag could replay rows into another database's ledger."""
    parsed = _driver_url(url)
    backend = parsed.get_backend_name()
    hidden = [name for name in parsed.query if _SECRET_PARAM in name.lower()]
    host = parsed.host
    if host and not host.upper().startswith(("/", "%2F")):
        host = host.lower()  # a DNS name or an address: case does not count
    shown = URL.create(backend, username=parsed.username, host=host, port=parsed.port, database=parsed.database,
                       query=parsed.difference_update_query(hidden).query)  # (no password)
    return shown.render_as_string(hide_password=False)  # (the query sorted by name)


def unreadable(url: str, exc: BaseException) -> str:
    """The one line a command shows for a ledger it cannot read (unreachable, not a database, ...): where (password
    masked) and the driver's first line of why."""
    reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"cannot read the ledger at {display_url(url)}: {reason}"


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
    cursor.close()


def _postgres_connect_args(url: URL) -> dict[str, Any]:
    """libpq options that bound every wait on the database (a URL's own `options` are kept)."""
    statement = f"-c statement_timeout={POSTGRES_STATEMENT_TIMEOUT_S * 1000}"
    options = url.query.get("options")
    own = " ".join(options) if isinstance(options, tuple) else options
    return {
        "connect_timeout": POSTGRES_CONNECT_TIMEOUT_S,
        "options": f"{own} {statement}" if own else statement,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": POSTGRES_TCP_USER_TIMEOUT_S * 1000,
    }


def create_ledger_engine(url: str) -> Engine:
    """A SQLAlchemy engine for a ledger URL; creates the SQLite file's folder. Does not connect."""
    try:
        return _create_engine(url)
    except ArgumentError:  # e.g. sqlite://user@/x (SQLite takes no user, host or port)
        raise ValueError(f"invalid ledger URL {display_url(url)!r}: use sqlite:///path or postgresql://...") from None


def _create_engine(url: str) -> Engine:
    parsed = _driver_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if not database or database == ":memory:" or parsed.query.get("mode") == "memory":
            raise ValueError("the ledger needs a SQLite file, not an in-memory database: use sqlite:///path")
        folder = Path(database).expanduser().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission: one line, not a traceback
            raise ValueError(f"cannot create the ledger's folder {folder}: {exc.strerror or exc}") from None
        # LIFO: the writer gets back the connection it used last, whose page cache is still valid; FIFO handed it
        # the other one once a dashboard read had overlapped a write, and SQLite re-read every page it touched.
        engine = create_engine(
            parsed.set(database=str(Path(database).expanduser())),
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S},
            pool_use_lifo=True,
        )
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    if backend == "postgresql":
        return create_engine(parsed, pool_pre_ping=True, pool_timeout=POOL_TIMEOUT_S,
                             connect_args=_postgres_connect_args(parsed))
    raise ValueError(f"unsupported ledger URL {display_url(url)!r}: use sqlite:///path or postgresql://...")
