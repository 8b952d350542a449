"""Rows the ledger could not write before shutdown, kept in local files until a later start writes them.

    spill = SpillDir(resolve_spill_dir(None), ledger_url)
    written = spill.write(rows)     # at close, the database away: one fsynced JSONL file, held (flock)
    written.release()               # once no writer of this process can still commit those rows
    claim = spill.claim()           # at the next start: the oldest file no one holds, locked and renamed
    claim.read(500), claim.finish() # insert them chunk by chunk (idempotently), then delete the file

A file's life, each step an atomic rename inside the directory:

    spill-<db>-<ns>-<token>.jsonl.creating-<pid>    just created, not yet locked (ignored)
    spill-<db>-<ns>-<token>.jsonl.writing-<pid>     being written, locked (renamed once written and fsynced)
    spill-<db>-<ns>-<token>.jsonl                   ready to replay (locked while its writer may still commit)
    spill-<db>-<ns>-<token>.jsonl.replaying-<pid>   claimed by the process replaying it, locked; deleted when
                                                    done, renamed back when the replay stops early (a close)

`<db>` names the ledger (a hash of its URL spelled one way, password left out; for SQLite of the database
file's resolved path): a ledger replays only its own database's rows, so gateways of several databases can share the
default directory. A start that finds other ledgers' files logs how many and the oldest's age.

Who writes or replays a file holds an exclusive `flock` on it for as long as it does; the kernel drops it when
the process dies, so a `.writing-` or `.replaying-` file nobody holds is a crash's and is claimed at the next
start (process ids are only names: in containers they say nothing). Locks are only ever tried, never waited
for, so a close is never kept waiting by a replay.

The directory is this user's alone: created 0700, and refused (OSError, logged by the ledger) when it is
a symlink, owned by another user or writable by group or others; every file is opened relative to the
directory's descriptor with O_NOFOLLOW, created with O_EXCL and mode 0600, and a file that is not a regular
file of this user is left alone (logged). Rows hold what the database row holds (a prompt only with
`server.store_prompts`; errors scrubbed of provider keys; a virtual key's id, never a key). Lines are ASCII
JSON (`\\ud800` escapes), so any string a caller passed (a lone surrogate too) round-trips exactly.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import secrets
import stat
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy.engine import make_url

from .._environ import Environment
from .._streaks import OnceLog
from ._db import display_url, identity_url
from ._record import LedgerRecord
from ._rows import FIELDS, as_logged, decode

__all__ = ["Claim", "SpillDir", "UnsafeSpillDir", "Written", "default_spill_dir", "ledger_tag", "ledger_tags",
           "record_of", "resolve_spill_dir", "spilled"]

logger = logging.getLogger("switchman.ledger")

_JSON_FIELDS = ("candidates", "fallback_chain", "tags", "scores", "excluded")
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(LedgerRecord) if f.default is not MISSING}
_NAME = re.compile(r"(spill-([0-9a-f]{16})-(\d+)-[0-9a-f]+\.jsonl)(?:\.(writing|replaying)-(\d+))?")
#: Spill files need descriptor-relative, no-follow opens (POSIX); elsewhere the ledger runs without them.
SUPPORTED = os.open in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY")


class UnsafeSpillDir(OSError):
    """The spill directory (or a file in it) is not this user's alone: not used."""


def default_spill_dir(environ: Mapping[str, str]) -> Path:
    """The per-user spill directory: $XDG_STATE_HOME/switchman/ledger-spill (~/.local/state/switchman/...)."""
    return Environment(environ).state_home / "switchman" / "ledger-spill"


def resolve_spill_dir(spill_dir: str | Path | None, *, environ: Mapping[str, str] | None = None) -> Path | None:
    """`spill_dir` (a leading ~ expanded), else the per-user default from `environ`. Nothing is created or
    checked here. None, with a warning, when there is no home to put it in (no $HOME, no passwd entry):
    the ledger then runs without one rather than not at all."""
    try:
        if spill_dir:
            return Path(spill_dir).expanduser()
        return default_spill_dir(Environment.read() if environ is None else environ)
    except (RuntimeError, KeyError) as exc:  # Path.home()/expanduser() with no home to find
        logger.warning("no ledger spill directory (%s): rows a shutdown cannot write are lost; set "
                       "server.ledger_spill_dir or $XDG_STATE_HOME", exc)
        return None


