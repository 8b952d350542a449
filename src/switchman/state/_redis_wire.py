"""How the Redis link talks to a single Redis: its own read of a connection redis-py opened.

A round trip (`Trip`) writes its batch of commands on a `Pipe` (an asyncio protocol that takes over the
transport of a connection redis-py opened and handshook), feeds what it reads to hiredis's reader and hands each
reply to its caller's future as soon as it is whole; one event-loop timer bounds the whole. `RedisLink`
(`_redis_link.py`) decides when a round trip goes, what a failure means for the link, and everything else.
The redis-py internals this leans on are listed by `missing_internals` and checked when a link is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from .._exceptions import ConfigError
from ._redis_client import failures

if TYPE_CHECKING:
    from ._redis_link import RedisLink

__all__ = ["Pipe", "Queued", "RedisRefused", "RedisUnavailable", "Trip", "check_internals", "missing_internals",
           "no_maint_notifications", "pack", "reason"]

#: A call waiting for its turn's round trip: the command, the script source of an EVALSHA, the caller's future.
Queued = tuple[tuple[Any, ...], str | None, "asyncio.Future[Any]"]


class RedisUnavailable(Exception):  # noqa: N818  (a state, not a bug: callers fall back to local state)
    """Redis did not answer in time, failed, or the link is down: use this process's own state."""


class RedisRefused(RedisUnavailable):
    """Redis answered the call with an error reply: it ran (a script up to its error), unlike a timeout's unknown."""


def no_maint_notifications(cluster: bool) -> dict[str, Any]:
    """redis-py's maintenance notifications turned off (the client's connections and the link's, built from its
    pool's options): a managed Redis would otherwise be asked (CLIENT MAINT_NOTIFICATIONS) to push them on every
    connection. The link's reader drops pushes anyway; this saves the handshake's command and the pushed bytes. Nothing
    with a redis-py that has no such setting."""
    import inspect

    try:
        from redis.maint_notifications import MaintNotificationsConfig
    except ImportError:
        return {}
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    client: type[Any] = RedisCluster if cluster else Redis
    if "maint_notifications_config" not in inspect.signature(client.__init__).parameters:
        return {}
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


def missing_internals() -> list[str]:
    """The redis-py (asyncio, hiredis) internals `Pipe` and the link use that this install lacks: none, unless an
    upgrade removed or renamed one (pyproject's `redis` bound keeps to the versions that have them all)."""
    import asyncio as aio

    import hiredis
    import redis.asyncio
    from redis.asyncio.cluster import RedisCluster

    missing: list[str] = []
    try:
        from redis._parsers.base import BaseParser  # noqa: PLC2701
    except ImportError:
        missing.append("redis._parsers.base.BaseParser")
    else:
        if not callable(getattr(BaseParser, "parse_error", None)):
            missing.append("redis._parsers.base.BaseParser.parse_error")
    connection = redis.asyncio.Connection()  # not connected: no socket, no loop
    missing += [f"redis.asyncio.Connection.{name}" for name in ("_reader", "_writer", "encoder", "connect",
                                                                "pack_commands") if not hasattr(connection, name)]
    encoder = getattr(connection, "encoder", None)
    missing += [f"redis encoder.{name}" for name in ("decode_responses", "encoding", "encoding_errors")
                if not hasattr(encoder, name)]
    pool = redis.asyncio.ConnectionPool()
    missing += [f"redis.asyncio.ConnectionPool.{name}" for name in ("connection_class", "connection_kwargs")
                if not hasattr(pool, name)]
    missing += [f"redis.asyncio.cluster.RedisCluster.{name}" for name in (
        "PRIMARIES", "initialize", "get_primaries", "get_node_from_key", "mget_nonatomic", "register_script")
        if not hasattr(RedisCluster, name)]
    if "_buffer" not in aio.StreamReader.__init__.__code__.co_names:  # what redis-py's handshake left unread
        missing.append("asyncio.StreamReader._buffer")
    try:
        hiredis.Reader(protocolError=Exception, replyError=Exception, notEnoughData=_MORE, encoding="utf-8",
                       errors="strict")
    except TypeError:
        missing.append("hiredis.Reader(notEnoughData=...)")
    return missing


