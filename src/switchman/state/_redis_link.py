"""The one Redis connection every piece of shared state uses, and whether Redis is up.

    link = RedisLink("redis://127.0.0.1:6379/0", prefix="sm:", timeout_s=0.05)
    link.on_resync(budgets.rebuild)          # run when Redis comes back (and at start)
    await link.start()                       # first ping; then a watcher pings every `ping_s`
    try:
        value = await link.run(lambda r: r.get(link.key("session:s1", "state")))
    except RedisUnavailable:
        ...use this process's own state...

Every round trip is bounded by `timeout_s` and never retried. On a single Redis, `eval` and `command` calls
issued in the same turn of the event loop (concurrent requests; one request's calls started side by side)
share one round trip: one write, one read, on a connection of the link's own. One round trip is on its way
at a time: the calls issued meanwhile go together in the next, so under load a round trip carries the calls
of several requests (a call may wait for the round trip on its way before its own: at worst twice the
timeout). `eval_soon` and `command_soon` queue a call at once and return its future (no task needed to start
it). (On a Cluster each goes on its own to its slot's node.)

A round trip costs no task (one only to open a connection): redis-py opens the connection (its handshake: HELLO 3
with the credentials, SELECT for a database other than 0, CLIENT SETINFO; maintenance notifications turned off),
then the link takes over its transport (`Pipe`, an asyncio protocol): the write is made in a callback, the bytes
read are fed to hiredis's reader (the C parser redis-py itself uses, with redis-py's error classes), each reply goes
to its caller's future from `data_received`, and one event-loop timer bounds the round trip. Through redis-py's
asyncio streams each reply cost a wake-up of a reading task and a StreamReader call, and each round trip a task's
steps and an `asyncio.timeout`. A connection Redis closes while idle is seen by the event loop as it happens and not
used again. This leans on redis-py internals (`missing_internals`), checked when the link is built: a redis-py
without them is a ConfigError at startup naming its version, never a failed request.

A connection error, or timeouts with no call answered for `stall_s` (a slow call fails only itself and the calls
behind it in its round trip — each caller gets its reply as soon as it is read — and a busy event loop or a slow
script must not take the replica off shared state), marks the link down with one log line ("redis unavailable at
redis://host:port/0: <error>; degrading to local state") and `switchman_redis_up 0`; while down,
calls fail at once without touching the network, so an outage costs a request a few timeouts at most. The
watcher notices Redis is back, logs it, and runs the registered resync callbacks (rebuild budget counters from the
ledger, re-read keys) before calls go to Redis again.

An error reply fails its own call only (RedisRefused, Redis's message; the first of each script or command logged
once): a script's bug or a refused argument is that call's, and the link stays up. A reply that says the server
cannot serve — OOM, BUSY, READONLY, MASTERDOWN, CLUSTERDOWN, MISCONF, NOREPLICAS (`_redis_replies`) — fails its call
the same way and takes the link down as an outage does; the resync then brings it back once Redis can write again.
The same on a single Redis and on a Cluster.

A Redis that loses its data while the link is up — a restart between two pings (its connections are reopened
quietly), FLUSHALL, a failover to an empty replica — is caught by a marker: the resync writes
`<prefix>{switchman-link}:marker` (no TTL; SET NX, so every replica of a prefix holds the same random token) and
each watcher ping reads it instead of PING (one round trip). Gone, or another token (a replica saw the loss first
and wrote a new one) = the data was lost: one line ("redis at <url> lost its data (restart or flush); resyncing"),
the link down, the resync callbacks run and the link up again. On a Cluster there is one marker per primary
(`{switchman-link-<n>}`, the first n whose slot that primary serves, found against the slot map at each resync), all
read in each ping: a primary that lost its data is seen. A primary added later is covered from the next resync on
(one serving no slot holds none); a slot migration carries its marker along.

Keys are laid out for Redis Cluster: `<prefix>{<entity>}:<part>...` — everything one Lua script
touches shares the `{entity}` hash tag, so it lives on one slot, and different entities spread over
the primaries. A `redis+cluster://` (or `rediss+cluster://`) URL builds redis-py's asyncio
`RedisCluster` with the same timeouts (it follows MOVED/ASK redirects itself; a lost node is a
failed call like any other, the watcher pings every primary so the link stays down while one is lost,
and the resync reads the slot map afresh); pipelines are
non-transactional, so they may span slots (use EVAL in them: redis-py refuses EVALSHA in a Cluster
pipeline). The URL's
password never appears in a log line or a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .._config_server import ServerConfig
from .._exceptions import ConfigError
from .._streaks import OnceLog
from ._redis_client import async_client, failures, is_cluster, shown_redis_url
from ._redis_replies import unusable
from ._redis_wire import (
    Pipe,
    Queued,
    RedisRefused,
    RedisUnavailable,
    Trip,
    check_internals,
    no_maint_notifications,
    reason,
)

__all__ = ["RedisLink", "RedisRefused", "RedisUnavailable"]

logger = logging.getLogger("switchman.state")

T = TypeVar("T")

Resync = Callable[[], Awaitable[None]]


class RedisLink:
    """A redis-py asyncio client with a timeout on every call, an up/down state and resync callbacks."""

    def __init__(
        self, url: str, *, prefix: str = "sm:", timeout_s: float = 0.05, ping_s: float = 1.0, client: Any = None,
        stall_s: float | None = None,
    ) -> None:
        try:
            import redis.asyncio  # noqa: F401  (fail at startup, not at the first request)
            import hiredis  # noqa: F401  (the link's reader, `Pipe`)
        except ImportError:
            raise ConfigError("server.redis_url needs the redis client: pip install 'switchman[redis]'") from None
        check_internals()
        self.url = url
        self.display_url = shown_redis_url(url)
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.ping_s = ping_s
        self.up = False  # until the first ping answers
        self.errors = 0  # calls that failed or timed out
        #: Timeouts take the link down only when nothing answered for this long (the watcher pings every ping_s).
        self.stall_s = stall_s if stall_s is not None else 2 * ping_s + timeout_s
        self._answered = time.monotonic()  # the last call or ping that succeeded
        self._client: Any = client
        self._resyncs: list[Resync] = []
        self._cluster = is_cluster(url)
        self._shas: dict[str, str] = {}  # script source -> its SHA1
        self._scripts: dict[str, Any] = {}  # script source -> redis-py Script (a Cluster's calls)
        self._queue: list[Queued] = []  # calls waiting for the next round trip, sent together
        self._busy = False  # a round trip on its way (or about to go): calls queued meanwhile go in the next
        self._drained: list[asyncio.Future[None]] = []  # told when the last round trip ends (aclose)
        self._idle: list[Pipe] = []  # the batches' own connections, each ready for a round trip
        self._opening: asyncio.Task[None] | None = None  # the one connection being opened (redis-py's handshake)
        self._waiting: Trip | None = None  # the round trip that waits for it (one round trip at a time)
        #: True in the resync callbacks' context: their calls reach Redis before the link is up for everyone.
        self._resyncing: contextvars.ContextVar[bool] = contextvars.ContextVar(f"switchman-resync-{id(self)}",
                                                                              default=False)
        self._watcher: asyncio.Task[None] | None = None
        self._stopping: asyncio.Event | None = None
        self._started = False
        self._closed = False  # after aclose: calls fail instead of opening a client nobody closes
        self._refused = OnceLog()  # scripts (or commands) whose error reply was logged: once each
        #: The markers the resync wrote (key -> token): the watcher's ping reads them; one gone = Redis lost its data.
        self._markers: dict[str, str] = {}
        self._lost = False  # the watcher found the markers gone: the resync that follows is not announced again
        self._checking = asyncio.Lock()  # one check (ping, resync) at a time: the watcher's and a caller's

    @classmethod
    def from_config(cls, server: ServerConfig) -> RedisLink | None:
        """The link `server.redis_url` configures (None without one: every process keeps its own state)."""
        if not server.redis_url:
            return None
        options = server.redis
        return cls(server.redis_url, prefix=options.key_prefix, timeout_s=options.timeout_s, ping_s=options.ping_s)

    # -- keys ----------------------------------------------------------------------------------
    def key(self, entity: str, *parts: str) -> str:
        """`<prefix>{<entity>}:<part>:...`: one entity's keys share a Redis Cluster hash slot."""
        if not parts:
            return f"{self.prefix}{{{entity}}}"
        return f"{self.prefix}{{{entity}}}:" + ":".join(parts)

    def channel(self, name: str) -> str:
        """A pub/sub channel name under the prefix."""
        return f"{self.prefix}{name}"

    # -- the client ----------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The redis-py asyncio client (opened on first use, in the event loop that serves requests)."""
        if self._client is None:
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            self._client = async_client(
                self.url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s,
                retry=Retry(NoBackoff(), 0), health_check_interval=0, **no_maint_notifications(self.cluster),
            )
        return self._client

    @property
    def cluster(self) -> bool:
        """Whether the URL names a Redis Cluster (`redis+cluster://`)."""
        return self._cluster

    async def eval(self, source: str, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        """Run a Lua script (EVALSHA; loaded when Redis does not know it) within the timeout, in one round trip
        with the other calls issued in the same turn of the event loop (see `command`); raises RedisUnavailable
        on failure."""
        return await self.eval_soon(source, keys, args)

    def eval_soon(self, source: str, keys: Sequence[str], args: Sequence[str | int | float]) -> asyncio.Future[Any]:
        """`eval`, queued now and awaited later: the future has the reply, or RedisUnavailable (see `command_soon`)."""
        if self.cluster:  # RedisCluster routes each call to its slot's node: no shared round trip
            script = self._scripts.get(source)
            if script is None:
                script = self._scripts[source] = self.client.register_script(source)
            return asyncio.ensure_future(self.run(lambda _: script(keys=list(keys), args=list(args)),
                                                  what=f"script {script.sha[:12]}"))
        sha = self._shas.get(source)
        if sha is None:
            sha = self._shas[source] = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324  (Redis's script id)
        return self._queued(("EVALSHA", sha, len(keys), *keys, *args), source)

    async def command(self, *args: str | int | float | bytes) -> Any:
        """One Redis command within the timeout; raises RedisUnavailable on failure.

        Commands (and `eval`s) issued in the same turn of the event loop — by concurrent requests, or by one
        request's calls started side by side — go to Redis together in one round trip (one write, one read):
        a round trip through asyncio costs far more CPU than a command. Each is still its own command: a
        script stays atomic, but the batch is not a transaction.
        """
        return await self.command_soon(*args)

    def command_soon(self, *args: str | int | float | bytes) -> asyncio.Future[Any]:
        """`command`, queued now (it joins this turn's round trip) and awaited later, without a task of its own:
        the future has the reply, or RedisUnavailable. A caller that may not await it retrieves its outcome."""
        if self.cluster:
            return asyncio.ensure_future(self.run(lambda client: client.execute_command(*args),
                                                  what=f"command {args[0]!s}"))
        return self._queued(args, None)

    def _queued(self, args: tuple[Any, ...], source: str | None) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._closed or (not self.up and not self._resyncing.get()):
            future.set_exception(RedisUnavailable(self.display_url))
            return future
        self._queue.append((args, source, future))
        if not self._busy:  # the first call while no round trip is on its way: sent once this turn's calls joined
            self._busy = True
            # two turns on: the calls of this turn and of the tasks started in it (their first steps) go too
            loop.call_soon(loop.call_soon, self._flush)
        return future

    def _flush(self) -> None:
        """Send the queue in one round trip, or end the sending when it is empty.

        One round trip at a time while calls wait: the calls queued during one go together in the next (it starts
        once the callers its replies woke have run: they queue their next calls first). Under load this gathers
        many requests' calls in each round trip (a round trip's socket calls and wake-ups cost far more CPU than a
        command in it). No task: the write is made here, the replies are handed out as they are read (`Pipe`), and
        one timer bounds the round trip. A call waits at most for the round trip on its way (bounded by
        `timeout_s`) before its own is sent."""
        if not self._queue:
            self._busy = False
            waiting, self._drained = self._drained, []
            for waiter in waiting:
                if not waiter.done():
                    waiter.set_result(None)
            return
        batch, self._queue = self._queue, []
        trip = Trip(self, batch)
        while self._idle:
            pipe = self._idle.pop()
            if pipe.usable:
                trip.send(pipe)
                return
            pipe.close()
        self._waiting = trip
        if self._opening is None:  # one connection opened at a time: a round trip after one that timed out waiting
            # for it takes it over, rather than opening another (a slow Redis would otherwise get a pile of them)
            self._opening = asyncio.get_running_loop().create_task(self._open())  # a new connection: a task

    async def _open(self) -> None:
        """Connect (redis-py's handshake) and send the round trip waiting for it; a failure fails it; its own timer
        fails it meanwhile, and the connection then goes to the round trip after it (or is kept idle)."""
        try:
            async with asyncio.timeout(max(self.timeout_s, 0.5)):  # its own bound: a busy loop's handshake ends
                pipe = await self._connect()
        except asyncio.CancelledError:  # the task cancelled: the event loop closing
            self._opened(None, TimeoutError("connecting to redis was cancelled"))
            raise
        except Exception as exc:  # noqa: BLE001  (its callers see RedisUnavailable, the link goes down)
            self._opened(None, exc)
            return
        self._opened(pipe, None)

    def _opened(self, pipe: Pipe | None, failure: BaseException | None) -> None:
        self._opening = None
        trip, self._waiting = self._waiting, None
        if trip is not None and not trip.over:
            if pipe is not None:
                trip.send(pipe)
            else:
                trip.fail(failure or ConnectionError("connecting to redis failed"))
        elif pipe is not None:  # its round trip failed meanwhile: kept for the next
            if self._closed:
                pipe.close()
            else:
                self._idle.append(pipe)

    def _trip_over(self, pipe: Pipe | None) -> None:
        """A round trip ended: its connection (when it is fit for another) kept, the next round trip started soon."""
        if pipe is not None:
            if self._closed or not pipe.usable:
                pipe.close()
            else:
                self._idle.append(pipe)
        loop = asyncio.get_running_loop()
        # two turns on: the callers its replies woke have run, and so have the calls they make a turn later (a
        # request's next step): they go in the next round trip rather than in one of their own
        loop.call_soon(loop.call_soon, self._flush)

    async def _connect(self) -> Pipe:
        """A new connection of the batches' own (`_flush` found no idle one).

        Not taken from redis-py's pool, and read without redis-py's streams (see `Pipe`): the pool's checkout and
        return, a timer per reply and a wake-up of the reading task per reply cost more CPU than the round trip's
        socket calls. The round trip's timer (`timeout_s`, see `Trip`) bounds it whole, its connect included; a
        connection whose round trip failed is closed and dropped (its replies may be left unread), and one Redis
        closed while idle is dropped before its next round trip."""
        pool = self.client.connection_pool
        connection = pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None})
        try:
            await connection.connect()
            return Pipe(connection)
        except BaseException:  # failed or cancelled mid-handshake: closed, not leaked
            with contextlib.suppress(Exception):
                if connection._writer is not None:  # noqa: SLF001
                    connection._writer.close()  # noqa: SLF001
            raise

    async def _drop_idle(self) -> None:
        """Close the idle connections (Redis went away, or the link closes)."""
        idle, self._idle = self._idle, []
        for pipe in idle:
            pipe.close()

    def _refused_reply(self, what: str, reply: BaseException) -> None:
        """An error reply, on a single Redis or a Cluster alike: a condition of the server (OOM, BUSY, READONLY...:
        `unusable`) takes the link down as an outage does; a refusal of this one call (a script's error, a bad
        argument) fails only it, counted, with one warning line the first time for each script or command."""
        if unusable(reply):
            self._down(reply)
            return
        self.errors += 1
        if self._refused.first(what):
            text = str(reply).splitlines()[0] if str(reply) else type(reply).__name__
            logger.warning("redis refused %s: %s (logged once; counted in switchman_redis_errors_total)", what, text)

    def _what(self, call: Queued) -> str:
        """A queued call as the refusal's log line names it: its script's SHA1, or its command."""
        args, source, _ = call
        return f"script {self._shas.get(source, '?')[:12]}" if source is not None else f"command {args[0]!s}"

    def on_resync(self, callback: Resync) -> None:
        """Run `callback` when the link comes up (at start and after every outage), before calls resume."""
        self._resyncs.append(callback)

    async def run(self, action: Callable[[Any], Awaitable[T]], *, what: str = "call") -> T:
        """`action(client)` within the timeout; raises RedisUnavailable (never a redis-py error) on failure, and
        RedisRefused for an error reply (`what` names the call in the refusal's log line)."""
        if self._closed or (not self.up and not self._resyncing.get()):
            raise RedisUnavailable(self.display_url)
        return await self._call(action, what)

    async def _call(self, action: Callable[[Any], Awaitable[T]], what: str) -> T:
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await action(self.client)
        except _failures_or_races() as exc:
            if isinstance(exc, AttributeError) and not _raised_in_redis_py(exc):
                raise  # our own bug: not Redis being down
            from redis.exceptions import ResponseError

            if isinstance(exc, ResponseError):  # an error reply (a Cluster's script): it ran, up to its error
                self._answered = time.monotonic()  # an answer (as a single Redis's round trip counts it)
                self._refused_reply(what, exc)
                raise RedisRefused(reason(exc)) from None
            if self._slow(exc):
                self.errors += 1  # this call fails; the link stays up unless nothing answers for stall_s
            else:
                self._down(exc)
            raise RedisUnavailable(self.display_url) from None
        self._answered = time.monotonic()
        return result

    def _slow(self, exc: BaseException) -> bool:
        """A timeout while Redis answered something lately: slow, not gone."""
        return _is_timeout(exc) and time.monotonic() - self._answered < self.stall_s

    def _down(self, exc: BaseException) -> None:
        self.errors += 1
        if self.up:
            self.up = False
            logger.warning("redis unavailable at %s: %s; degrading to local state", self.display_url, reason(exc))

    @property
    def _slow_bound(self) -> float:
        """The bound of the watcher's calls: not on a request's path (a Cluster's may first read the slot map)."""
        return max(self.timeout_s, 2.0 if self.cluster else 0.5)

    async def _ping(self) -> bool:
        """One round trip: the markers read while the link is up (Redis answers, and still has its data), else PING."""
        kept = True
        try:
            async with asyncio.timeout(self._slow_bound):
                if self.up and self._markers:  # a Cluster's markers: one on each primary, read from each
                    kept = await self._markers_kept()
                elif self.cluster:  # every primary: with one lost, its slots' calls fail (no flapping up and down)
                    await self.client.ping(target_nodes=self.client.PRIMARIES)
                else:
                    await self.client.ping()
        except failures() as exc:
            if self.up and self._slow(exc):
                return False
            if self.up or not self._started:
                self.up = True  # so _down logs the one line (also for a Redis absent at start)
                self._down(exc)
            return False
        self._answered = time.monotonic()
        if not kept and self.up:  # restarted empty, flushed, failed over to an empty replica: resync as after an outage
            self.up = False
            self._lost = True
            logger.warning("redis at %s lost its data (restart or flush); resyncing", self.display_url)
        return True

    def _marker_keys(self) -> list[str]:
        """The markers' keys: one on a single Redis; on a Cluster one per primary, each with a hash tag that lands
        in a slot that primary serves (found by trying `link-0`, `link-1`... against the slot map just read)."""
        if not self.cluster:
            return [self.key("switchman-link", "marker")]
        client = self.client
        primaries = {node.name for node in client.get_primaries()}
        keys: list[str] = []
        for i in range(1 << 16):  # a few tries per primary; a primary serving no slot holds none (and ends the search)
            key = self.key(f"switchman-link-{i}", "marker")
            node = client.get_node_from_key(key)
            if node is not None and node.name in primaries:
                primaries.discard(node.name)
                keys.append(key)
                if not primaries:
                    break
        return keys

    async def _write_markers(self) -> bool:
        """Each marker written unless there (SET NX: another replica's resync wrote it), then its token read back: the
        token every replica of this prefix holds until Redis loses its data. A token that changed under a replica
        (another noticed the loss first and wrote a new one) is a loss for it too."""
        markers: dict[str, str] = {}
        async with asyncio.timeout(self._slow_bound):
            for key in self._marker_keys():
                await self.client.set(key, secrets.token_hex(8), nx=True)  # no TTL: gone only with the data
                markers[key] = _text(await self.client.get(key))
                if not markers[key]:  # gone again at once (flushed meanwhile): the watcher tries again
                    return False
        self._markers = markers
        return True

    async def _markers_kept(self) -> bool:
        keys = list(self._markers)
        if self.cluster:
            values = await self.client.mget_nonatomic(keys)  # one GET per slot, each to its primary, side by side
        else:
            values = [await self.client.get(keys[0])]
        return all(_text(value) == self._markers[key] for key, value in zip(keys, values, strict=True))

    async def _come_up(self) -> None:
        """Resync (only the callbacks' calls reach Redis meanwhile: requests keep to local state), then serve.

        The markers are written before the callbacks run: a loss during the resync is seen by the next ping."""
        announce, self._lost = not self._lost, False
        await self._drop_idle()
        with contextlib.suppress(*failures()):  # pooled connections to a Redis that went away fail their next call
            if not self.cluster:
                await self.client.connection_pool.disconnect()
            else:  # closed, a Cluster client reads the slot map afresh from every node it has seen
                await self.client.aclose()
        if self.cluster:
            try:
                async with asyncio.timeout(max(self.timeout_s, 0.5)):  # as the ping: not within one call's timeout
                    await self.client.initialize()
            except failures():
                return  # the watcher tries again
        try:
            if not await self._write_markers():
                return
        except failures():
            return  # the watcher tries again
        token = self._resyncing.set(True)
        try:
            for callback in self._resyncs:
                await callback()
        except RedisUnavailable:
            return  # down again during the resync: the watcher tries again
        except Exception:  # a bug in a callback: stay on local state (also at start), the watcher tries again
            logger.exception("redis resync failed; keeping to local state, trying again in %.1f s", self.ping_s)
            return
        finally:
            self._resyncing.reset(token)
        self.up = True
        if announce:
            logger.warning("redis at %s is up; shared state in use", self.display_url)

    async def check(self) -> bool:
        """Ping now; when Redis answers and the link was down, resync and bring it up. Returns whether it is up.

        One at a time: two resyncs side by side would close and rebuild the client under each other."""
        async with self._checking:
            answered = await self._ping()
            self._started = True
            if answered and not self.up:
                await self._come_up()
            return self.up

    async def start(self) -> None:
        """The first ping (and resync), then the watcher that notices an outage's end."""
        self._closed = False
        await self.check()
        if self._watcher is None:
            self._stopping = asyncio.Event()
            self._watcher = asyncio.create_task(self._watch(self._stopping), name="switchman-redis-watch")

    async def _watch(self, stopping: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.ping_s):
                    await stopping.wait()
            if stopping.is_set():
                return
            try:
                await self.check()
            except Exception:  # a bug in a resync callback must not stop the watcher: the link would stay down
                logger.exception("redis watcher: checking the link failed; trying again in %.1f s", self.ping_s)

    async def aclose(self) -> None:
        """Stop the watcher (not cancelled mid-call: redis-py can sit on that) and close the connection pool; calls
        queued already go first, later ones raise RedisUnavailable."""
        self._closed = True
        if self._watcher is not None and self._stopping is not None:
            self._stopping.set()
            await asyncio.wait([self._watcher], timeout=self.timeout_s + 5.0)
            self._watcher.cancel()
            self._watcher = None
        if self._busy:  # round trips on their way, and the one of the calls queued, get their answers first
            drained = asyncio.get_running_loop().create_future()
            self._drained.append(drained)
            await asyncio.wait([drained], timeout=2 * self.timeout_s + 1.0)
        await self._drop_idle()
        if self._client is not None:
            client, self._client = self._client, None
            self._scripts.clear()
            with contextlib.suppress(*failures()):
                await client.aclose()

    def collector(self) -> Collector:
        """A Prometheus collector: `switchman_redis_up` and `switchman_redis_errors_total`."""
        return _LinkCollector(self)