def ledger_tag(url: str) -> str:
    """Which database a spill file's rows belong to: a hash of its URL spelled one way (`identity_url`: no
    password, so a replica restarted with an equivalent URL replays its spill), for SQLite of the database file's
    resolved path (a relative `sqlite:///ledger.sqlite3` names a different file in each directory)."""
    sqlite = _sqlite_file(url)
    return _digest(f"sqlite:{sqlite}" if sqlite is not None else identity_url(url))


def ledger_tags(url: str) -> frozenset[str]:
    """The tags of files a ledger of `url` replays: `ledger_tag`'s, and the one a version that hashed the URL as
    written gave them (its password masked), so a spill left by such a version across an upgrade is not stranded."""
    sqlite = _sqlite_file(url)
    return frozenset({ledger_tag(url), _digest(f"sqlite:{sqlite}" if sqlite is not None else display_url(url))})


def _sqlite_file(url: str) -> Path | None:
    """The database file a SQLite URL names, resolved (symlinks, `..`, the working directory); None for any other
    URL, an in-memory database or a `file:` URI."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 (the engine refuses it first; the tag only needs to be stable)
        return None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().resolve()


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def spilled(row: tuple[Any, ...]) -> dict[str, Any]:
    """An encoded row (`_rows.encode`) as the JSON object a spill line holds: field names, None for a missing
    value, flags true/false, the JSON columns as JSON (not JSON in a string)."""
    values = dict(zip(FIELDS, as_logged(row), strict=True))
    for name in _JSON_FIELDS:
        if isinstance(values[name], str):
            values[name] = json.loads(values[name])
    return values


def record_of(obj: object) -> LedgerRecord:
    """A spill line's object back into the record it was (ValueError/TypeError when it cannot be one).

    A field the line lacks takes its default (a file written by an older version); one it has beyond these is
    ignored. `time` and `request_id` are required: they say which row it is."""
    if not isinstance(obj, dict) or not isinstance(obj.get("request_id"), str):
        raise ValueError("not a ledger row: no request_id")
    moment = obj.get("time")
    if isinstance(moment, bool) or not isinstance(moment, int | float):
        raise ValueError("not a ledger row: no time")
    values = {name: obj.get(name, _DEFAULTS.get(name)) for name in FIELDS}
    return decode(SimpleNamespace(**values))


@dataclass(eq=False)
class Written:
    """A spill file just written, still locked: `release` once no writer of this process can commit its rows
    (before that, a ledger of this same process would replay rows that may yet be committed twice)."""

    path: Path
    rows: int
    refused: int  # rows that could not be serialized (logged)
    _fd: int | None = field(default=None, repr=False)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # the flock with it


@dataclass(eq=False)
class Claim:
    """A spill file this process locked and renamed to its own: read in chunks, then finished or given back.

    `seen` counts, per (request id, time), the rows of this file met so far: a row is skipped only while the
    database holds more rows of its key than that, so twins (in one chunk, across chunks, or after an earlier
    replay stopped half-way) are each written once."""

    spill: SpillDir
    name: str  # the ready name (spill-...jsonl)
    file: io.BufferedReader = field(repr=False)
    skipped: int = 0  # lines that were no row (a truncated last line after a crash)
    line: int = 0  # lines read so far
    chunk: list[LedgerRecord] = field(default_factory=list)  # read, not yet in the database
    seen: Counter[tuple[str, float]] = field(default_factory=Counter)
    present: int = 0  # rows found in the database already (not inserted again)
    inserted: int = 0
    discarded: int = 0  # rows the database refused (logged)
    claimed: str = field(init=False)

    def __post_init__(self) -> None:
        self.claimed = f"{self.name}.replaying-{os.getpid()}"

    def read(self, limit: int) -> list[LedgerRecord]:
        """Up to `limit` more rows ([] at the end); a line that is no row (truncated by a crash, garbled) is
        logged and skipped."""
        records: list[LedgerRecord] = []
        while len(records) < limit:
            line = self.file.readline()
            if not line:
                break
            self.line += 1
            if not line.strip():
                continue
            try:
                records.append(record_of(json.loads(line)))
            except (ValueError, TypeError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError: ValueError
                self.skipped += 1
                logger.error("ledger spill file %s line %d skipped: not a ledger row (%s)", self.claimed, self.line,
                             type(exc).__name__)
        return records

    def finish(self) -> None:
        """Delete the file: every row of it is in the database."""
        try:
            with self.spill.opened() as fd:
                os.unlink(self.claimed, dir_fd=fd)
                os.fsync(fd)
        finally:
            self.file.close()

    def release(self) -> None:
        """Give the file back (the replay stopped early): the next start takes it again."""
        try:
            with self.spill.opened() as fd:
                os.rename(self.claimed, self.name, src_dir_fd=fd, dst_dir_fd=fd)
        finally:
            self.file.close()


class _DirFd:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> int:
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


class SpillDir:
    """The directory of spill files; nothing is touched until a write or a claim (an unusable directory then
    raises OSError, which the ledger logs)."""

    def __init__(self, path: Path, ledger_url: str) -> None:
        self.path = path
        self.tag = ledger_tag(ledger_url)  # what a write names its file
        self.tags = ledger_tags(ledger_url)  # what a claim takes
        self._refused: set[str] = set()  # files already logged as unsafe, not logged again
        self._held = OnceLog()  # files already logged as held by a live process
        self._surveyed = False

    def __repr__(self) -> str:
        return f"SpillDir({str(self.path)!r})"

    def opened(self, *, create: bool = False) -> _DirFd:
        """The directory's descriptor, checked to be this user's alone (with `create`: made 0700 if missing)."""
        if not SUPPORTED:
            raise UnsafeSpillDir(errno.ENOTSUP, "spill files need O_NOFOLLOW and dir_fd (POSIX)", str(self.path))
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.path.mkdir(mode=0o700)
            except FileExistsError:
                pass
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:  # O_NOFOLLOW meeting a symlink: ELOOP, or ENOTDIR with O_DIRECTORY (Linux)
            if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(self.path):
                raise UnsafeSpillDir(exc.errno, "a symlink, not a directory of its own", str(self.path)) from None
            raise
        try:
            _check_owned(os.fstat(fd), str(self.path), directory=True)
        except BaseException:
            os.close(fd)
            raise
        return _DirFd(fd)

    def write(self, rows: Iterable[Mapping[str, Any]]) -> Written:
        """Write `rows` (`spilled` objects) line by line to a new file, fsynced, and make it ready; it stays
        locked until `Written.release`. A row that cannot be serialized is logged and left out."""
        stem = f"spill-{self.tag}-{time.time_ns()}-{secrets.token_hex(4)}.jsonl"
        creating, partial = f"{stem}.creating-{os.getpid()}", f"{stem}.writing-{os.getpid()}"
        count = refused = 0
        with self.opened(create=True) as dirfd:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(creating, flags, 0o600, dir_fd=dirfd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new: no one else can hold it
                os.rename(creating, partial, src_dir_fd=dirfd, dst_dir_fd=dirfd)  # locked before it is claimable
                with open(fd, "wb", closefd=False) as out:
                    for row in rows:
                        try:
                            line = json.dumps(row, ensure_ascii=True).encode("ascii") + b"\n"
                        except Exception as exc:  # noqa: BLE001 (logged) one odd row must not lose the others
                            refused += 1
                            logger.error("ledger row %s not spilled: %s", row.get("request_id", "?"), exc)
                            continue
                        out.write(line)
                        count += 1
                os.fsync(fd)
                os.rename(partial, stem, src_dir_fd=dirfd, dst_dir_fd=dirfd)
                os.fsync(dirfd)
            except BaseException:
                os.close(fd)
                raise
        return Written(self.path / stem, count, refused, fd)

    def claim(self) -> Claim | None:
        """The oldest file of this ledger no live process holds, locked, renamed to this process's; None when
        there is none (or no directory). Unsafe or unreadable files are logged once and left where they are."""
        if not SUPPORTED:
            return None
        try:
            handle = self.opened()
        except FileNotFoundError:
            return None
        with handle as dirfd:
            names = sorted(os.listdir(dirfd))
            if not self._surveyed:
                self._surveyed = True
                self._survey(names)
            for name in names:
                match = _NAME.fullmatch(name)
                if match is None or name in self._refused or match.group(2) not in self.tags:
                    continue
                try:
                    claim = self._take(dirfd, name, match.group(1))
                except Exception as exc:  # noqa: BLE001 (logged) one odd file must not stop the replay of the rest
                    self._refused.add(name)
                    logger.error("ledger spill file %s not replayed: %s: %s", self.path / name, type(exc).__name__,
                                 exc)
                    continue
                if claim is not None:
                    return claim
        return None

    def _survey(self, names: list[str]) -> None:
        """Log other ledgers' files (another database, or the same one by another URL): this ledger never
        replays them, so rows stranded there are seen."""
        others = [match for match in map(_NAME.fullmatch, names)
                  if match is not None and match.group(2) not in self.tags]
        if others:
            oldest = min(int(match.group(3)) for match in others)
            logger.warning("ledger spill directory %s holds %d files of other ledgers (the oldest spilled %.0f s "
                           "ago): only a ledger of their own database replays them", self.path, len(others),
                           max(0.0, time.time() - oldest / 1e9))

    def _take(self, dirfd: int, name: str, ready: str) -> Claim | None:
        try:
            _check_owned(os.stat(name, dir_fd=dirfd, follow_symlinks=False), name, directory=False)
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        except FileNotFoundError:  # another process claimed it first
            return None
        except OSError as exc:  # unsafe, or swapped for a symlink after the check: ELOOP
            self._refuse(name, exc)
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # tried, never waited for
            except BlockingIOError:
                if self._held.first(name):
                    logger.warning("ledger spill file %s skipped: held by a live process (being written or "
                                   "replayed); a later start takes it if it is left", self.path / name)
                return None
            info = os.fstat(fd)
            _check_owned(info, name, directory=False)
            try:  # still the file under that name (not one a claimer finished and deleted meanwhile)?
                now = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            except FileNotFoundError:
                return None
            if (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
                return None
            claim = Claim(self, ready, open(fd, "rb", closefd=True))  # noqa: SIM115 (the claim owns it)
            fd = -1
            try:
                os.rename(name, claim.claimed, src_dir_fd=dirfd, dst_dir_fd=dirfd)
            except BaseException:
                claim.file.close()
                raise
            return claim
        except UnsafeSpillDir as exc:
            self._refuse(name, exc)
            return None
        finally:
            if fd >= 0:
                os.close(fd)

    def _refuse(self, name: str, exc: OSError) -> None:
        self._refused.add(name)
        logger.error("ledger spill file %s not replayed: %s", self.path / name, exc.strerror or exc)


def _check_owned(info: os.stat_result, name: str, *, directory: bool) -> None:
    kind = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISREG(info.st_mode)
    if not kind:
        what = "not a directory (a symlink?)" if directory else "not a regular file (a symlink?)"
        raise UnsafeSpillDir(errno.EPERM, what, name)
    if info.st_uid != os.geteuid():
        raise UnsafeSpillDir(errno.EPERM, f"owned by uid {info.st_uid}, not this user ({os.geteuid()})", name)
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeSpillDir(errno.EPERM, f"writable by group or others (mode {stat.S_IMODE(info.st_mode):o})", name)
