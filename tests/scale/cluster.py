"""A cluster of real `switchman serve` replicas for the scale-out tests, and a load generator in front of it.

    with Cluster(config, replicas=3, tmp=tmp_path) as cluster:
        run = drive(cluster, total=3000, concurrency=60, at={1000: lambda: cluster.kill(2)})

Replicas are separate processes on loopback ports sharing the configuration's ledger and Redis.
`drive` spreads requests round-robin like a load balancer: a replica that refuses a connection is
taken out of the rotation (its health check failed) and that request goes to the next one; a
request in flight when its replica died is counted as lost, not answered.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from serve_support import free_port, serve_command, stop_process

ASK = [{"role": "user", "content": "hello there"}]


def wait_until(predicate: Callable[[], bool], *, seconds: float = 30.0, what: str = "condition") -> None:
    """Poll until `predicate()` holds; raise AssertionError naming `what` if it never does."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Replica:
    """One `switchman serve` process."""

    def __init__(self, index: int, config: Path, tmp: Path, env: dict[str, str], args: tuple[str, ...]) -> None:
        self.index = index
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._err = tmp / f"replica{index}.err"
        with self._err.open("wb") as stderr:
            self.process = subprocess.Popen(serve_command(config, self.port, "--no-access-log", *args),
                                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=stderr)

    @property
    def stderr(self) -> str:
        return self._err.read_text()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def healthy(self) -> bool:
        assert self.alive, f"replica {self.index} exited\n{self.stderr}"
        try:
            return httpx.get(self.base + "/health", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def metric(self, name: str) -> float:
        """The sum of one series' samples on this replica's /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        body = httpx.get(self.base + "/metrics", timeout=10).text
        return sum(s.value for f in text_string_to_metric_families(body) for s in f.samples if s.name == name)

    def stop(self) -> None:
        """SIGTERM, up to 60 s for a clean shutdown, then SIGKILL."""
        stop_process(self.process)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush."""
        self.process.kill()
        self.process.wait(10)


class Cluster:
    """`replicas` serve processes on one configuration file, started together."""

    def __init__(self, data: dict[str, Any], *, replicas: int, tmp: Path, env: dict[str, str],
                 args: tuple[str, ...] = ()) -> None:
        self.config = tmp / "switchman.yaml"
        self.config.write_text(yaml.safe_dump(data))
        self._start = lambda i: Replica(i, self.config, tmp, env, args)
        self.replicas: list[Replica] = []
        self.count = replicas

    def __enter__(self) -> Cluster:
        self.replicas = [self._start(i) for i in range(self.count)]
        try:
            for replica in self.replicas:
                wait_until(replica.healthy, seconds=90, what=f"replica {replica.index} to serve")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for replica in self.replicas:
            if replica.alive:
                replica.process.send_signal(signal.SIGTERM)
        for replica in self.replicas:
            replica.stop()

    def __iter__(self) -> Iterator[Replica]:
        return iter(self.replicas)

    def __getitem__(self, index: int) -> Replica:
        return self.replicas[index]

    def kill(self, index: int) -> None:
        self.replicas[index].kill()


@dataclass
class Outcome:
    """One request as the load generator saw it."""

    index: int
    replica: int
    status: int | None = None  # None: no answer (the replica died with the request in flight)
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.status == 200

    @property
    def request_id(self) -> str:
        return self.headers["x-switchman-request-id"]

    @property
    def cost(self) -> float:
        return float(self.headers["x-switchman-cost-usd"])


@dataclass
class Run:
    """Every outcome of one `drive`."""

    outcomes: list[Outcome]

    def on(self, replica: int) -> list[Outcome]:
        return [o for o in self.outcomes if o.replica == replica]

    @property
    def answered(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.answered]

    def statuses(self) -> dict[int | None, int]:
        counts: dict[int | None, int] = {}
        for outcome in self.outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        return counts


Request = Callable[[int], tuple[dict[str, Any], dict[str, str]]]


def plain(_: int) -> tuple[dict[str, Any], dict[str, str]]:
    return {"model": "auto", "messages": ASK, "max_tokens": 8}, {}


def drive(cluster: Cluster, *, total: int, concurrency: int, request: Request = plain,
          at: dict[int, Callable[[], None]] | None = None, order: list[int] | None = None) -> Run:
    """Send `total` requests, `concurrency` at a time, round-robin over the replicas in `order`.

    `at[i]` runs (in a thread, while the load goes on) when request i is about to be sent.
    """
    return asyncio.run(_drive(cluster, total, concurrency, request, at or {}, order))


async def _drive(cluster: Cluster, total: int, concurrency: int, request: Request,
                 at: dict[int, Callable[[], None]], order: list[int] | None) -> Run:
    rotation = list(range(cluster.count)) if order is None else list(order)
    rotation = [i for i in rotation if cluster[i].alive]
    outcomes: list[Outcome] = []
    pending = iter(range(total))
    side: list[asyncio.Task[None]] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one(i: int) -> None:
            body, headers = request(i)
            while True:
                replica = rotation[i % len(rotation)]
                outcome = Outcome(i, replica)
                try:
                    response = await client.post(cluster[replica].base + "/v1/chat/completions", json=body,
                                                 headers=headers)
                except httpx.ConnectError:  # refused: out of the rotation, the next replica takes it
                    if replica in rotation and len(rotation) > 1:
                        rotation.remove(replica)
                    continue
                except httpx.TransportError as exc:  # the replica died with this request in flight
                    outcome.error = type(exc).__name__
                    break
                outcome.status = response.status_code
                outcome.headers = dict(response.headers)
                outcome.body = response.json()
                break
            outcomes.append(outcome)

        async def worker() -> None:
            for i in pending:
                if i in at:
                    side.append(asyncio.create_task(asyncio.to_thread(at[i])))
                await one(i)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await asyncio.gather(*side)
    outcomes.sort(key=lambda o: o.index)
    return Run(outcomes)
