"""The rollup rows a batch binds: exactly what the straightforward per-slice sum gives (values and types)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import create_engine

from switchman.ledger import Ledger, LedgerRecord, _rollup
from switchman.ledger._rollup import COUNT_MEASURES, DAY, HOUR, MEASURES, SLICES, RollupBatch, bucket_of, fact


def _reference_rows(batch: RollupBatch) -> list[tuple[Any, ...]]:
    """The rollup rows as first written: every slice and grain summed on its own, counts made int per row."""
    rows: dict[tuple[str, int, int, str, str], list[float]] = {}
    for (hour, route, agent, model, key_id, _), sums in batch.groups.items():
        if sums[1]:
            sums = [sums[0] if i == 1 else v for i, v in enumerate(sums)]
        if sums[2]:
            sums = [sums[0] if i == 2 else v for i, v in enumerate(sums)]
        day = hour // DAY * DAY
        values = {"route": route, "agent": agent, "model": model, "key_id": key_id}
        for name, fields in SLICES.items():
            v1 = values[fields[0]] if fields else ""
            v2 = values[fields[1]] if len(fields) > 1 else ""
            for grain, bucket in ((HOUR, hour), (DAY, day)):
                row_key = (name, grain, bucket, v1, v2)
                found = rows.get(row_key)
                rows[row_key] = list(sums) if found is None else [a + b for a, b in zip(found, sums, strict=True)]
    return [
        (*key, *[int(v) if name in COUNT_MEASURES else v for name, v in zip(MEASURES, sums, strict=True)])
        for key, sums in sorted(rows.items())
    ]


def _records(rng: random.Random, n: int) -> list[LedgerRecord]:
    names = [None, "", "a", "b", "c"]
    return [
        LedgerRecord(
            time=1_700_000_000.0 + rng.choice([0, 1, 3599, 3601, 86_399, 86_401, 200_000]) + rng.random(),
            route=rng.choice(names), agent=rng.choice(names), model=rng.choice(names), key_id=rng.choice(names),
            status=rng.choice(["ok", "ok", "error", "stream_error", "rejected_budget", "bad_request", "client_disconnected"]),
            input_tokens=rng.randrange(0, 5000), output_tokens=rng.randrange(0, 5000),
            cost_usd=rng.random() / 7, baseline_cost_usd=rng.choice([None, rng.random() / 3]),
            latency_ms=rng.random() * 900, ttft_ms=rng.choice([None, rng.random() * 90]),
            fallback_chain=tuple(rng.sample(["a", "b", "c"], rng.randrange(0, 4))), escalated=rng.random() < 0.2,
            scores=(("a", rng.choice([None, rng.random()]), 0.1), ("b", 0.5, None)),
            shadow_model=rng.choice([None, "b"]), shadow_quality=rng.choice([None, rng.random()]),
            shadow_cost_usd=rng.choice([None, rng.random() / 9]), session=rng.choice([None, "s1", "s2"]),
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize("seed", range(40))
def test_rollup_rows_bound_are_the_per_slice_sums(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    batch = RollupBatch(fact(rec) for rec in _records(rng, rng.choice([1, 2, 5, 40, 300])))
    expected = _reference_rows(batch)
    bound: list[list[tuple[Any, ...]]] = []
    monkeypatch.setattr(_rollup, "_upsert", lambda _conn, _sql, rows: bound.append(rows))
    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        batch.write(conn)
        batch.write(conn)  # writing does not change the batch (a retried batch binds the same rows)
    half = len(bound) // 2
    assert bound[:half] == bound[half:]
    got = bound[0]
    assert [tuple(map(repr, row)) for row in got] == [tuple(map(repr, row)) for row in expected]
    assert [tuple(type(v) for v in row) for row in got] == [tuple(type(v) for v in row) for row in expected]


def _reference_fact(rec: Any) -> tuple[Any, ...]:
    """`fact` as first written."""
    model, chosen = rec.model, None
    for name, quality, _ in rec.scores:
        if name == model and quality is not None:
            chosen = float(quality)
    shadow = rec.shadow_model is not None
    return (
        float(rec.time), str(rec.route or ""), str(rec.agent or ""), str(model or ""), str(rec.key_id or ""),
        str(rec.status), int(rec.input_tokens), int(rec.output_tokens), float(rec.cost_usd),
        float(rec.cost_usd if rec.baseline_cost_usd is None else rec.baseline_cost_usd), float(rec.latency_ms),
        None if rec.ttft_ms is None else float(rec.ttft_ms), max(len(rec.fallback_chain) - 1, 0),
        int(bool(rec.escalated)), chosen, shadow, float(rec.shadow_cost_usd or 0.0) if shadow else 0.0,
        None if not shadow or rec.shadow_quality is None else float(rec.shadow_quality),
        None if rec.session is None else str(rec.session),
    )


@pytest.mark.parametrize("seed", range(10))
def test_fact_is_the_reference_fact(seed: int) -> None:
    rng = random.Random(seed)
    odd: list[dict[str, Any]] = [  # values a caller may pass despite the types: coerced (or refused) alike
        {"escalated": 2}, {"escalated": None}, {"fallback_chain": ["a", "b"]}, {"fallback_chain": None},
        {"shadow_model": "m", "shadow_cost_usd": 0, "shadow_quality": 1}, {"shadow_model": "", "shadow_cost_usd": None},
        {"ttft_ms": 0}, {"baseline_cost_usd": 0}, {"cost_usd": "1.5"}, {"input_tokens": 3.0}, {"session": 7},
        {"route": 0}, {"time": "x"},
    ]
    for rec in _records(rng, 200):
        for fields in [{}, rng.choice(odd)]:
            changed = replace(rec, **fields)
            try:
                expected: Any = _reference_fact(changed)
            except (TypeError, ValueError) as exc:
                expected = type(exc)
            try:
                got: Any = fact(changed)
            except (TypeError, ValueError) as exc:
                got = type(exc)
            assert repr(got) == repr(expected)


def test_a_time_no_hour_holds_is_refused_by_fact() -> None:
    for moment in (math.inf, -math.inf, math.nan):
        with pytest.raises(ValueError, match="time is not finite"):
            fact(LedgerRecord(time=moment))


def test_bucket_of_infinity_is_the_slowest_bucket() -> None:
    assert bucket_of(math.inf) == bucket_of(2.0 ** 30) == bucket_of(1e300) == 120
    assert bucket_of(2.0 ** 30 - 1) == min(int(math.log2(2.0 ** 30 - 1) * 4), 120)
    assert bucket_of(math.nan) == bucket_of(0.5) == 0


def test_records_the_rollups_cannot_bucket_do_not_stop_the_writer(
    open_ledger: Callable[..., Ledger], db_url: str
) -> None:
    """An infinite latency is summed in the slowest bucket; a NaN or infinite time, or a count no int holds, is
    refused as invalid."""
    ledger = open_ledger(db_url)
    ledger.start_sync()
    ledger.record(LedgerRecord(request_id="slow", model="m", latency_ms=math.inf))
    ledger.record(LedgerRecord(request_id="never", model="m", time=math.inf))
    ledger.record(LedgerRecord(request_id="nan", model="m", time=math.nan))
    ledger.record(LedgerRecord(request_id="tokens", model="m", input_tokens=math.inf))  # type: ignore[arg-type]
    ledger.record(LedgerRecord(request_id="next", model="m", latency_ms=3.0))
    assert ledger.flush_sync(timeout=10)
    ledger.close_sync()
    assert (ledger.stats.written, ledger.stats.discarded) == (2, 3)
    stored = open_ledger(db_url).records()
    assert [(r.request_id, r.latency_ms) for r in stored] == [("slow", math.inf), ("next", 3.0)]


@pytest.mark.parametrize(
    "fields",
    [{"input_tokens": 10**400}, {"output_tokens": 2**63}, {"input_tokens": -(2**63) - 1}, {"time": 1e300},
     {"time": -1e300}],
    ids=["tokens-beyond-float", "tokens-beyond-bigint", "negative-tokens-beyond-bigint", "time-far", "time-far-back"],
)
def test_a_record_beyond_the_rollup_columns_is_refused_and_the_rest_of_its_batch_written(
    open_ledger: Callable[..., Ledger], db_url: str, fields: dict[str, Any]
) -> None:
    """Finite values no rollup column holds (an hour bucket or token sum beyond BIGINT, a count beyond float) are
    refused as invalid records: before, they raised OverflowError in the batch's sums or the driver, stopping the
    writer thread with the whole batch unwritten."""
    ledger = open_ledger(db_url)
    ledger.start_sync()
    ledger.record(LedgerRecord(request_id="before", model="m", latency_ms=3.0))
    ledger.record(LedgerRecord(request_id="bad", model="m", **fields))
    ledger.record(LedgerRecord(request_id="after", model="m", latency_ms=3.0))
    assert ledger.flush_sync(timeout=10)
    assert (ledger.stats.written, ledger.stats.discarded) == (2, 1)
    ledger.record(LedgerRecord(request_id="later", model="m"))  # the writer still runs
    assert ledger.flush_sync(timeout=10)
    assert [r.request_id for r in ledger.records()] == ["before", "after", "later"]
    assert ledger.views.totals(since=0.0)[0].requests == 3


def test_token_counts_and_times_inside_the_limits_are_kept() -> None:
    edge = fact(LedgerRecord(time=-(2.0**61), input_tokens=2**53 - 1, output_tokens=-(2**53) + 1))
    assert edge[0] == -(2.0**61) and edge[6:8] == (2**53 - 1, -(2**53) + 1)
    with pytest.raises(ValueError, match="token count out of range"):
        fact(LedgerRecord(input_tokens=2**53))
    with pytest.raises(ValueError, match="time out of range"):
        fact(LedgerRecord(time=2.0**62))


def test_backfill_leaves_out_stored_rows_fact_refuses(open_ledger: Callable[..., Ledger], sqlite_url: str) -> None:
    """Rows stored before the rollups existed that `fact` refuses (an infinite time, a count beyond its limit) are
    left out of the backfill: before, they raised in it, so the rollups were never made and the writer stopped."""
    ledger = open_ledger(sqlite_url)
    ledger.start_sync()
    for request_id in ("a", "b", "x"):
        ledger.record(LedgerRecord(request_id=request_id, model="m", input_tokens=5, time=1_700_000_000.0))
    assert ledger.flush_sync(timeout=10)
    ledger.close_sync()
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE switchman_requests SET time = 9e999 WHERE request_id = 'a'")
        conn.exec_driver_sql(f"UPDATE switchman_requests SET input_tokens = {2**60} WHERE request_id = 'x'")
        for table in ("switchman_rollup", "switchman_latency", "switchman_sessions"):
            conn.exec_driver_sql(f"DROP TABLE {table}")
    engine.dispose()
    reopened = open_ledger(sqlite_url)
    reopened.start_sync()
    reopened.record(LedgerRecord(request_id="c", model="m", input_tokens=7, time=1_700_000_001.0))
    assert reopened.flush_sync(timeout=10)
    assert reopened.stats.written == 1
    totals = reopened.views.totals(since=0.0)[0]
    assert (totals.requests, totals.input_tokens) == (2, 12)


def _reference_add(batch: RollupBatch, item: tuple[Any, ...]) -> None:
    """`RollupBatch.add` as first written: one method call per record, `bucket_of`, `min` and `max`."""
    (moment, route, agent, model, key_id, status, tin, tout, cost, baseline, latency, ttft, fallbacks,
     escalated, quality, shadow, shadow_cost, shadow_quality, session) = item
    hour = int(moment // HOUR) * HOUR
    key = (hour, route, agent, model, key_id, status)
    sums = batch.groups.get(key)
    if sums is None:
        sums = batch.groups[key] = [0.0] * len(MEASURES)
        sums[1] = float(status in ("error", "stream_error"))
        sums[2] = float(status in ("rejected_budget", "bad_request", "rejected_rate_limit"))
    sums[0] += 1
    sums[3] += tin
    sums[4] += tout
    sums[5] += cost
    sums[6] += baseline
    sums[7] += latency
    if ttft is not None:
        sums[8] += ttft
        sums[9] += 1
    if fallbacks:
        sums[10] += fallbacks
    if escalated:
        sums[11] += escalated
    if quality is not None:
        sums[12] += 1
        sums[13] += quality
    if shadow:
        sums[14] += 1
        sums[15] += shadow_cost
        if shadow_quality is not None:
            sums[16] += 1
            sums[17] += shadow_quality
        sums[18] += cost
        if quality is not None:
            sums[19] += 1
            sums[20] += quality
    if status == "ok" and model:
        lat_key = (model, hour, bucket_of(latency))
        batch.latency[lat_key] = batch.latency.get(lat_key, 0) + 1
    if session is not None:
        state = batch.sessions.get(session)
        if state is None:
            batch.sessions[session] = [agent, moment, moment, 1, escalated]
        else:
            if agent:
                state[0] = agent
            state[1] = min(state[1], moment)
            state[2] = max(state[2], moment)
            state[3] += 1
            state[4] += escalated


@pytest.mark.parametrize("seed", range(30))
def test_add_all_counts_as_the_reference_add(seed: int) -> None:
    """The writer's one-loop `add_all` (and `add`, `RollupBatch(facts)`) give the reference's sums, bit for bit,
    in the same order: latencies at and around the bucket edges, infinity, NaN and -0.0 included."""
    rng = random.Random(seed)
    latencies = [0.0, -0.0, 0.5, 1.0, 1.0000001, 2.0 ** 0.25, 2.0 ** 30, 2.0 ** 30 - 1e-6, 2.0 ** 31, math.inf, math.nan]
    records = [replace(rec, latency_ms=rng.choice(latencies)) if rng.random() < 0.3 else rec
               for rec in _records(rng, rng.choice([1, 2, 5, 40, 300]))]
    facts = [fact(rec) for rec in records]
    expected = RollupBatch()
    for item in facts:
        _reference_add(expected, item)
    one_by_one = RollupBatch()
    for item in facts:
        one_by_one.add(item)
    for got in (RollupBatch(facts), RollupBatch(iter(facts)), one_by_one):
        for name in ("groups", "latency", "sessions"):
            assert repr(list(getattr(got, name).items())) == repr(list(getattr(expected, name).items())), name


def test_a_hand_counted_batch() -> None:
    """Literal sums, not a reference copy of the arithmetic: two ok requests of one hour and group add up, an error
    is its own group flagged as errors, a refusal as refused, and a TTFT counts only where there was one."""
    at = 7 * HOUR + 60.0
    records = [LedgerRecord(time=at, route="r", model="m", status="ok", input_tokens=3, output_tokens=5,
                            cost_usd=0.25, latency_ms=10.0, ttft_ms=4.0),
               LedgerRecord(time=at + 1, route="r", model="m", status="ok", input_tokens=4, output_tokens=1,
                            cost_usd=0.5, latency_ms=30.0),
               LedgerRecord(time=at + 2, route="r", model="m", status="error", input_tokens=2, latency_ms=7.0),
               LedgerRecord(time=at + 3, route="r", model=None, status="rejected_budget", latency_ms=1.0)]
    batch = RollupBatch([fact(record) for record in records])
    by_status = {key[5]: sums[:10] for key, sums in batch.groups.items()}
    assert by_status == {
        "ok": [2, 0, 0, 7, 6, 0.75, 0.75, 40.0, 4.0, 1],  # no baseline given: the cost itself (no saving)
        "error": [1, 1, 0, 2, 0, 0, 0, 7.0, 0, 0],
        "rejected_budget": [1, 0, 1, 0, 0, 0, 0, 1.0, 0, 0],
    }
    assert all(key[0] == 7 * HOUR for key in batch.groups)
    assert sum(batch.latency.values()) == 2  # only the ok requests with a model have a latency bucket