def check_internals() -> None:
    """A ConfigError at startup (never a failed request) naming redis-py's version when it lacks what the link uses."""
    missing = missing_internals()
    if missing:
        import redis

        raise ConfigError(f"server.redis_url: redis-py {redis.__version__} (hiredis {_hiredis_version()}) lacks what "
                          f"switchman's Redis link uses: {', '.join(missing)}; install the versions switchman supports:"
                          " pip install 'switchman[redis]'")


def _hiredis_version() -> str:
    import hiredis

    return str(getattr(hiredis, "__version__", "?"))


class Trip:
    """One round trip of the batches: the write, each reply handed to its caller as soon as it is read (an error
    reply is that command's RedisUnavailable), an EVALSHA Redis does not know (NOSCRIPT: Redis restarted, or a first
    use) loaded and sent again, one timer over the whole. On a failure the calls not yet answered fail and the
    connection is closed (replies may be left unread)."""

    def __init__(self, link: RedisLink, batch: list[Queued]) -> None:
        self.link = link
        self.batch = batch
        self.pipe: Pipe | None = None
        self.over = False
        self._unknown: list[int] = []  # EVALSHAs of scripts Redis does not know
        self._sources: list[str | None] = []
        self._refused: dict[str | None, Any] = {}  # a script Redis would not load (NOPERM...): its calls fail
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + link.timeout_s, self._timed_out)

    def send(self, pipe: Pipe) -> None:
        self.pipe = pipe
        try:
            pipe.exchange(pack(pipe.connection, [args for args, _, _ in self.batch]), len(self.batch), self._reply,
                          self._all_read)
        except Exception as exc:  # noqa: BLE001  (a bug: its callers see it, the loop does not)
            self.fail(exc)

    def _reply(self, index: int, reply: Any) -> None:
        if isinstance(reply, Exception):  # an error reply (hiredis gives redis-py's exception for it)
            if isinstance(reply, _errors().no_script) and self.batch[index][1] is not None:
                self._unknown.append(index)
            else:
                self._deliver(index, reply)
            return
        future = self.batch[index][2]  # the common case first: a reply for a caller still waiting
        if not future.done():
            future.set_result(reply)

    def _all_read(self, failure: BaseException | None) -> None:
        if failure is not None:
            self.fail(failure)
        elif not self._unknown:
            self._done()
        else:  # each script loaded once, then the calls sent again: one more write, one more read
            assert self.pipe is not None
            self._sources = list(dict.fromkeys(self.batch[index][1] for index in self._unknown))
            again = [("SCRIPT", "LOAD", source) for source in self._sources]
            again += [self.batch[index][0] for index in self._unknown]
            try:
                self.pipe.exchange(pack(self.pipe.connection, again), len(again), self._reply_after_load,
                                   self._all_read_after_load)
            except Exception as exc:  # noqa: BLE001
                self.fail(exc)

    def _reply_after_load(self, index: int, reply: Any) -> None:
        if index < len(self._sources):
            if isinstance(reply, _errors().response):
                self._refused[self._sources[index]] = reply
            return
        call = self._unknown[index - len(self._sources)]
        self._deliver(call, self._refused.get(self.batch[call][1], reply))

    def _all_read_after_load(self, failure: BaseException | None) -> None:
        if failure is not None:
            self.fail(failure)
        else:
            self._done()

    def _deliver(self, index: int, reply: Any) -> None:
        if isinstance(reply, Exception) and not isinstance(reply, _errors().response):
            self.fail(reply)  # -LOADING, -NOAUTH: redis-py maps them to ConnectionError; as on main, the link goes down
            return
        call = self.batch[index]
        future = call[2]
        if isinstance(reply, _errors().response):  # refused: this call's error, or the server's (the link down)
            self.link._refused_reply(self.link._what(call), reply)  # noqa: SLF001
            if not future.done():  # else its caller was cancelled
                future.set_exception(RedisRefused(reason(reply)))
        elif not future.done():
            future.set_result(reply)

    def _done(self) -> None:
        if self.over:
            return
        self.over = True
        self._timer.cancel()
        self.link._answered = time.monotonic()  # noqa: SLF001
        self.link._trip_over(self.pipe)  # noqa: SLF001

    def _timed_out(self) -> None:
        self.fail(TimeoutError(f"no reply from redis within {self.link.timeout_s:g} s"))

    def fail(self, exc: BaseException) -> None:
        """The calls not answered yet fail: RedisUnavailable (the link down unless it is only slow), or a bug as is."""
        if self.over:
            return
        self.over = True
        self._timer.cancel()
        if self.pipe is not None:
            self.pipe.close()
        link = self.link
        failure: BaseException = exc
        if isinstance(exc, failures()):
            if link._slow(exc):  # noqa: SLF001
                link.errors += 1  # this call fails; the link stays up unless nothing answers for stall_s
            else:
                link._down(exc)  # noqa: SLF001
            failure = RedisUnavailable(link.display_url)
        for _, _, future in self.batch:
            if not future.done():
                future.set_exception(failure)
        link._trip_over(None)  # noqa: SLF001


