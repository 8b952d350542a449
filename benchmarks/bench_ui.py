"""Dashboard pages on a million-row ledger: how long each takes to render, on SQLite and on Postgres.

    python benchmarks/bench_ui.py [--rows 1000000] [--repeat 7] [--postgres postgresql://postgres@127.0.0.1:5432/test]
                                  [--sqlite-file /tmp/bench-ui.sqlite3]   # reuse a filled file between runs

The ledger is filled through `Ledger.record` (so the writer keeps the rollups, as in production) with
30 days of synthetic traffic from 20 agents on 3 routes and 6 models (switchman.testing). Each page
is then fetched `repeat` times through the dashboard app in process (Starlette's TestClient, logged
in), after one warm-up fetch; the time is the whole request: queries, template, response. The log
is fetched unfiltered, with each filter on its rarest value, with two filters whose combination is
empty, one page back, and one request's page.
"""

from __future__ import annotations

import argparse
import re
import secrets
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from starlette.testclient import TestClient

from switchman._config import parse_config
from switchman.gateway import Gateway
from switchman.ledger import Ledger
from switchman.testing import SYNTHETIC_PRICES, SYNTHETIC_ROUTES, synthetic_records
from switchman.ui import serving_app

MASTER = "sk-bench-ui-master"
LIMIT_MS = 300.0


def fill(url: str, rows: int) -> dict[str, Any]:
    """Write `rows` synthetic records through the ledger writer; what the filters will ask for."""
    ledger = Ledger(url, batch_size=2000, max_queued=200_000)
    ledger.count()
    ledger.start_sync()
    counts: dict[str, Counter[str]] = {name: Counter() for name in ("agent", "model", "key_id", "status", "route")}
    session = None
    started = time.perf_counter()
    cpu = time.process_time()
    for i, rec in enumerate(synthetic_records(rows, days=30, seed=1)):
        ledger.record(rec)
        for name, counter in counts.items():
            counter[str(getattr(rec, name))] += 1
        if rec.session and i > rows // 2 and session is None:
            session = rec.session
        if i % 100_000 == 99_999:
            ledger.flush_sync()
            print(f"  {i + 1:,} rows written", file=sys.stderr)
    ledger.close_sync(timeout=None)
    print(f"filled {rows:,} rows in {time.perf_counter() - started:.0f} s "
          f"({(time.process_time() - cpu) / rows * 1e6:.1f} µs CPU per row: generating + writing)")
    return {"counts": counts, "session": session}


def probes(url: str) -> dict[str, Any]:
    """Rarest values and a session, read back from a filled ledger (when reusing a file)."""
    engine = create_engine(url.replace("sqlite:///", "sqlite+pysqlite:///"))
    counts: dict[str, Counter[str]] = {name: Counter() for name in ("agent", "model", "key_id", "status", "route")}
    slices = {"agent": "agent", "model": "model", "key": "key_id", "route": "route"}
    with engine.connect() as conn:
        for name, value, n in conn.execute(text(
                "select slice, v1, sum(requests) from switchman_rollup where grain = 86400 group by slice, v1")):
            if name in slices:
                counts[slices[name]][str(value)] = int(n)
        counts["status"] = Counter({str(v): int(n) for v, n in conn.execute(
            text("select status, count(*) from switchman_requests group by status"))})
        session = conn.execute(text("select session from switchman_sessions order by last_time desc limit 1")).scalar()
    engine.dispose()
    return {"counts": counts, "session": session}


