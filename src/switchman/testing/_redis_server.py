"""Redis for tests: a shared one under a key prefix of each test's own, or a server a test starts and kills.

    prefix = unique_prefix()                        # keys under it are deleted by `forget_prefix(url, prefix)`
    with RedisServer() as server:                   # redis-server on a free loopback port, no persistence
        server.url; server.stop(); server.start()   # a Redis outage on demand (same port)
    with RedisClusterServer() as cluster:           # three primaries on free ports, no replicas
        cluster.url                                 # redis+cluster://127.0.0.1:<first port>
        cluster.kill_node(1); cluster.restart_node(1)  # a primary's outage on demand

Needs the `redis-server` binary and the redis client (`switchman[redis]`).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["RedisClusterServer", "RedisServer", "forget_prefix", "unique_prefix"]

def unique_prefix() -> str:
    """A key prefix no other test (or helper) uses."""
    return f"sm-test:{uuid.uuid4().hex[:12]}:"


def forget_prefix(url: str, prefix: str) -> None:
    """Delete every key under `prefix` (on every primary of a `redis+cluster://` URL)."""
    from ..state import redis_sync_client

    client = redis_sync_client(url)
    try:
        keys = list(client.scan_iter(prefix + "*"))  # a Cluster client scans every primary
        for key in keys:  # one key a command: a Cluster refuses a DEL across slots
            client.delete(key)
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server of the test's own on a free loopback port, stopped (kill) and restarted at will."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server (again, after `stop`) and wait until it answers."""
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=0.5).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server (SIGKILL: an outage, not a shutdown)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class RedisClusterServer:
    """A Redis Cluster of the test's own: `primaries` redis-servers on free loopback ports, each with `replicas`
    replicas (none by default).

    Started with `redis-cli --cluster create` (slots split evenly) and waited for until every node says
    `cluster_state:ok` and every replica has finished its first sync with its primary; killed, with their files, on exit. With replicas, killing a primary is a failover:
    after the node timeout (2 s) its replica is promoted and the cluster serves every slot again. Needs
    `redis-server` and `redis-cli`.
    """

    def __init__(self, primaries: int = 3, replicas: int = 0) -> None:
        self.replicas = replicas
        self.ports: list[int] = []
        while len(self.ports) < primaries * (1 + replicas):
            port = _cluster_port()
            if port not in self.ports and port + 10_000 not in self.ports:
                self.ports.append(port)
        self.url = f"redis+cluster://127.0.0.1:{self.ports[0]}"
        self._processes: list[subprocess.Popen[bytes]] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._ready: Callable[[], None] = lambda: None

    def start(self) -> None:
        """Start the nodes, join them into a cluster and wait until it serves every slot."""
        self._dir = tempfile.TemporaryDirectory(prefix="switchman-cluster-")
        self._processes = [self._node(port) for port in self.ports]
        import redis

        def answering() -> None:
            for port in self.ports:
                with redis.Redis(port=port, socket_timeout=0.5) as node:
                    node.ping()

        _wait_for(answering)
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                        "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

        def ready() -> None:
            for port in self.ports:
                with redis.Redis(port=port, socket_timeout=0.5) as node:
                    info = node.cluster("info")
                state = info.get("cluster_state") if isinstance(info, dict) else None
                if state != "ok":
                    raise redis.ConnectionError(f"cluster_state {state} on {port}")

        def replicas_in_sync() -> None:
            # A replica that has not finished its first sync cannot be promoted: a primary killed before then
            # (diskless sync waits `repl-diskless-sync-delay` for more replicas) leaves its slots unserved.
            for port in self.ports:
                with redis.Redis(port=port, socket_timeout=0.5) as node:
                    info = node.info("replication")
                if info.get("role") == "slave" and info.get("master_link_status") != "up":
                    raise redis.ConnectionError(f"replica on {port} not in sync with its primary")

        self._ready = ready
        _wait_for(ready, seconds=30)
        if self.replicas:
            _wait_for(replicas_in_sync, seconds=30)

    def _node(self, port: int) -> subprocess.Popen[bytes]:
        assert self._dir is not None
        return subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", "2000", "--save", "",
             "--appendonly", "no", "--repl-diskless-sync-delay", "0", "--dir", self._dir.name,
             "--logfile", f"node-{port}.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of every node's log: what a failed wait shows."""
        assert self._dir is not None
        parts = []
        for i, port in enumerate(self.ports):
            path = os.path.join(self._dir.name, f"node-{port}.log")
            text = Path(path).read_text(encoding="utf-8", errors="replace") if os.path.exists(path) else ""
            state = "alive" if self.alive(i) else "dead"
            parts.append(f"--- node {i} (port {port}, {state})\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts)

    def node_for(self, key: str) -> int:
        """The index (into `ports`) of the node that serves `key`'s slot now."""
        import redis
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        with redis.Redis(port=self.ports[0] if self.alive(0) else self._any_alive(), socket_timeout=2) as node:
            for start, end, primary, *_ in node.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return self.ports.index(int(primary[1]))
        raise LookupError(f"no node serves slot {slot}")

    def alive(self, index: int) -> bool:
        return self._processes[index].poll() is None

    def _any_alive(self) -> int:
        return next(port for i, port in enumerate(self.ports) if self.alive(i))

    def wait_serving(self, seconds: float = 60) -> None:
        """Wait until every live node says `cluster_state:ok` (after a failover: the replica was promoted)."""
        import redis

        def ready() -> None:
            for i, port in enumerate(self.ports):
                if not self.alive(i):
                    continue
                with redis.Redis(port=port, socket_timeout=0.5) as node:
                    info = node.cluster("info")
                if not isinstance(info, dict) or info.get("cluster_state") != "ok":
                    raise redis.ConnectionError(f"cluster not serving on {port}")

        try:
            _wait_for(ready, seconds=seconds)
        except redis.ConnectionError as exc:
            raise redis.ConnectionError(f"{exc}\n{self.log_tail()}") from exc

    def move_slot(self, key: str, to: int) -> None:
        """Reshard: move `key`'s slot, with its keys, to the primary at index `to` (the steps `redis-cli
        --cluster reshard` takes: IMPORTING, MIGRATING, MIGRATE every key, then SETSLOT NODE on every node)."""
        import redis
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        source = self.node_for(key)
        nodes: dict[int, Any] = {i: redis.Redis(port=self.ports[i], socket_timeout=5)
                                 for i in range(len(self.ports)) if self.alive(i)}
        try:
            ids = {i: node.execute_command("CLUSTER MYID") for i, node in nodes.items()}
            ids = {i: value.decode() if isinstance(value, bytes) else str(value) for i, value in ids.items()}
            nodes[to].execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[source])
            nodes[source].execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[to])
            while keys := nodes[source].execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
                nodes[source].execute_command("MIGRATE", "127.0.0.1", self.ports[to], "", 0, 5000, "KEYS", *keys)
            for node in nodes.values():
                with contextlib.suppress(redis.ResponseError):  # a replica refuses; it learns from its primary
                    node.execute_command("CLUSTER SETSLOT", slot, "NODE", ids[to])
        finally:
            for node in nodes.values():
                node.close()

    def kill_node(self, index: int) -> None:
        """Kill one node (SIGKILL). A primary without replicas: its slots are served by nobody until it is back;
        with replicas: a failover (see `wait_serving`)."""
        self._processes[index].kill()
        self._processes[index].wait(10)

    def restart_node(self, index: int) -> None:
        """Start a killed primary again (empty, same slots) and wait until the cluster is whole."""
        self._processes[index] = self._node(self.ports[index])
        _wait_for(self._ready, seconds=60)

    def stop(self) -> None:
        """Kill every node and remove their files."""
        for process in self._processes:
            process.kill()
            process.wait(10)
        self._processes = []
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> RedisClusterServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _cluster_port() -> int:
    """A free port P whose cluster bus port P + 10000 is free too (so P is at most 55535)."""
    while True:
        port = random.randrange(20_000, 45_000)
        try:
            for candidate in (port, port + 10_000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


def _wait_for(check: Callable[[], object], seconds: float = 10.0) -> None:
    """Call `check` until it stops raising a redis connection error (then raise it)."""
    import redis

    deadline = time.monotonic() + seconds
    while True:
        try:
            check()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
