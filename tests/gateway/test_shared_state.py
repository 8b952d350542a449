"""Two gateway replicas sharing one Redis (`server.redis_url`): sessions, budgets, rate limits and key revocations
hold across them; Redis killed mid-way costs no request, is logged and counted, and counters come back from the ledger.

Each replica is a `Gateway` with its own uvicorn server on loopback, as two `switchman serve` processes
would be (one ledger, one Redis, one fake upstream); requests alternate between them.
"""

from __future__ import annotations

import concurrent.futures
import copy
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchman._config import parse_config
from switchman.gateway import Gateway, build_app
from switchman.ledger import KeyStore, Ledger, period_bounds
from switchman.testing import FakeUpstream, RedisServer, forget_prefix, unique_prefix

from .conftest import ENV, MASTER_KEY, ServerThread, config_data

SHARED_REDIS = "redis://127.0.0.1:6379/0"
ASK = [{"role": "user", "content": "hello"}]


class Replicas:
    """Two gateways on loopback sharing a ledger and a Redis."""

    def __init__(self, gateways: list[Gateway], urls: list[str]) -> None:
        self.gateways = gateways
        self.urls = urls
        self.clients = [httpx.Client(base_url=url, timeout=30) for url in urls]

    def chat(self, replica: int, *, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
        payload = {"model": "auto", "messages": ASK, **body}
        return self.clients[replica % len(self.clients)].post("/v1/chat/completions", json=payload,
                                                              headers=headers or {})

    def ledger_rows(self) -> list[Any]:
        ledger = self.gateways[0].ledger
        assert ledger is not None
        for gateway in self.gateways:
            assert gateway.ledger is not None
            gateway.ledger.flush_sync(timeout=10)
        return ledger.records()

    def close(self) -> None:
        for client in self.clients:
            client.close()


def replica_config(upstream: FakeUpstream, ledger_url: str, redis_url: str, prefix: str,
                   **server: Any) -> dict[str, Any]:
    data = copy.deepcopy(config_data(upstream, ledger_url))
    data["server"].update({"redis_url": redis_url, "redis": {"key_prefix": prefix, "timeout_s": 1.0, "ping_s": 0.1},
                           "metrics_access": "open", **server})
    data["budgets"].append({"scope": "agent", "name": "pool", "usd": 0.002, "period": "day"})
    return data


@pytest.fixture
def prefix() -> Iterator[str]:
    prefix = unique_prefix()
    yield prefix
    forget_prefix(SHARED_REDIS, prefix)


def start_replicas(stack: ExitStack, data: dict[str, Any], count: int = 2, env: dict[str, str] = ENV) -> Replicas:
    config = parse_config(data)
    gateways = [Gateway.from_config(config, env=env) for _ in range(count)]
    urls = [stack.enter_context(ServerThread(build_app(g), g.config.server.limits)) for g in gateways]
    replicas = Replicas(gateways, urls)
    stack.callback(replicas.close)
    return replicas


@pytest.fixture
def replicas(upstream: FakeUpstream, tmp_path: Path, prefix: str) -> Iterator[Replicas]:
    upstream.clear()
    data = replica_config(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}", SHARED_REDIS, prefix)
    with ExitStack() as stack:
        yield start_replicas(stack, data)
    upstream.clear()


def test_a_session_keeps_its_model_and_escalation_across_replicas(replicas: Replicas) -> None:
    session = {"X-Switchman-Session": f"s-{uuid.uuid4().hex[:8]}"}
    first = replicas.chat(0, headers=session)
    assert first.status_code == 200 and first.headers["x-switchman-model"] == "cheap"
    kept = replicas.chat(1, headers=session)
    assert "session kept cheap" in kept.headers["x-switchman-route-reason"]
    moved = replicas.chat(0, headers={**session, "X-Switchman-Escalate": "1"})
    assert moved.headers["x-switchman-model"] == "mid"
    later = [replicas.chat(i, headers=session) for i in (1, 0, 1)]
    assert [r.headers["x-switchman-model"] for r in later] == ["mid"] * 3  # the escalation holds on both
    assert all("session kept mid" in r.headers["x-switchman-route-reason"] for r in later)


def test_negative_feedback_on_one_replica_escalates_the_session_on_the_other(replicas: Replicas) -> None:
    session = {"X-Switchman-Session": f"s-{uuid.uuid4().hex[:8]}"}
    first = replicas.chat(0, headers=session)
    assert first.headers["x-switchman-model"] == "cheap"
    replicas.ledger_rows()  # the row is written: feedback looks it up
    feedback = replicas.clients[1].post("/v1/feedback", json={
        "request_id": first.headers["x-switchman-request-id"], "score": 0.0})
    assert feedback.status_code == 200, feedback.text
    moved = replicas.chat(0, headers=session)
    assert moved.headers["x-switchman-model"] == "mid"
    assert "negative feedback" in moved.headers["x-switchman-route-reason"]


def test_concurrent_reservations_never_overspend_a_shared_budget(replicas: Replicas, upstream: FakeUpstream) -> None:
    """40 requests at once, half on each replica, against a $0.002 budget: spend stays within one worst case.

    Each answer costs about its worst case (~$0.0002: 100 output tokens at $2/M plus the prompt), so
    about ten fit; two replicas checking only their own counters would each let about ten through.
    """
    upstream.set_reply("mid", " ".join(["word"] * 200))  # cut at max_tokens: 100 output tokens
    body = {"model": "mid", "max_tokens": 100}
    headers = {"X-Switchman-Agent": "pool"}
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda i: replicas.chat(i, headers=headers, **body), range(40)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 429}, statuses
    refused = [r for r in responses if r.status_code == 429]
    assert all(r.json()["error"]["code"] == "budget_exceeded" for r in refused)
    rows = [r for r in replicas.ledger_rows() if r.agent == "pool"]
    answered = [r for r in rows if r.status == "ok"]
    assert len(answered) == statuses.count(200) and len(rows) == 40
    worst = max(r.cost_usd for r in answered)
    spent = sum(r.cost_usd for r in answered)
    assert 0.0002 <= worst <= 0.00025
    assert 0.002 - 2 * worst <= spent <= 0.002 + worst, (spent, len(answered))