def site(url: str) -> Any:
    data = {
        "providers": {"fake": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {m: {"provider": "fake", "input_price": p[0], "output_price": p[1]}
                   for m, p in SYNTHETIC_PRICES.items()},
        "routes": {name: {"candidates": list(c), "strategy": "cheapest"} for name, (_, c, _) in SYNTHETIC_ROUTES.items()},
        "agents": {"triage": {"route": "support"}, "coder": {"route": "code"}},
        "budgets": [{"scope": "agent", "name": "coder", "usd": 50}],
        "server": {"ledger_url": url},
    }
    gateway = Gateway.from_config(parse_config(data), env={"SWITCHMAN_MASTER_KEY": MASTER})
    return serving_app(gateway, bind_host="127.0.0.1")


def pages(found: dict[str, Any], client: TestClient) -> list[tuple[str, str]]:
    counts = found["counts"]

    def rarest(name: str) -> str:
        present = [(n, v) for v, n in counts[name].items() if v not in ("None", "")]
        return min(present)[1]

    log = client.get("/ui/requests").text
    older = re.search(r'id="older" href="([^"]+)"', log)
    request_id = re.search(r'data-request-id="([0-9a-f]+)"', log)
    assert older and request_id
    return [
        ("overview 24h", "/ui/?window=24h"), ("overview 7d", "/ui/?window=7d"), ("overview 30d", "/ui/?window=30d"),
        ("agents 30d", "/ui/agents?window=30d"), ("models 30d", "/ui/models?window=30d"),
        ("routers 30d", "/ui/routers?window=30d"), ("keys & budgets", "/ui/keys"),
        ("log, no filter", "/ui/requests"), ("log, older page", older.group(1).replace("&amp;", "&")),
        (f"log, agent={rarest('agent')}", f"/ui/requests?agent={rarest('agent')}"),
        (f"log, model={rarest('model')}", f"/ui/requests?model={rarest('model')}"),
        (f"log, key={rarest('key_id')}", f"/ui/requests?key={rarest('key_id')}"),
        (f"log, status={rarest('status')}", f"/ui/requests?status={rarest('status')}"),
        (f"log, route={rarest('route')}", f"/ui/requests?route={rarest('route')}"),
        ("log, one session", f"/ui/requests?session={found['session']}"),
        ("log, empty combination", "/ui/requests?route=code&model=gpt-4o"),
        ("log, agent + status=error", "/ui/requests?agent=coder&status=error"),
        ("log, last hour", "/ui/requests?window=1h"),
        ("one request", f"/ui/requests/{request_id.group(1)}"),
    ]


def measure(url: str, found: dict[str, Any], repeat: int) -> list[tuple[str, float, float]]:
    with TestClient(site(url)) as client:
        form = client.get("/ui/login").text
        token = re.search(r'name="csrf" value="([^"]+)"', form)
        assert token
        client.post("/ui/login", data={"key": MASTER, "csrf": token.group(1)})
        results = []
        for name, path in pages(found, client):
            assert client.get(path).status_code == 200, path  # warm-up
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, path
            results.append((name, statistics.median(times), max(times)))
    return results


def report(backend: str, results: list[tuple[str, float, float]]) -> None:
    print(f"\n{backend}: page render, ms (median / max of the repeats)")
    for name, median, worst in results:
        flag = "" if worst <= LIMIT_MS else f"  over {LIMIT_MS:.0f} ms"
        print(f"  {name:<34}{median:>8.1f}{worst:>8.1f}{flag}")
    print(f"  slowest page: {max(r[2] for r in results):.1f} ms")


def postgres_url(base: str) -> tuple[str, str] | None:
    engine = create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    schema = f"sw_bench_ui_{secrets.token_hex(4)}"
    try:
        with engine.begin() as conn:
            conn.execute(text(f"create schema {schema}"))
    except OperationalError as exc:
        print(f"postgres skipped: {str(exc.orig).strip().splitlines()[0]}", file=sys.stderr)
        return None
    finally:
        engine.dispose()
    return schema, f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--sqlite-file", type=Path, default=None, help="keep (and reuse) the SQLite ledger here")
    args = parser.parse_args()
    sqlite_file = args.sqlite_file or Path(f"/tmp/bench-ui-{secrets.token_hex(4)}.sqlite3")
    url = f"sqlite:///{sqlite_file}"
    found = probes(url) if sqlite_file.exists() else fill(url, args.rows)
    report(f"SQLite ({args.rows:,} rows)", measure(url, found, args.repeat))
    if args.sqlite_file is None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{sqlite_file}{suffix}").unlink(missing_ok=True)
    if args.no_postgres:
        return
    made = postgres_url(args.postgres)
    if made is None:
        return
    schema, pg = made
    try:
        found = fill(pg, args.rows)
        report(f"Postgres ({args.rows:,} rows)", measure(pg, found, args.repeat))
    finally:
        engine = create_engine(args.postgres.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.begin() as conn:
            conn.execute(text(f"drop schema {schema} cascade"))
        engine.dispose()


if __name__ == "__main__":
    main()
