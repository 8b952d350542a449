"""Benchmark the spend ledger: records/s into SQLite and Postgres, and what `record()` costs the caller.

Throughput: one producer thread calls `record()` as fast as it can for N records while the writer
thread inserts in batches; the rate is N / (first record → `close()` returned, everything written).
Writer alone: N records queued first, then start → close, with this process's CPU per row (the
share the writer takes from a gateway worker; the Postgres server's own CPU is not in it).
Caller cost: the same loop, each `record()` call timed alone with perf_counter_ns (p50/p99/max),
with the writer running against the database, so its GIL share is included.
A budget check (`BudgetManager.reserve` + `settle`) is timed the same way.
Paced: what a gateway's row costs at its own pace, where each flush carries a few dozen rows, not
hundreds: records added `--paced` at a time, each group flushed (committed) before the next, with
this process's CPU (both threads) per row.

    python benchmarks/bench_ledger.py [--n 200000] [--paced 40] [--postgres postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from switchman._config import BudgetConfig
from switchman.ledger import BudgetManager, Ledger, LedgerRecord


def make_records(n: int) -> list[LedgerRecord]:
    """Realistic rows: every field filled, as the gateway writes them."""
    now = time.time()
    return [
        LedgerRecord(
            time=now,
            request_id=f"{i:032x}",
            agent="triage",
            session=f"sess-{i % 100}",
            key_id="key-0123abcd",
            route="default",
            model=("gpt-4o-mini", "gpt-4o")[i % 2],
            reason="learned: q̂ within 0.95 of best",
            strategy="learned",
            candidates=("gpt-4o-mini", "gpt-4o", "claude-3-5-haiku"),
            input_tokens=812,
            output_tokens=143,
            cost_usd=0.000207,
            baseline_cost_usd=0.00346,
            latency_ms=812.4,
            ttft_ms=211.0,
            tags=("prod", "eu"),
        )
        for i in range(n)
    ]


def percentile(sorted_values: list[int], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] / 1000.0


def bench_backend(name: str, url: str, n: int) -> dict[str, float]:
    records = make_records(n)
    ledger = Ledger(url, max_queued=n)  # the producer outruns any database; hold it all to measure the writer
    ledger.count()  # create the tables outside the timing
    ledger.start_sync()
    start = time.perf_counter()
    for rec in records:
        ledger.record(rec)
    enqueued = time.perf_counter()
    ledger.close_sync(timeout=None)
    done = time.perf_counter()
    assert ledger.stats.written == n, ledger.stats

    drained = Ledger(url, max_queued=n)  # writer alone: everything queued first, then start → close
    for rec in records:
        drained.record(rec)
    wall, cpu = time.perf_counter(), time.process_time()
    drained.start_sync()
    drained.close_sync(timeout=None)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    timed = Ledger(url, max_queued=n)
    timed.start_sync()
    costs: list[int] = []
    clock = time.perf_counter_ns
    for rec in records:
        t0 = clock()
        timed.record(rec)
        costs.append(clock() - t0)
    timed.close_sync(timeout=None)
    costs.sort()
    result = {
        "records_per_s": n / (done - start),
        "writer_only_per_s": n / wall,
        "writer_cpu_us_per_row": cpu / n * 1e6,
        "enqueue_per_s": n / (enqueued - start),
        "record_p50_us": percentile(costs, 0.50),
        "record_p99_us": percentile(costs, 0.99),
        "record_max_us": costs[-1] / 1000.0,
        "record_mean_us": statistics.fmean(costs) / 1000.0,
    }
    print(
        f"{name:9s} sustained {result['records_per_s']:>9,.0f} records/s written "
        f"(enqueue {result['enqueue_per_s']:,.0f}/s); writer alone {result['writer_only_per_s']:,.0f}/s at "
        f"{result['writer_cpu_us_per_row']:.1f} µs CPU/row in this process\n"
        f"{'':9s} record() on the caller: p50 {result['record_p50_us']:.2f} µs, "
        f"p99 {result['record_p99_us']:.2f} µs, max {result['record_max_us']:.0f} µs"
    )
    return result


def bench_budget(n: int) -> None:
    manager = BudgetManager(
        [BudgetConfig(scope="agent", name="triage", usd=1e9), BudgetConfig(scope="route", name="default", usd=1e9)]
    )
    costs: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        manager.reserve(agent="triage", key_id="key-1", route="default", estimated_usd=0.001).settle(0.0009)
        costs.append(clock() - t0)
    costs.sort()
    print(
        f"budget    reserve+settle (2 budgets): p50 {percentile(costs, 0.5):.2f} µs, "
        f"p99 {percentile(costs, 0.99):.2f} µs"
    )


def postgres_schema(url: str) -> tuple[str, str] | None:
    """A fresh schema on the server at `url`, and the URL that uses it; None if unreachable."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    schema = f"sw_bench_{secrets.token_hex(4)}"
    try:
        with engine.begin() as conn:
            conn.execute(text(f"create schema {schema}"))
    except OperationalError as exc:
        print(f"postgres  skipped: {str(exc.orig).strip().splitlines()[0]}", file=sys.stderr)
        return None
    finally:
        engine.dispose()
    sep = "&" if "?" in url else "?"
    return schema, f"{url}{sep}options=-csearch_path%3D{schema}"


def drop_schema(url: str, schema: str) -> None:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text(f"drop schema {schema} cascade"))
    engine.dispose()


def bench_paced(url: str, n: int, group: int) -> float:
    """CPU ms per row when every `group` rows are one committed batch (a gateway at ~20 x group req/s)."""
    records = make_records(n)
    ledger = Ledger(url, max_queued=n)
    ledger.count()
    ledger.start_sync()
    cpu = time.process_time()
    for first in range(0, n, group):
        for rec in records[first:first + group]:
            ledger.record(rec)
        ledger.flush_sync()
    ledger.close_sync(timeout=None)
    cpu = time.process_time() - cpu
    assert ledger.stats.written == n, ledger.stats
    print(f"sqlite paced: {group} rows per committed batch, {cpu / n * 1000:.3f} ms CPU per row")
    return cpu / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="records per run")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--paced", type=int, default=0, help="only the paced SQLite run, this many rows a batch")
    args = parser.parse_args()
    if args.paced:
        with tempfile.TemporaryDirectory() as tmp:
            bench_paced(f"sqlite:///{Path(tmp) / 'ledger.sqlite3'}", args.n, args.paced)
        return
    print(f"{args.n:,} records per run, batch 500, flush every 50 ms; Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        bench_backend("sqlite", f"sqlite:///{Path(tmp) / 'ledger.sqlite3'}", args.n)
    found = postgres_schema(args.postgres)
    if found is not None:
        schema, url = found
        try:
            bench_backend("postgres", url, args.n)
        finally:
            drop_schema(args.postgres, schema)
    bench_budget(args.n)


if __name__ == "__main__":
    main()