class Pipe(asyncio.Protocol):
    """A connection of the link's own, read without redis-py's asyncio streams: redis-py connects it (the handshake:
    HELLO 3 with the credentials, SELECT, CLIENT SETINFO), then its transport hands the bytes it receives here, fed to
    a hiredis reader (the C parser redis-py itself uses, with redis-py's error classes) and each reply given to the
    round trip at once, in the order sent. A read through redis-py's streams costs a wake-up of the reading task and a
    StreamReader call per reply; here one `data_received` delivers every reply it holds. Redis closing an idle
    connection (its `timeout` setting) is seen by the event loop as it happens: `usable` is then False, with no check
    to run."""

    def __init__(self, connection: Any) -> None:
        import hiredis
        from redis._parsers.base import BaseParser  # noqa: PLC2701  (redis-py's error reply -> exception map)
        from redis.exceptions import InvalidResponse

        self.connection = connection
        self.transport: Any = connection._writer.transport  # noqa: SLF001  (taken over from redis-py's stream)
        self._streams: Any = self.transport.get_protocol()  # told of the close, so redis-py's writer sees it
        options: dict[str, Any] = {"protocolError": InvalidResponse, "replyError": BaseParser.parse_error,
                                   "notEnoughData": _MORE}
        encoder = connection.encoder
        if encoder.decode_responses:
            options.update(encoding=encoder.encoding, errors=encoder.encoding_errors)
        self._reader = hiredis.Reader(**options)
        self._push: Any = getattr(hiredis, "PushNotification", ())  # RESP3 pushes (tracking, maintenance): no replies
        self.lost: BaseException | None = None  # why it cannot be used (closed, unexpected data, a bad reply)
        self._handle: Callable[[int, Any], None] | None = None  # the exchange's reply handler
        self._finish: Callable[[BaseException | None], None] | None = None  # ...and what it runs at its end
        self._count = 0  # replies the exchange waits for
        self._seen = 0
        leftover = connection._reader is not None and connection._reader._buffer  # noqa: SLF001
        self.transport.set_protocol(self)
        if leftover:
            self._lose(ConnectionError("unexpected data after the handshake"))

    @property
    def usable(self) -> bool:
        """Connected, with nothing unread: ready for a round trip."""
        return self.lost is None and not self.transport.is_closing()

    def exchange(self, data: list[bytes], count: int, handle: Callable[[int, Any], None],
                 finish: Callable[[BaseException | None], None]) -> None:
        """Write `data`, call `handle(index, reply)` for each of the `count` replies as it is read, then `finish(None)`;
        `finish(error)` when the connection fails first (also at once when it is not usable)."""
        if not self.usable:
            from redis.exceptions import ConnectionError as RedisConnectionError

            finish(RedisConnectionError(f"connection lost: {reason(self.lost) if self.lost else 'closed'}"))
            return
        self._handle, self._finish, self._count, self._seen = handle, finish, count, 0
        self.transport.write(data[0] if len(data) == 1 else b"".join(data))

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except Exception as exc:  # noqa: BLE001  (a reply hiredis cannot parse: the stream is lost)
                self._lose(exc)
                return
            if reply is _MORE:
                return
            if isinstance(reply, self._push):  # pushed by Redis, not a reply: dropped, as redis-py's reader skips it
                continue
            handle, finish = self._handle, self._finish
            if handle is None or finish is None:  # nothing asked for it: the connection's state is unknown
                self._lose(ConnectionError("unexpected data from Redis"))
                return
            index = self._seen
            self._seen += 1
            last = self._seen == self._count
            if last:
                self._handle = self._finish = None
            try:
                handle(index, reply)
                if last:
                    finish(None)
            except Exception as exc:  # noqa: BLE001  (a bug in a handler: the round trip fails, not the loop)
                self._handle = self._finish = None
                self._lose(exc, finish)
                return

    def connection_lost(self, exc: Exception | None) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError

        self._lose(exc or RedisConnectionError("Connection closed by server."))
        with contextlib.suppress(Exception):
            self._streams.connection_lost(exc)  # redis-py's writer: closed

    def _lose(self, exc: BaseException, finish: Callable[[BaseException | None], None] | None = None) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError

        if self.lost is None:
            self.lost = exc
        finish = finish or self._finish
        self._handle = self._finish = None
        self.transport.close()
        if finish is not None:
            finish(exc if isinstance(exc, (OSError, RedisConnectionError)) else RedisConnectionError(reason(exc)))

    def close(self) -> None:
        """Close it now (replies may be left unread); the redis-py connection is done with too."""
        if self.lost is None:
            self.lost = ConnectionError("closed")
        self._handle = self._finish = None
        self.transport.abort()
        self.connection._reader = self.connection._writer = None  # noqa: SLF001  (not connected any more)