def test_an_rpm_limit_holds_across_replicas(upstream: FakeUpstream, tmp_path: Path, prefix: str) -> None:
    """An agent allowed 10 requests a minute: 10 of 16 alternating requests pass, with OpenAI's headers; then 429."""
    data = replica_config(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}", SHARED_REDIS, prefix)
    data["agents"]["metered"] = {"rpm": 10, "tpm": 100_000}
    with ExitStack() as stack:
        replicas = start_replicas(stack, data)
        headers = {"X-Switchman-Agent": "metered"}
        responses = [replicas.chat(i, headers=headers, max_tokens=50) for i in range(16)]
        rows = [r for r in replicas.ledger_rows() if r.agent == "metered"]
    statuses = [r.status_code for r in responses]
    assert sorted(r.status for r in rows) == sorted(
        "ok" if code == 200 else "rejected_rate_limit" for code in statuses)  # one row each, refusals named
    # The bucket refills 1/6 of a request a second: over the few seconds this takes, at most one more fits.
    assert statuses[:10] == [200] * 10 and statuses.count(200) <= 11, statuses
    first = responses[0].headers
    assert first["x-ratelimit-limit-requests"] == "10" and first["x-ratelimit-remaining-requests"] == "9"
    assert first["x-ratelimit-limit-tokens"] == "100000"
    assert int(first["x-ratelimit-remaining-tokens"]) < 100_000 - 50
    refused = responses[-1]
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 0 < float(refused.headers["retry-after"]) <= 6.0
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    assert "agent's rate limit (10 requests and 100000 tokens per minute)" in refused.json()["error"]["message"]


def test_a_rate_limited_request_holds_no_budget_and_a_rate_limit_is_named_first(upstream: FakeUpstream,
                                                                                tmp_path: Path) -> None:
    """On Redis the admission and the budget reservation share one round trip: a request refused by its rate
    limit keeps nothing reserved, and one refused by both is a 429 (the rate limit), as when they ran in turn."""
    import redis

    with RedisServer() as server:
        with ExitStack() as stack:
            data = replica_config(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}", server.url, "sm:")
            data["agents"].update({"metered": {"rpm": 1, "tpm": 100_000}, "broke": {"rpm": 1, "tpm": 100_000}})
            data["budgets"] += [{"scope": "agent", "name": "metered", "usd": 1.0, "period": "day"},
                                {"scope": "agent", "name": "broke", "usd": 1e-9, "period": "day"}]
            replicas = start_replicas(stack, data)
            metered = [replicas.chat(i, headers={"X-Switchman-Agent": "metered"}, max_tokens=20).status_code
                       for i in range(3)]
            broke = [replicas.chat(i, headers={"X-Switchman-Agent": "broke"}, max_tokens=20) for i in range(2)]
        client = redis.Redis.from_url(server.url)  # the replicas are closed: every settle is written
        counter = client.hgetall(_counter_key("metered"))
        held = client.hlen(_counter_key("metered") + ":held")
        client.close()
    assert metered == [200, 429, 429]
    assert float(counter[b"reserved"]) == 0.0 and held == 0 and float(counter[b"spent"]) > 0
    assert broke[0].json()["error"]["code"] == "budget_exceeded"  # admitted, but the budget refused
    assert broke[1].status_code == 429 and broke[1].json()["error"]["code"] == "rate_limit_exceeded"


