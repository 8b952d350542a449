"""Error replies, on a single Redis and on a Cluster alike (`_redis_replies`): a call's own error (a script's bug, a
refused argument) fails that call and the link stays up; a condition of the server (OOM, BUSY, READONLY...) takes
the link down until the resync can write again."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from switchman.state import RedisLink, RedisUnavailable
from switchman.state._redis_wire import RedisRefused  # noqa: PLC2701
from switchman.testing import RedisClusterServer, RedisServer

from .redis_support import fake_link, handshake_then

SHARED_URL = "redis://127.0.0.1:6379/0"


@dataclass
class Nodes:
    """A Redis to point a link at, and the ports of its nodes (to set them up behind the link's back)."""

    url: str
    ports: list[int]
    port_for: Callable[[str], int]  # the port of the node that serves a key

    def config(self, name: str, value: str) -> None:
        import redis

        for port in self.ports:
            with redis.Redis(port=port, socket_timeout=2) as node:
                node.config_set(name, value)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServer]:
    with RedisClusterServer() as server:
        yield server


@pytest.fixture(scope="module")
def patient_cluster() -> Iterator[RedisClusterServer]:
    """A Cluster whose nodes wait 10 minutes before marking a silent node FAIL: a node kept BUSY by a script
    answers no cluster-bus ping, and on a loaded machine the module's Cluster (node timeout 2 s) may mark it FAIL
    (CLUSTERDOWN: no replica to promote), which would break the tests after. A Cluster of its own so that a BUSY
    case, however slow, leaves the shared one untouched."""
    import redis

    with RedisClusterServer() as server:
        for port in server.ports:
            with redis.Redis(port=port, socket_timeout=2) as node:
                node.config_set("cluster-node-timeout", "600000")
        yield server


def _own(request: pytest.FixtureRequest, cluster: str) -> Iterator[Nodes]:
    if request.param == "cluster":
        server: RedisClusterServer = request.getfixturevalue(cluster)
        yield Nodes(server.url, server.ports, lambda key: server.ports[server.node_for(key)])
        return
    with RedisServer() as single:
        yield Nodes(single.url, [single.port], lambda _: single.port)


@pytest.fixture(params=["single", "cluster"])
def own(request: pytest.FixtureRequest) -> Iterator[Nodes]:
    """A Redis of the test's own (its settings changed freely): a redis-server, or the module's Cluster."""
    yield from _own(request, "cluster")


@pytest.fixture(params=["single", "cluster"])
def own_patient(request: pytest.FixtureRequest) -> Iterator[Nodes]:
    """As `own`, its Cluster the patient one (`patient_cluster`): for a node kept BUSY."""
    yield from _own(request, "patient_cluster")


@pytest.fixture(params=["single", "cluster"])
def shared(request: pytest.FixtureRequest) -> Iterator[str]:
    """The shared Redis at 127.0.0.1:6379 (keys under the test's `prefix`, deleted afterwards), or the module's
    Cluster (gone with it)."""
    yield request.getfixturevalue("cluster").url if request.param == "cluster" else SHARED_URL


def test_a_call_redis_refuses_fails_alone_and_the_link_stays_up(shared: str, prefix: str) -> None:
    """A script's own error (error_reply, a redis.call it makes refused) and a command's refused argument fail their
    call with Redis's message; the link stays up and the next call goes to Redis. Before, on a Cluster, the first
    took the link down: every request on local state until the next ping."""
    async def main() -> None:
        link = RedisLink(shared, prefix=prefix, timeout_s=2.0, ping_s=60.0)
        await link.start()
        key = link.key("t", "word")
        try:
            await link.command("SET", key, "word")
            with pytest.raises(RedisRefused, match="boom"):
                await link.eval("return redis.error_reply('boom')", [key], [])
            with pytest.raises(RedisRefused, match="not an integer"):
                await link.eval("return redis.call('INCR', KEYS[1])", [key], [])
            with pytest.raises(RedisRefused, match="not an integer"):
                await link.command("INCR", key)
            assert link.up and link.errors == 3
            assert await link.eval("return redis.call('GET', KEYS[1])", [key], []) == b"word"
        finally:
            await link.aclose()

    anyio.run(main)