class _LinkCollector(Collector):
    def __init__(self, link: RedisLink) -> None:
        self._link = link

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("switchman_redis_up", "1 while shared state is served from Redis, 0 when degraded "
                                "to local state", value=1.0 if self._link.up else 0.0)
        yield CounterMetricFamily("switchman_redis_errors", "Redis calls that failed or timed out",
                                  value=self._link.errors)


def _text(value: Any) -> str:
    """A marker's token as read (bytes unless the client decodes replies); '' for a missing one."""
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)  # (no UTF-8: another writer)


def _is_timeout(exc: BaseException) -> bool:
    from redis.exceptions import TimeoutError as RedisTimeout

    return isinstance(exc, (TimeoutError, RedisTimeout))


def _failures_or_races() -> tuple[type[BaseException], ...]:
    """`failures()` and the AttributeError of redis-py's connection race (told apart by `_raised_in_redis_py`)."""
    return (*failures(), AttributeError)


def _raised_in_redis_py(exc: BaseException) -> bool:
    """An exception whose innermost frame is redis-py's own: its asyncio Cluster connection races a disconnect
    (`self._writer.writelines` on a writer another task set to None, seen while a primary failed over), which
    is a lost connection, not a bug of the caller."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    import redis

    return tb.tb_frame.f_code.co_filename.startswith(os.path.dirname(redis.__file__) + os.sep)