def test_a_turns_session_read_admission_and_reservation_share_one_round_trip(
    upstream: FakeUpstream, tmp_path: Path, prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request under an agent's budget and rate limit, in a session: its session read, its admission and its
    reservation go to Redis in one round trip (the decision steered by this replica's copy of the session, then
    by the state read)."""
    import switchman.state._redis_wire as wire  # noqa: PLC2701  (looking at the round trips)

    trips: list[list[tuple[Any, ...]]] = []
    real = wire.Trip.send

    def seen(trip: Any, pipe: Any) -> None:
        trips.append([args for args, _, _ in trip.batch])
        real(trip, pipe)

    monkeypatch.setattr(wire.Trip, "send", seen)
    data = replica_config(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}", SHARED_REDIS, prefix)
    data["agents"]["metered"] = {"rpm": 1000, "tpm": 1_000_000}
    data["budgets"].append({"scope": "agent", "name": "metered", "usd": 1.0, "period": "day"})
    session = f"s-{uuid.uuid4().hex[:8]}"
    headers = {"X-Switchman-Agent": "metered", "X-Switchman-Session": session}
    with ExitStack() as stack:
        replicas = start_replicas(stack, data)
        answers = [replicas.chat(i, headers=headers, max_tokens=20) for i in range(4)]
    assert [r.status_code for r in answers] == [200] * 4
    assert all(r.headers["x-ratelimit-limit-requests"] == "1000" for r in answers)
    reads = [trip for trip in trips if any(args[0] == "GET" and session in str(args[1]) for args in trip)]
    assert len(reads) == 4, trips
    for trip in reads:  # the read, the rate-limit script and the budget script, written together
        assert sum(args[0] == "EVALSHA" for args in trip) >= 2, trip


def test_a_turn_whose_session_moved_on_another_replica_is_reserved_for_the_model_it_moved_to(
    upstream: FakeUpstream, tmp_path: Path, prefix: str,
) -> None:
    """Replica 1 last saw the session on `cheap`; replica 0 escalated it to `mid`. On replica 1 the next turn is
    reserved for `mid` (read in the same round trip as the first reservation, for `cheap`): under a budget that
    fits `cheap` but not `mid` it is refused as the budget's own refusal, and nothing stays reserved."""
    import redis

    data = replica_config(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}", SHARED_REDIS, prefix)
    data["budgets"].append({"scope": "agent", "name": "tight", "usd": 0.0001, "period": "day"})
    session = {"X-Switchman-Session": f"s-{uuid.uuid4().hex[:8]}"}
    tight = {**session, "X-Switchman-Agent": "tight"}
    with ExitStack() as stack:
        replicas = start_replicas(stack, data)
        first = replicas.chat(1, headers=tight, max_tokens=100)  # cheap's worst case (~$0.00002) fits
        assert first.status_code == 200 and first.headers["x-switchman-model"] == "cheap"
        moved = replicas.chat(0, headers={**session, "X-Switchman-Escalate": "1"}, max_tokens=100)
        assert moved.status_code == 200 and moved.headers["x-switchman-model"] == "mid"
        refused = replicas.chat(1, headers=tight, max_tokens=100)  # mid's worst case (~$0.0002) does not
        kept = replicas.chat(1, headers=session, max_tokens=100)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    message = refused.json()["error"]["message"]
    assert "budget 'tight' exceeded" in message and "needs about $0.0002" in message, message
    assert kept.headers["x-switchman-model"] == "mid" and "session kept mid" in kept.headers["x-switchman-route-reason"]
    client = redis.Redis.from_url(SHARED_REDIS)  # the replicas are closed: every settle is written
    counter = client.hgetall(prefix + _counter_key("tight").removeprefix("sm:"))
    client.close()
    assert float(counter[b"reserved"]) == 0.0 and float(counter[b"spent"]) > 0


@pytest.mark.parametrize("on_exceed", ["block", "downgrade"])
def test_a_moved_turn_is_not_charged_for_the_hold_of_the_model_it_left(
    upstream: FakeUpstream, tmp_path: Path, prefix: str, on_exceed: str,
) -> None:
    """The guess's hold (for `cheap`) leaves Redis before the moved turn's (for `mid`) is checked: under a budget
    that fits `mid`'s worst case alone but not both, the turn is served on `mid`, neither refused nor downgraded
    off the session's model (as when the session is read first)."""
    data = replica_config(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}", SHARED_REDIS, prefix)
    budget: dict[str, Any] = {"scope": "agent", "name": "snug", "usd": 0.0021, "period": "day"}
    if on_exceed == "downgrade":
        budget.update(on_exceed="downgrade", downgrade_to="cheap")
    data["budgets"].append(budget)
    session = {"X-Switchman-Session": f"s-{uuid.uuid4().hex[:8]}"}
    with ExitStack() as stack:
        replicas = start_replicas(stack, data)
        first = replicas.chat(1, headers=session, max_tokens=1000)
        assert first.status_code == 200 and first.headers["x-switchman-model"] == "cheap"
        moved = replicas.chat(0, headers={**session, "X-Switchman-Escalate": "1"}, max_tokens=1000)
        assert moved.status_code == 200 and moved.headers["x-switchman-model"] == "mid"
        third = replicas.chat(1, headers={**session, "X-Switchman-Agent": "snug"}, max_tokens=1000)
    assert third.status_code == 200, third.text
    assert third.headers["x-switchman-model"] == "mid", third.headers.get("x-switchman-route-reason")


def test_a_turn_follows_a_concurrent_turn_that_moved_the_session_while_its_read_was_in_flight(
    upstream: FakeUpstream, tmp_path: Path, prefix: str,
) -> None:
    """The turn is steered again after its read whatever the read found: another turn of the same session that
    ended on this replica meanwhile (local copy and Redis both moved to `mid`) is followed, not the guess made
    from the local copy before (`cheap`)."""
    import asyncio
    from dataclasses import replace

    data = replica_config(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}", SHARED_REDIS, prefix)
    session = {"X-Switchman-Session": f"s-{uuid.uuid4().hex[:8]}"}
    with ExitStack() as stack:
        replicas = start_replicas(stack, data, count=1)
        first = replicas.chat(0, headers=session)
        assert first.status_code == 200 and first.headers["x-switchman-model"] == "cheap"
        keeper = replicas.gateways[0].dispatcher.sessions
        shared = keeper.shared
        assert shared is not None

        async def read_while_another_turn_ends(session_id: str) -> Any:
            state = keeper.store.get(session_id, keeper.clock())
            assert state is not None and state.model == "cheap"
            moved = replace(state, model="mid", turns=state.turns + 1)
            keeper.store.put(session_id, moved)  # what the other turn's `observe` writes, locally and in Redis
            await shared.put(session_id, moved)
            return await shared.get_soon(session_id)

        def pull_soon(session_id: str) -> asyncio.Future[Any]:
            return asyncio.ensure_future(read_while_another_turn_ends(session_id))

        keeper.pull_soon = pull_soon  # type: ignore[method-assign]
        second = replicas.chat(0, headers=session)
    assert second.status_code == 200, second.text
    assert second.headers["x-switchman-model"] == "mid", second.headers["x-switchman-route-reason"]


def test_a_revoked_key_is_refused_by_every_replica_at_once(upstream: FakeUpstream, tmp_path: Path, prefix: str) -> None:
    """Revoked on replica 0 (as its dashboard does): replica 1 refuses it long before its next key refresh (60 s)."""
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    store = KeyStore(ledger_url)
    info, secret = store.create("ci-bot")
    store.close()
    data = replica_config(upstream, ledger_url, SHARED_REDIS, prefix, key_refresh_s=60.0)
    with ExitStack() as stack:
        replicas = start_replicas(stack, data, env={**ENV, "SWITCHMAN_MASTER_KEY": MASTER_KEY})
        auth = {"Authorization": f"Bearer {secret}"}
        assert [replicas.chat(i, headers=auth).status_code for i in (0, 1)] == [200, 200]
        other = replicas.gateways[1]
        assert other.keyring is not None and other.revocations is not None
        reads = other.keyring.reads
        keys = replicas.gateways[0].keys
        assert keys is not None and keys.revoke(info.id)
        started = time.monotonic()
        while other.revocations.received == 0 and time.monotonic() - started < 10:
            time.sleep(0.005)
        assert other.revocations.received == 1, f"not heard within {time.monotonic() - started:.1f} s"
        refused = replicas.chat(1, headers=auth)
        assert refused.status_code == 401, refused.text
        assert other.keyring.reads == reads  # not re-read from the database: the broadcast did it
        assert replicas.chat(0, headers=auth).status_code == 401


def test_redis_killed_mid_way_costs_no_request_and_counters_come_back_from_the_ledger(
    upstream: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A Redis of the test's own, killed between requests: zero 5xx, one log line per replica, the metric; restarted
    (empty), both replicas resync and the budget counter is the ledger's spend again."""

    caplog.set_level(logging.WARNING, "switchman.state")
    headers = {"X-Switchman-Agent": "pool", "X-Switchman-Session": f"s-{uuid.uuid4().hex[:8]}"}
    with RedisServer() as server, ExitStack() as stack:
        data = replica_config(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}", server.url, "sm:")
        replicas = start_replicas(stack, data)
        before = [replicas.chat(i, headers=headers, max_tokens=20) for i in range(4)]
        server.stop()
        during = [replicas.chat(i, headers=headers, max_tokens=20) for i in range(10)]
        assert [r.status_code for r in before + during] == [200] * 14
        assert {r.headers["x-switchman-model"] for r in during} == {"cheap"}  # the session, kept locally
        for url in replicas.urls:
            metrics = httpx.get(url + "/metrics").text
            assert "switchman_redis_up 0.0" in metrics
            assert "switchman_redis_errors_total" in metrics
        assert all(not g.redis.up for g in replicas.gateways if g.redis is not None)
        spent = sum(r.cost_usd for r in replicas.ledger_rows() if r.agent == "pool")  # flushed: the record is whole
        server.start()
        deadline = time.monotonic() + 20
        while not all(g.redis is not None and g.redis.up for g in replicas.gateways):
            assert time.monotonic() < deadline, "the replicas did not notice Redis is back"
            time.sleep(0.02)
        counter = _wait_for_counter(server.url, "pool", spent)  # rebuilt from the ledger (not only "up")
        assert float(counter[b"reserved"]) == 0.0
        after = [replicas.chat(i, headers=headers, max_tokens=20) for i in range(2)]
        assert [r.status_code for r in after] == [200, 200]
    lines = [r.getMessage() for r in caplog.records if "redis unavailable" in r.getMessage()]
    assert len(lines) == 2, lines  # one per replica
    # the error redis-py reports may differ between replicas (a refused connect, a reset read): the line's frame may not
    assert all(line.startswith(f"redis unavailable at {server.url}: ") and line.endswith("; degrading to local state")
               for line in lines), lines
    assert sum("is up; shared state in use" in r.getMessage() for r in caplog.records) >= 4  # start and return, each


def _counter_key(agent: str) -> str:
    start, _ = period_bounds(time.time(), "day")
    return f"sm:{{budget:agent:{agent}}}:day:{int(start)}"


def _wait_for_counter(url: str, agent: str, spent: float) -> dict[bytes, bytes]:
    """The agent budget's counter in Redis once its `spent` is `spent` (10 s at most)."""
    import redis

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    try:
        while True:
            counter: dict[bytes, bytes] = client.hgetall(_counter_key(agent))
            if b"spent" in counter and float(counter[b"spent"]) == pytest.approx(spent, rel=1e-6, abs=1e-12):
                return counter
            assert time.monotonic() < deadline, (counter, spent)
            time.sleep(0.02)
    finally:
        client.close()


def test_nothing_stays_reserved_after_clients_leave_and_redis_restarts(upstream: FakeUpstream, tmp_path: Path) -> None:
    """Streams the clients drop mid-way, Redis killed and restarted in the middle: once the replicas are closed
    (settles in flight drained), the budget's `reserved` is 0 and its `spent` is the ledger's."""
    import redis

    upstream.set_reply("mid", " ".join(["word"] * 60))
    headers = {"X-Switchman-Agent": "pool"}
    body = {"model": "mid", "max_tokens": 100, "stream": True, "messages": ASK}
    with RedisServer() as server:
        with ExitStack() as stack:
            data = replica_config(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}", server.url, "sm:")
            data["budgets"][-1]["usd"] = 1.0
            replicas = start_replicas(stack, data)

            def drop_after_first_chunk(i: int) -> None:
                upstream.inject("slow_stream", model="mid", seconds=0.05)
                with replicas.clients[i % 2].stream("POST", "/v1/chat/completions", json=body,
                                                    headers=headers) as response:
                    assert response.status_code == 200
                    next(response.iter_bytes())  # then the client leaves

            for i in range(4):
                drop_after_first_chunk(i)
            assert [replicas.chat(i, headers=headers).status_code for i in range(2)] == [200, 200]
            server.stop()
            for i in range(2):
                drop_after_first_chunk(i)
            server.start()
            deadline = time.monotonic() + 20
            while not all(g.redis is not None and g.redis.up for g in replicas.gateways):
                assert time.monotonic() < deadline, "the replicas did not notice Redis is back"
                time.sleep(0.02)
            for i in range(4):
                drop_after_first_chunk(i)
        ledger = Ledger.from_url(data["server"]["ledger_url"])  # after shutdown: every row is written
        rows = [r for r in ledger.records() if r.agent == "pool"]
        ledger.close_sync()
        spent = sum(r.cost_usd for r in rows)
        assert len(rows) == 12 and spent > 0
        client = redis.Redis.from_url(server.url)
        counter = client.hgetall(_counter_key("pool"))
        held = client.hlen(_counter_key("pool") + ":held")
        client.close()
    assert float(counter[b"reserved"]) == 0.0 and held == 0
    assert float(counter[b"spent"]) == pytest.approx(spent, rel=1e-6)


def one_replica(upstream: FakeUpstream, tmp_path: Path, prefix: str) -> Gateway:
    """A replica on the shared Redis, not served: its dispatcher is driven in process."""
    data = replica_config(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}", SHARED_REDIS, prefix)
    gateway = Gateway.from_config(parse_config(data), env=ENV)
    assert gateway.dispatcher.sessions.shared is not None and gateway.redis is not None
    return gateway


def run_on(gateway: Gateway, main: Callable[[], Awaitable[None]]) -> None:
    """Run `main` in an event loop of its own, then close the replica's ledger."""
    import anyio

    anyio.run(main)
    assert gateway.ledger is not None
    gateway.ledger.close_sync()


def recorded_reads(gateway: Gateway) -> list[Any]:
    """The futures of every session read the replica's keeper queues (`pull_soon`) from now on."""
    keeper = gateway.dispatcher.sessions
    reads: list[Any] = []
    pull_soon = keeper.pull_soon

    def kept_pull_soon(session_id: str) -> Any:
        reads.append(pull_soon(session_id))
        return reads[-1]

    keeper.pull_soon = kept_pull_soon  # type: ignore[method-assign]
    return reads


async def moved_session(gateway: Gateway, local_model: str) -> None:
    """Start the replica's link; session `s` is on `local_model` in its copy (turn 1) and moved to `mid` in Redis
    by another replica (turn 2)."""
    from switchman.routing import SessionState

    keeper, link = gateway.dispatcher.sessions, gateway.redis
    assert link is not None and keeper.shared is not None
    await link.start()
    now = keeper.clock()
    keeper.store.put("s", SessionState(model=local_model, updated_at=now, context_tokens=1, turns=1))
    await keeper.shared.put("s", SessionState(model="mid", updated_at=now, context_tokens=1, turns=2))


def test_a_pull_started_soon_reads_in_the_round_trip_without_a_task(upstream: FakeUpstream, tmp_path: Path,
                                                                   prefix: str) -> None:
    """`pull_soon` queues the read (a plain future, no task) and `pulled` applies it as `pull` would; behind a
    feedback mark of this replica it is a `pull` (a task that waits for the mark); Redis down: the local copy
    stays, and an abandoned read's failure is retrieved, not left to a "never retrieved" warning."""
    import asyncio


    from switchman.routing import SessionState

    gateway = one_replica(upstream, tmp_path, prefix)
    keeper = gateway.dispatcher.sessions

    async def main() -> None:
        link, shared = gateway.redis, keeper.shared
        assert link is not None and shared is not None
        await link.start()
        now = keeper.clock()
        keeper.store.put("s", SessionState(model="mid", updated_at=now, context_tokens=1, turns=3))
        await shared.put("s", SessionState(model="big", updated_at=now, context_tokens=1, turns=4))
        pulling = keeper.pull_soon("s")
        assert not isinstance(pulling, asyncio.Task)
        await keeper.pulled("s", pulling)
        local = keeper.store.get("s", keeper.clock())
        assert local is not None and local.model == "big" and local.turns == 4
        keeper.record_feedback("s", 0.0)  # a mark on its way: the read waits for it
        marked = keeper.pull_soon("s")
        assert isinstance(marked, asyncio.Task)
        await keeper.pulled("s", marked)
        local = keeper.store.get("s", keeper.clock())
        assert local is not None and local.pending is not None and local.pending.startswith("negative feedback")
        link.up = False  # Redis gone: the read fails at once, the local copy decides
        failed = keeper.pull_soon("s")
        await keeper.pulled("s", failed)
        assert keeper.store.get("s", keeper.clock()) == local
        dropped = keeper.pull_soon("s")
        await asyncio.sleep(0)
        keeper.drop_pull(dropped)
        assert dropped.done() and not dropped.cancelled()
        assert dropped._log_traceback is False  # noqa: SLF001  (its failure was retrieved)
        link.up = True
        queued = keeper.pull_soon("s")
        keeper.drop_pull(queued)
        assert queued.cancelled()
        await link.aclose()

    run_on(gateway, main)


@pytest.mark.parametrize("read_arrived", [True, False])
def test_a_turn_cancelled_in_its_admission_records_the_decision_after_its_read(
    upstream: FakeUpstream, tmp_path: Path, prefix: str, read_arrived: bool,
) -> None:
    """Cancelled inside the admission and the reservation: the ledger row's decision is the one after the session
    read when the read has come (the session moved to `mid` on another replica), else the guess from the local copy
    (`cheap`), and the read still on its way is abandoned."""
    import asyncio

    from switchman.gateway._context import RequestContext  # noqa: PLC2701
    from switchman.gateway._exchange import Exchange  # noqa: PLC2701

    gateway = one_replica(upstream, tmp_path, prefix)
    dispatcher = gateway.dispatcher
    reads = recorded_reads(gateway)

    async def cancelled(*_: object) -> None:
        if read_arrived:
            await asyncio.wait_for(asyncio.shield(reads[0]), 5)  # the round trip came back first
        raise asyncio.CancelledError

    dispatcher._admit_and_reserve = cancelled  # type: ignore[method-assign]  # noqa: SLF001

    async def main() -> None:
        await moved_session(gateway, "cheap")
        exchange = Exchange(RequestContext(request_id="r1", session="s"), dispatcher.sessions.clock())
        with pytest.raises(asyncio.CancelledError):
            await dispatcher._decide_pulled(exchange, {"model": "auto", "messages": ASK},  # noqa: SLF001
                                            RequestContext(request_id="r1", session="s"))
        assert exchange.decision is not None
        assert exchange.decision.model == ("mid" if read_arrived else "cheap"), exchange.decision.reason
        assert reads[0].done() and reads[0].cancelled() is not read_arrived
        assert gateway.redis is not None
        await gateway.redis.aclose()

    run_on(gateway, main)


def test_a_pulled_session_state_is_ordered_by_turns_not_clocks(upstream: FakeUpstream, tmp_path: Path,
                                                               prefix: str) -> None:
    """The keeper's pull keeps a local state with more turns (written while Redis was away) and takes a shared
    one with as many or more, whatever their clocks say."""

    from switchman.routing import SessionState

    gateway = one_replica(upstream, tmp_path, prefix)
    keeper = gateway.dispatcher.sessions

    async def main() -> None:
        assert gateway.redis is not None and keeper.shared is not None
        await gateway.redis.start()
        now = keeper.clock()
        keeper.store.put("s", SessionState(model="mid", updated_at=now - 10, context_tokens=1, turns=3))
        await keeper.shared.put("s", SessionState(model="cheap", updated_at=now, context_tokens=1, turns=2))
        await keeper.pull("s")
        local = keeper.store.get("s", keeper.clock())
        assert local is not None and local.model == "mid"  # more turns, an older clock: kept
        await keeper.shared.put("s", SessionState(model="big", updated_at=now - 20, context_tokens=1, turns=3))
        await keeper.pull("s")
        local = keeper.store.get("s", keeper.clock())
        assert local is not None and local.model == "big"  # as many turns: the shared state wins
        await gateway.redis.aclose()

    run_on(gateway, main)


def test_the_readme_settings_load_and_need_nothing_else() -> None:
    """The README's `server.redis_url` block parses; without it there is no link and the state stays in process."""
    import re

    import yaml

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- config: shared-state -->\n```yaml\n(.*?)```", readme, re.S)
    assert match is not None
    server = parse_config(yaml.safe_load(match.group(1))).server
    assert server.redis_url == "redis://10.0.0.5:6379/0"
    assert (server.redis.timeout_s, server.redis.ping_s, server.redis.key_prefix) == (0.05, 1.0, "sm:")
    assert parse_config({}).server.redis_url is None


def test_a_turn_cancelled_while_its_admission_is_on_its_way_keeps_its_budget_downgrade(
    upstream: FakeUpstream, tmp_path: Path, prefix: str,
) -> None:
    """The reservation answered with a budget downgrade (to `cheap`), the read came back and kept the session's
    model (`mid`), and the client left while the rate-limit admission was still on its way: the ledger row has the
    downgrade, as the turn would have had (a downgrade stands when the read keeps the model), not `mid`."""
    import asyncio
    from types import SimpleNamespace

    import anyio

    from switchman.gateway._context import RequestContext  # noqa: PLC2701
    from switchman.gateway._exchange import Exchange  # noqa: PLC2701
    from switchman.routing import Decision

    gateway = one_replica(upstream, tmp_path, prefix)
    dispatcher = gateway.dispatcher
    reads = recorded_reads(gateway)
    admitting = asyncio.Event()

    async def downgraded(exchange: Exchange, request: object, decision: Decision) -> Decision:
        return Decision(model="cheap", reason=f"budget downgrade from {decision.model}", strategy="budget",
                        route=decision.route, candidates=decision.candidates, excluded=decision.excluded)

    async def admit(context: object, tokens: int) -> None:
        admitting.set()
        await asyncio.sleep(3600)  # a second limit's round trip, still on its way when the client leaves

    dispatcher._reserve = downgraded  # type: ignore[method-assign]  # noqa: SLF001
    dispatcher.callers = SimpleNamespace(admit=admit)  # type: ignore[assignment]

    async def main() -> None:
        await moved_session(gateway, "mid")
        exchange = Exchange(RequestContext(request_id="r1", session="s"), dispatcher.sessions.clock())
        deciding = asyncio.ensure_future(dispatcher._decide_pulled(  # noqa: SLF001
            exchange, {"model": "auto", "messages": ASK}, RequestContext(request_id="r1", session="s")))
        with anyio.fail_after(5):
            await admitting.wait()
            while not reads or not reads[0].done():
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)  # the reservation answered too
        deciding.cancel()
        with pytest.raises(asyncio.CancelledError):
            await deciding
        assert exchange.decision is not None
        assert (exchange.decision.model, exchange.decision.strategy) == ("cheap", "budget"), exchange.decision.reason
        assert gateway.redis is not None
        await gateway.redis.aclose()

    run_on(gateway, main)


@pytest.mark.parametrize("case", ["cancelled_in_admission", "cancelled_waiting_for_read", "downgraded_after_read",
                                  "read_back_as_the_client_left"])
def test_a_cancelled_turn_never_writes_a_session_state_older_than_the_shared_one(
    upstream: FakeUpstream, tmp_path: Path, prefix: str, case: str,
) -> None:
    """Another replica moved session `s` to `mid` (turn 2) while this replica's copy is `cheap` (turn 1). A turn
    cancelled before its session read arrived (in its admission, or admitted and waiting for the read) never saw
    that state: it writes none (not `cheap` at turn 2 over it, as its copy would give), so the session's next turn
    anywhere is still on `mid`. A turn cancelled after its read arrived writes its turn on top of the state read
    (turn 3): on `cheap` when the reservation downgraded it, else on `mid`, the decision after the read (also when
    the read came back in the same turn of the event loop as the client's leaving)."""
    import asyncio

    from switchman.gateway._context import RequestContext  # noqa: PLC2701
    from switchman.gateway._exchange import Exchange  # noqa: PLC2701
    from switchman.routing import Decision

    gateway = one_replica(upstream, tmp_path, prefix)
    dispatcher, keeper = gateway.dispatcher, gateway.dispatcher.sessions
    reads = recorded_reads(gateway)
    admitted = asyncio.Event()

    async def admit_and_reserve(exchange: Exchange, request: object, decision: Decision) -> None:
        if case in ("cancelled_waiting_for_read", "read_back_as_the_client_left"):
            admitted.set()
            return  # the turn waits for its read next, and the client leaves meanwhile
        if case == "downgraded_after_read":
            await asyncio.wait_for(asyncio.shield(reads[0]), 5)  # the round trip came back first
            exchange.decision = Decision(model="cheap", reason=f"budget downgrade from {decision.model}",
                                         strategy="budget", route=decision.route, candidates=decision.candidates,
                                         excluded=decision.excluded)
        raise asyncio.CancelledError  # the client left

    dispatcher._admit_and_reserve = admit_and_reserve  # type: ignore[method-assign]  # noqa: SLF001
    if case in ("cancelled_waiting_for_read", "read_back_as_the_client_left"):

        def pull_soon(session_id: str) -> asyncio.Future[Any]:  # a read that does not come back before the client leaves
            reads.append(asyncio.get_running_loop().create_future())
            return reads[-1]

        keeper.pull_soon = pull_soon  # type: ignore[method-assign]

    async def main() -> None:
        await moved_session(gateway, "cheap")
        assert keeper.shared is not None and gateway.redis is not None
        turn = asyncio.ensure_future(dispatcher._begin(  # noqa: SLF001
            {"model": "auto", "messages": ASK}, RequestContext(request_id="r1", session="s"), pull=True))
        if case in ("cancelled_waiting_for_read", "read_back_as_the_client_left"):
            await asyncio.wait_for(admitted.wait(), 5)
            if case == "read_back_as_the_client_left":
                reads[0].set_result(await keeper.shared.get_soon("s"))  # the turn wakes up cancelled all the same
            turn.cancel()
        with pytest.raises(asyncio.CancelledError):
            await turn
        assert reads[0].cancelled() is case.startswith("cancelled")
        await keeper.settled("s")
        stored = await keeper.shared.get("s")
        assert stored is not None
        if case == "downgraded_after_read":
            assert (stored.model, stored.turns, stored.last_request_id) == ("cheap", 3, "r1")
        elif case == "read_back_as_the_client_left":
            assert (stored.model, stored.turns, stored.last_request_id) == ("mid", 3, "r1")
        else:
            assert (stored.model, stored.turns) == ("mid", 2)
        del keeper.pull_soon  # the keeper's own read again
        await keeper.pull("s")  # the session's next turn on this replica follows the shared state
        local = keeper.store.get("s", keeper.clock())
        assert local is not None and local.turns == stored.turns and local.model == stored.model
        await gateway.redis.aclose()

    run_on(gateway, main)