def test_a_redis_out_of_memory_takes_the_link_down_until_it_can_write(own: Nodes) -> None:
    """maxmemory reached: a script's write is refused (OOM) and so would every request's be: the link goes down (local
    state), stays down while the resync cannot write, and comes back once Redis can. Before, on a single Redis, it
    stayed up and every request paid a refused round trip."""

    async def main() -> None:
        link = RedisLink(own.url, timeout_s=2.0, ping_s=60.0)
        await link.start()
        key = link.key("oom", "k")
        try:
            own.config("maxmemory", "1")
            with pytest.raises(RedisRefused, match="maxmemory"):
                await link.eval("return redis.call('SET', KEYS[1], '1')", [key], [])
            assert not link.up
            with pytest.raises(RedisUnavailable):  # down: at once
                await link.command("GET", key)
            assert not await link.check()  # Redis answers the ping, but the resync's marker write is refused
            own.config("maxmemory", "0")
            assert await link.check()
            assert await link.eval("return redis.call('SET', KEYS[1], '1')", [key], []) == b"OK"
        finally:
            own.config("maxmemory", "0")
            await link.aclose()

    anyio.run(main)


def test_a_redis_busy_running_a_script_takes_the_link_down_until_it_is_killed(own_patient: Nodes) -> None:
    """A script past busy-reply-threshold (another client's): the node answers BUSY to every command, so the link goes
    down (local state), the watcher's ping sees BUSY too, and the link comes back once the script is killed. Before,
    on a single Redis, it stayed up."""
    async def main() -> None:
        link = RedisLink(own_patient.url, timeout_s=2.0, ping_s=60.0)
        await link.start()
        key = link.key("busy", "k")
        try:
            with _busy(own_patient.port_for(key)):
                with pytest.raises(RedisRefused, match="BUSY"):
                    await link.eval("return redis.call('GET', KEYS[1])", [key], [])
                assert not link.up
                assert not await link.check()
            assert await link.check()
            assert await link.eval("return redis.call('GET', KEYS[1])", [key], []) is None
        finally:
            await link.aclose()

    anyio.run(main)


@contextlib.contextmanager
def _busy(port: int) -> Iterator[None]:
    """The node at `port` runs a script that never ends (BUSY to every other command past 10 ms) until SCRIPT KILL."""
    import redis

    with redis.Redis(port=port, socket_timeout=5) as admin:
        threshold = admin.config_get("busy-reply-threshold")["busy-reply-threshold"]
        admin.config_set("busy-reply-threshold", "10")
        runner = threading.Thread(target=_run_forever, args=(port,))
        runner.start()
        try:
            _wait_busy(admin)
            yield
        finally:
            with contextlib.suppress(redis.ResponseError):  # ended already
                admin.script_kill()
            runner.join(10)
            admin.config_set("busy-reply-threshold", threshold)


def _run_forever(port: int) -> None:
    import redis

    with redis.Redis(port=port, socket_timeout=30) as client, contextlib.suppress(redis.ResponseError):
        client.eval("while true do end", 0)  # killed: an error reply


def _wait_busy(admin: Any) -> None:
    """Until the node answers BUSY (the script started and passed the threshold): polled, bounded."""
    import redis

    deadline = time.monotonic() + 10
    while True:
        try:
            admin.ping()
        except redis.ResponseError as exc:
            if str(exc).startswith("BUSY"):
                return
            raise
        assert time.monotonic() < deadline, "the script never made the node busy"
        time.sleep(0.01)


