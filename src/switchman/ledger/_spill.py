"""Rows the ledger could not write before shutdown, kept in local files until a later start writes them.

    spill = SpillDir(resolve_spill_dir(None), ledger_url)
    spill.write([row, ...])        # at close, the database away: one fsynced JSONL file
    claim = spill.claim()          # at the next start: the oldest file, renamed so no one else takes it
    claim.records, claim.finish()  # insert them (idempotently), then delete the file

A file's life, each step an atomic rename inside the directory:

    spill-<db>-<ns>-<token>.jsonl.writing-<pid>     being written (renamed once written and fsynced)
    spill-<db>-<ns>-<token>.jsonl                   ready to replay
    spill-<db>-<ns>-<token>.jsonl.replaying-<pid>   claimed by the process replaying it; deleted when done,
                                                    renamed back when the replay stops early (a close)

`<db>` names the ledger (a hash of its URL, password left out): a ledger replays only its own database's
rows, so gateways of several databases can share the default directory.

A `.writing-` or `.replaying-` file whose process no longer runs is claimed at the next start (a crash). A
claim is a rename, not a lock: nothing is held while the rows go to the database, so a close is never
kept waiting by a replay.

The directory is this user's alone: created 0700, and refused (OSError, logged by the ledger) when it is
a symlink, owned by another user or writable by group or others; every file is opened relative to the
directory's descriptor with O_NOFOLLOW, created with O_EXCL and mode 0600, and a file that is not a regular
file of this user is left alone (logged). Rows hold what the database row holds (a prompt only with
`server.store_prompts`; errors scrubbed of provider keys; a virtual key's id, never a key).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .._environ import Environment
from ._db import display_url
from ._record import LedgerRecord
from ._rows import FIELDS, as_logged, decode

__all__ = ["Claim", "SpillDir", "UnsafeSpillDir", "default_spill_dir", "record_of", "resolve_spill_dir", "spilled"]

logger = logging.getLogger("switchman.ledger")

_JSON_FIELDS = ("candidates", "fallback_chain", "tags", "scores", "excluded")
_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(LedgerRecord) if f.default is not MISSING}
_NAME = re.compile(r"(spill-([0-9a-f]{16})-\d+-[0-9a-f]+\.jsonl)(?:\.(writing|replaying)-(\d+))?")
_SUPPORTED = os.open in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY")


class UnsafeSpillDir(OSError):
    """The spill directory (or a file in it) is not this user's alone: not used."""


def default_spill_dir(environ: Mapping[str, str]) -> Path:
    """The per-user spill directory: $XDG_STATE_HOME/switchman/ledger-spill (~/.local/state/switchman/...)."""
    return Environment(environ).state_home / "switchman" / "ledger-spill"


def resolve_spill_dir(spill_dir: str | Path | None, *, environ: Mapping[str, str] | None = None) -> Path:
    """`spill_dir` (a leading ~ expanded), else the per-user default. Nothing is created or checked here."""
    if spill_dir:
        return Path(spill_dir).expanduser()
    return default_spill_dir(Environment.read() if environ is None else Environment(environ))


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
class Claim:
    """A spill file this process renamed to its own: its rows, and how to finish or give it back."""

    spill: SpillDir
    name: str  # the ready name (spill-...jsonl)
    records: list[LedgerRecord]
    skipped: int  # lines that were no row (a truncated last line after a crash)
    position: int = 0  # rows replayed so far (the writer's progress)
    present: int = 0  # rows found in the database already (not inserted again)
    claimed: str = field(init=False)

    def __post_init__(self) -> None:
        self.claimed = f"{self.name}.replaying-{os.getpid()}"

    def finish(self) -> None:
        """Delete the file: every row of it is in the database."""
        with self.spill.opened() as fd:
            os.unlink(self.claimed, dir_fd=fd)
            os.fsync(fd)

    def release(self) -> None:
        """Give the file back (the replay stopped early): the next start takes it again."""
        with self.spill.opened() as fd:
            os.rename(self.claimed, self.name, src_dir_fd=fd, dst_dir_fd=fd)


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
        self.tag = hashlib.sha256(display_url(ledger_url).encode()).hexdigest()[:16]
        self._refused: set[str] = set()  # files already logged as unsafe, not logged again

    def __repr__(self) -> str:
        return f"SpillDir({str(self.path)!r})"

    def opened(self, *, create: bool = False) -> _DirFd:
        """The directory's descriptor, checked to be this user's alone (with `create`: made 0700 if missing)."""
        if not _SUPPORTED:
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

    def write(self, rows: Iterable[Mapping[str, Any]]) -> Path:
        """Write `rows` (`spilled` objects) to a new file, fsynced, and make it ready; its path."""
        stem = f"spill-{self.tag}-{time.time_ns()}-{secrets.token_hex(4)}.jsonl"
        partial = f"{stem}.writing-{os.getpid()}"
        data = b"".join(json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in rows)
        with self.opened(create=True) as dirfd:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(partial, flags, 0o600, dir_fd=dirfd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(partial, stem, src_dir_fd=dirfd, dst_dir_fd=dirfd)
            os.fsync(dirfd)
        return self.path / stem

    def claim(self) -> Claim | None:
        """The oldest file no live process holds, renamed to this process's and read; None when there is none
        (or no directory). Unsafe files are logged once and left where they are."""
        try:
            handle = self.opened()
        except FileNotFoundError:
            return None
        with handle as dirfd:
            for name in sorted(os.listdir(dirfd)):
                match = _NAME.fullmatch(name)
                if match is None or name in self._refused:
                    continue
                ready, tag, state, pid = match.groups()
                if tag != self.tag or (state is not None and _alive(int(pid))):
                    continue
                claim = self._take(dirfd, name, ready)
                if claim is not None:
                    return claim
        return None

    def _take(self, dirfd: int, name: str, ready: str) -> Claim | None:
        try:
            _check_owned(os.stat(name, dir_fd=dirfd, follow_symlinks=False), name, directory=False)
        except UnsafeSpillDir as exc:
            self._refuse(name, exc)
            return None
        except FileNotFoundError:  # another process claimed it first
            return None
        claimed = f"{ready}.replaying-{os.getpid()}"
        try:
            os.rename(name, claimed, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        except FileNotFoundError:
            return None
        try:
            fd = os.open(claimed, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        except OSError as exc:  # swapped for a symlink between the check and the rename: ELOOP
            self._refuse(claimed, exc)
            return None
        with os.fdopen(fd, "rb") as file:
            try:
                _check_owned(os.fstat(file.fileno()), claimed, directory=False)
            except UnsafeSpillDir as exc:
                self._refuse(claimed, exc)
                return None
            records, skipped = _parse(file.read(), claimed)
        return Claim(self, ready, records, skipped)

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


def _parse(data: bytes, name: str) -> tuple[list[LedgerRecord], int]:
    """The rows of a file; a line that is no row (truncated by a crash, garbled) is logged and skipped."""
    records: list[LedgerRecord] = []
    skipped = 0
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(record_of(json.loads(line)))
        except (ValueError, TypeError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError: ValueErrors
            skipped += 1
            logger.error("ledger spill file %s line %d skipped: not a ledger row (%s)", name, number,
                         type(exc).__name__)
    return records, skipped


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (this one counts: another ledger of it may be writing or replaying the file)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        return True
    return True