_MORE = object()  # hiredis's reader: not a whole reply yet


def pack(connection: Any, commands: list[tuple[Any, ...]]) -> list[bytes]:
    """The commands in Redis's protocol, by hiredis's packer (redis-py's synchronous client uses it; its asyncio
    connection packs in Python, about four times slower: a tenth of a request's Redis cost); by the connection's own
    packer without hiredis, or for an argument hiredis does not take."""
    if _hiredis_pack is not None:
        try:
            return [b"".join([_hiredis_pack(_words(args)) for args in commands])]
        except TypeError:
            pass
    packed: list[bytes] = connection.pack_commands(commands)
    return packed


def _words(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """A command named in several words ("SCRIPT LOAD") split into them, as redis-py's packers do."""
    first = args[0]
    if isinstance(first, str) and " " in first:
        return (*first.split(), *args[1:])
    return args


def _hiredis_packer() -> Callable[[tuple[Any, ...]], bytes] | None:
    try:
        from hiredis import pack_command
    except ImportError:
        return None
    return pack_command


_hiredis_pack = _hiredis_packer()


class _Errors(NamedTuple):
    response: type[Exception]
    no_script: type[Exception]


@functools.cache
def _errors() -> _Errors:
    """redis-py's error reply classes (imported once, not per reply: redis is an optional dependency)."""
    from redis.exceptions import NoScriptError, ResponseError

    return _Errors(ResponseError, NoScriptError)


def reason(exc: BaseException) -> str:
    """A one-line reason without secrets (redis-py messages name the host, never the password)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