#: Error replies of a server condition: the link goes down (the fake server below answers every call with one).
UNUSABLE = [
    b"-OOM command not allowed when used memory > 'maxmemory'.\r\n",
    b"-BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.\r\n",
    b"-READONLY You can't write against a read only replica.\r\n",
    b"-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.\r\n",
    b"-CLUSTERDOWN The cluster is down\r\n",
    b"-MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.\r\n",
    b"-NOREPLICAS Not enough good replicas to write.\r\n",
]
#: Error replies that refuse the one call: the link stays up.
REFUSALS = [
    b"-ERR user_script:1: Script attempted to access nonexistent global variable 'x' script: 1f0e, on @user_script:1.\r\n",
    b"-ERR value is not an integer or out of range\r\n",
    b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
    b"-NOPERM this user has no permissions to run the 'eval' command\r\n",
    b"-BUSYKEY Target key name already exists.\r\n",
    b"-budget refused\r\n",  # a script's error_reply of its own
]


#: Error replies redis-py maps to ConnectionError subclasses (BusyLoadingError, AuthenticationError), not to
#: ResponseError: the round trip fails (RedisUnavailable, not RedisRefused) and the link goes down.
CONNECTION_ERRORS = [
    b"-LOADING Redis is loading the dataset in memory\r\n",  # a restarted Redis, or a replica in a full sync
    b"-NOAUTH Authentication required.\r\n",
]


@pytest.mark.parametrize(("error", "refused", "down"), [
    *[(e, True, True) for e in UNUSABLE], *[(e, True, False) for e in REFUSALS],
    *[(e, False, True) for e in CONNECTION_ERRORS]], ids=lambda v: v[1:].split()[0].decode() if isinstance(v, bytes) else None)
def test_each_error_reply_is_a_refusal_or_a_condition_of_the_server(error: bytes, refused: bool, down: bool) -> None:
    """Every code, on a server that answers each call (a command, a script) with it: the callers get RedisRefused
    with Redis's message, and the link goes down for a server condition only (before, a single Redis's link stayed
    up for all of them). -LOADING / -NOAUTH fail the round trip: RedisUnavailable and the link down, never the
    exception object as the reply (a rate limit's `admitted, wait, ... = await link.eval(...)` would raise a 500)."""
    async def main() -> None:
        async with fake_link(handshake_then(lambda _: error), timeout_s=0.5, ping_s=60.0) as link:
            assert link.up
            with anyio.fail_after(2):
                outcomes = await asyncio.gather(link.command("GET", "k"), link.eval("return 1", ["k"], []),
                                                return_exceptions=True)
            assert all(isinstance(outcome, RedisUnavailable) for outcome in outcomes), outcomes
            assert all(isinstance(outcome, RedisRefused) is refused for outcome in outcomes), outcomes
            if refused:
                assert all(error[1:-2].decode().split(" ", 1)[1] in str(outcome) for outcome in outcomes)
            assert link.up is not down and link.errors == (2 if refused else 1)

    anyio.run(main)


@pytest.mark.parametrize("error", UNUSABLE, ids=lambda v: v[1:].split()[0].decode())
def test_each_server_condition_is_unusable_as_a_plain_response_error(error: bytes) -> None:
    """As redis-py 5.x raises them (no class for MASTERDOWN or CLUSTERDOWN before 6.x): a plain ResponseError whose
    text starts with the code, whatever redis-py is installed. Before, MASTERDOWN and CLUSTERDOWN matched none of the
    codes checked by text, and a single Redis's link stayed up."""
    from redis.exceptions import ResponseError

    from switchman.state._redis_replies import unusable  # noqa: PLC2701

    assert unusable(ResponseError(error[1:-2].decode()))


def _parses_status_codes() -> bool:
    from redis.exceptions import ResponseError

    return hasattr(ResponseError("x"), "status_code")


