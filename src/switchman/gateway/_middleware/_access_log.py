"""One log line per request: method, path, status, model, milliseconds, request id.

    INFO:     POST /v1/chat/completions 200 model=gpt-4o-mini 412ms id=9f1c0e...

Written to the `switchman.access` logger when the response has been sent in full (a stream's time
is the whole stream). Off unless that logger is enabled for INFO (`switchman serve` enables it;
`--no-access-log` does not). The ledger remains the record; this line is for the person watching
the terminal.

`switchman serve` formats the lines as uvicorn's own (`AccessLineFormatter`, without the copy of
each record uvicorn's formatter makes) and writes them through an `AccessLineHandler`: the lines of one moment go out in
one write, a few milliseconds later, instead of one write system call per request (each releases the
GIL, and the event loop then waits for the ledger writer thread to give it back).
"""

from __future__ import annotations

import asyncio
import io
import logging
import select
import sys
from typing import TextIO

from uvicorn.logging import DefaultFormatter

__all__ = ["ACCESS_LOGGER", "FLUSH_DELAY_S", "AccessLineFormatter", "AccessLineHandler", "access_logger",
           "hold_access_lines", "log_access"]

#: Seconds an access line may wait to be written with the lines that follow it.
FLUSH_DELAY_S = 0.02
#: The most bytes one write of held lines carries: what a pipe writes without splicing in another writer's.
_ATOMIC = getattr(select, "PIPE_BUF", 512)

#: The logger access lines go to.
ACCESS_LOGGER = "switchman.access"
access_logger = logging.getLogger(ACCESS_LOGGER)


def log_access(method: str, path: str, status: int, model: str, elapsed_ms: float, request_id: str) -> None:
    """Write one access line.

    As `serve` configures the access logger (one `AccessLineHandler` with its `AccessLineFormatter`,
    no filters, not propagated) the line goes straight into the handler (`_sole_handler`), the line
    logging would write, without a LogRecord. Otherwise what `access_logger.info(...)` does, with the
    caller's place (this function's frame) taken at once rather than by `Logger.findCaller`'s walk up
    the stack: the same record, so the same line.
    """
    logger = access_logger
    if not logger.isEnabledFor(logging.INFO):
        return
    args = (method, _printable(path), status, model, elapsed_ms, request_id)
    handler = _sole_handler(logger)
    if handler is not None:
        handler.write_line(_LINE, args)
        return
    if getattr(logging, "_srcfile", None):  # (logging's switch for finding callers, as Logger._log reads it)
        frame = sys._getframe()
        code = frame.f_code
        record = logger.makeRecord(logger.name, logging.INFO, code.co_filename, frame.f_lineno, _LINE, args, None,
                                   code.co_name)
    else:
        record = logger.makeRecord(logger.name, logging.INFO, "(unknown file)", 0, _LINE, args, None,
                                   "(unknown function)")
    logger.handle(record)


def _sole_handler(logger: logging.Logger) -> AccessLineHandler | None:
    """The logger's one handler when an INFO record would reach it alone and unfiltered, and the line it would
    write is its formatter's `levelprefix` and the message (`AccessLineFormatter.plain`); else None."""
    handlers = logger.handlers
    if len(handlers) != 1 or logger.propagate or logger.disabled or logger.filters:
        return None
    handler = handlers[0]
    if type(handler) is not AccessLineHandler or handler.filters or handler.level > logging.INFO:
        return None
    formatter = handler.formatter
    if not isinstance(formatter, AccessLineFormatter) or not formatter.plain():
        return None
    if logging.getLogRecordFactory() is not logging.LogRecord:  # a factory of its own may change the line
        return None
    return handler


_LINE = "%s %s %d model=%s %.0fms id=%s"


def _printable(path: str) -> str:
    """The path as one bounded line (a client's %0A must not forge a second log line)."""
    if not path.isprintable():
        path = path.encode("unicode_escape").decode("ascii")
    return path if len(path) <= 200 else path[:200] + "..."


class AccessLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the lines emitted in an event loop together, `FLUSH_DELAY_S` later.

    Lines are formatted and held by logging's own `StreamHandler.emit` (into an in-memory buffer);
    its flush after each line only schedules the write to `stream`. Outside a running event loop
    (another thread, a plain script, logging's shutdown) or once `holding` is off (the server is
    stopping: see `hold_access_lines`) the held lines are written at once.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(io.StringIO())
        self.target: TextIO = stream if stream is not None else sys.stderr
        self.holding = True
        self._flush_on: asyncio.AbstractEventLoop | None = None  # the loop a write is due on

    def flush(self) -> None:
        """Write the held lines now, or a moment later when called in a running event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or not self.holding:
            self.write_held()
            return
        if self._flush_on is not loop:  # (a loop that closed before its write ran is replaced)
            self._flush_on = loop
            loop.call_later(FLUSH_DELAY_S, self.write_held)

    def write_line(self, message: str, args: tuple[object, ...]) -> None:
        """What `handle` does with an INFO record of `message % args` (for `log_access`: see `_sole_handler`)."""
        formatter = self.formatter
        assert isinstance(formatter, AccessLineFormatter)
        with self.lock:  # type: ignore[union-attr]
            try:
                self.stream.write(formatter.level_prefix(logging.INFO) + " " + message % args + self.terminator)
                self.flush()
            except RecursionError:  # as StreamHandler.emit
                raise
            except Exception:  # noqa: BLE001 (reported as StreamHandler.emit reports it)
                self.handleError(logging.LogRecord(ACCESS_LOGGER, logging.INFO, "(unknown file)", 0, message, args,
                                                   None))

    def write_held(self) -> None:
        """Write the held lines to the stream, in writes of whole lines a pipe keeps whole (`_pieces`)."""
        with self.lock:  # type: ignore[union-attr]
            self._flush_on = None
            held = self.stream.getvalue()
            if not held:
                return
            self.stream.seek(0)
            self.stream.truncate()
            try:
                for piece in _pieces(held):
                    try:
                        self.target.write(piece)
                    except UnicodeEncodeError:  # (an ascii stdout) one client's path must not take the others with it
                        encoding = getattr(self.target, "encoding", None) or "ascii"
                        self.target.write(piece.encode(encoding, "backslashreplace").decode(encoding))
                    self.target.flush()
            except (OSError, ValueError):  # a closed or broken stream: the lines are lost, serving goes on
                pass


def _pieces(held: str) -> list[str]:
    """`held` cut at line ends into pieces of at most `_ATOMIC` bytes (a longer line alone).

    Workers of `serve --workers N` share one stdout: a pipe keeps a write of up to PIPE_BUF bytes
    whole, but may splice a longer one with another worker's when its reader lags, cutting lines.
    """
    if len(held) <= _ATOMIC // 4 or (len(held) <= _ATOMIC and held.isascii()):
        return [held]
    pieces: list[str] = []
    if held.isascii():  # characters are bytes: cut at the last line end within each _ATOMIC
        start, size = 0, len(held)
        while size - start > _ATOMIC:
            end = held.rfind("\n", start, start + _ATOMIC) + 1
            if end <= start:  # a line longer than _ATOMIC: alone
                end = held.find("\n", start + _ATOMIC) + 1 or size
            pieces.append(held[start:end])
            start = end
        if start < size:
            pieces.append(held[start:])
        return pieces
    piece: list[str] = []
    size = 0
    for line in held.splitlines(keepends=True):
        length = len(line) if line.isascii() else len(line.encode())
        if piece and size + length > _ATOMIC:
            pieces.append("".join(piece))
            piece, size = [], 0
        piece.append(line)
        size += length
    if piece:
        pieces.append("".join(piece))
    return pieces


class AccessLineFormatter(DefaultFormatter):
    """uvicorn's default format ("INFO:     <line>", the level coloured on a terminal), without copying each record.

    uvicorn's formatter copies every record to add its `levelprefix` (a third of an access line's
    cost); an access record is this logger's own, so the prefix is set on it directly.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        if "color_message" in record.__dict__:  # not an access line: uvicorn's own way
            return super().formatMessage(record)
        record.__dict__["levelprefix"] = self.level_prefix(record.levelno, record.levelname)
        return self._style.format(record)

    def level_prefix(self, level: int, name: str | None = None) -> str:
        """`levelprefix`: the level's name (coloured on a terminal), a colon, padding to 9 characters."""
        levelname = logging.getLevelName(level) if name is None else name
        separator = " " * (8 - len(levelname))
        if self.use_colors:
            levelname = self.color_level_name(levelname, level)
        return levelname + ":" + separator

    def plain(self) -> bool:
        """Whether this formatter makes an access line `levelprefix`, a space, then the message: nothing else
        (no time, no other field, no defaults), so `AccessLineHandler.write_line` may build it."""
        style = self._style
        return (type(style) is logging.PercentStyle and style._fmt == _PLAIN
                and not getattr(style, "_defaults", None))


#: The access lines' format as `serve` configures it (see `AccessLineFormatter.plain`).
_PLAIN = "%(levelprefix)s %(message)s"


def hold_access_lines(hold: bool) -> None:
    """Whether the access logger's `AccessLineHandler`s hold lines for a moment; turning it off writes what they hold.

    Off while the server stops: once its shutdown is done uvicorn re-raises the SIGTERM it caught,
    which ends the process at once, before a delayed write and without logging's flush at exit, so
    the lines of the last requests (those cut at the end of the grace period) would be lost.
    """
    for handler in access_logger.handlers:
        if isinstance(handler, AccessLineHandler):
            handler.holding = hold
            if not hold:
                handler.write_held()