@pytest.mark.skipif(not _parses_status_codes(), reason="this redis-py keeps no parsed status code (the text is all)")
def test_a_scripts_own_error_naming_a_server_condition_fails_alone(shared: str, prefix: str) -> None:
    """A script's `error_reply('ERR BUSY ...')`: redis-py strips ERR, leaving the text of a real -BUSY, but keeps the
    code it parsed (ERR): a refusal of the one call, the link stays up. Before, it was taken for BUSY: link down."""
    async def main() -> None:
        link = RedisLink(shared, prefix=prefix, timeout_s=2.0, ping_s=60.0)
        await link.start()
        key = link.key("t", "own")
        try:
            for code in ("BUSY", "OOM", "MISCONF"):
                with pytest.raises(RedisRefused, match=f"{code} not the server"):
                    await link.eval(f"return redis.error_reply('ERR {code} not the server')", [key], [])
                assert link.up, code
            assert link.errors == 3
        finally:
            await link.aclose()

    anyio.run(main)


_SCRIPT = "ERR Error running script (call to f_8ea2a0ee5d34f2cf0e9d0e8b1c9e8f7a6b5c4d3e): "
#: Redis <= 6.2 wraps an error a script's redis.call met in ERR (`luaPushError` adds the `@user_script: N:` with a
#: space, the error handler the one without), keeping the server condition's code after a dash.
WRAPPED_UNUSABLE = [
    _SCRIPT + "@user_script:1: @user_script: 1: -OOM command not allowed when used memory > 'maxmemory'. ",
    _SCRIPT + "@user_script:3: -READONLY You can't write against a read only replica. ",
    _SCRIPT + "@user_script:1: @user_script: 1: -MISCONF Redis is configured to save RDB snapshots, but it's "
              "currently unable to persist to disk. ",
    _SCRIPT + "@user_script:2: @user_script: 2: -NOREPLICAS Not enough good replicas to write. ",
]
WRAPPED_REFUSALS = [
    _SCRIPT + "@user_script:1: WRONGTYPE Operation against a key holding the wrong kind of value ",
    _SCRIPT + "@user_script:1: user_script:1: Script attempted to access nonexistent global variable 'x' ",
    _SCRIPT + "@user_script:1: @user_script: 1: Wrong number of args calling Redis command From Lua script ",
]


@pytest.mark.parametrize(("text", "expected"), [*[(t, True) for t in WRAPPED_UNUSABLE],
                                                *[(t, False) for t in WRAPPED_REFUSALS]])
def test_a_server_condition_a_redis_6_script_met_is_unusable(text: str, expected: bool) -> None:
    """Redis <= 6.2: an OOM (READONLY, MISCONF, NOREPLICAS) inside a script comes as ERR `Error running script ...
    @user_script:N: -OOM ...`: a condition of the server (the link down), as redis-py of any version parses it or as a
    plain ResponseError of the text after ERR; a script's own error so wrapped is still a refusal. Before, every one
    of them counted as a refusal of the one call, and a Redis 6 out of memory left the link up."""
    from redis._parsers.base import BaseParser
    from redis.exceptions import ResponseError

    from switchman.state._redis_replies import unusable  # noqa: PLC2701

    assert unusable(BaseParser.parse_error(text)) is expected
    assert unusable(ResponseError(text.removeprefix("ERR "))) is expected


def test_a_refusal_is_an_answer_and_keeps_a_timeout_after_it_slow_not_down(shared: str, prefix: str) -> None:
    """Redis answered the refused call: the link's last answer is now, so a timeout soon after is a slow call (the link
    stays up), not Redis gone. Before, on a Cluster, a refusal left the last answer where it was."""
    async def main() -> None:
        link = RedisLink(shared, prefix=prefix, timeout_s=2.0, ping_s=60.0)
        await link.start()
        try:
            link._answered = 0.0  # noqa: SLF001  (nothing answered for long)
            assert not link._slow(TimeoutError())  # noqa: SLF001
            with pytest.raises(RedisRefused, match="boom"):
                await link.eval("return redis.error_reply('boom')", [link.key("t", "k")], [])
            assert link._slow(TimeoutError())  # noqa: SLF001
        finally:
            await link.aclose()

    anyio.run(main)
