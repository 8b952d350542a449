"""Redis scripts and commands per request for shared budgets, under 2 and 3 budget scopes (agent, key, route).

Counted with `INFO commandstats` on a redis-server of the run's own (as tests/state/test_redis_command_counts.py
does): exact counts, whatever the machine's load. Commands include those a script runs inside Redis; a script call
is one round trip. Run it against another revision's code to compare:

    python benchmarks/bench_budget_commands.py                                # this tree (PYTHONPATH=src)
    git archive main src | tar -x -C /tmp/base && PYTHONPATH=/tmp/base/src python benchmarks/bench_budget_commands.py
    python benchmarks/bench_budget_commands.py --callgrind   # + this process's instructions per reserve and release

`--callgrind` runs `--child N SCOPES URL` (N reserves, each released, one at a time) under valgrind for 200 and
1,200 requests and reports the difference per request: switchman's own work and the event loop's socket calls
for its round trips, whatever the load (Redis's own work is in the other process, not counted).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import redis

from switchman._config import BudgetConfig
from switchman._exceptions import BudgetLimitError
from switchman.ledger import BudgetManager
from switchman.state import RedisLink, SharedBudgets
from switchman.testing import RedisServer


#: Wall time per held reserve, in µs, by number of budgets (one at a time: round trips, load-dependent).
wall_us: dict[int, float] = {}


def _stats(raw: redis.Redis) -> dict[str, int]:
    found: Any = raw.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(entry["calls"]) for name, entry in found.items()}


def _per_request(raw: redis.Redis, requests: int) -> tuple[float, float]:
    """(scripts, commands) per request since the last reset (the reset itself not counted)."""
    stats = _stats(raw)
    stats.pop("config|resetstat", None)
    scripts = stats.get("evalsha", 0) + stats.get("eval", 0)
    return scripts / requests, sum(stats.values()) / requests


def _scopes(scopes: int) -> tuple[list[BudgetConfig], dict[str, Any]]:
    """The first `scopes` of an agent's, a key's and a route's budget (never refusing), and a request's names."""
    defined = [BudgetConfig(scope="agent", name="s", usd=1e9), BudgetConfig(scope="key", name="s", usd=1e9),
               BudgetConfig(scope="route", name="s", usd=1e9)][:scopes]
    return defined, {"agent": "s", "key_id": "s", "route": "s" if scopes == 3 else None}


async def _measure(url: str, raw: redis.Redis, scopes: int, requests: int) -> dict[str, tuple[float, float]]:
    defined, names = _scopes(scopes)
    link = RedisLink(url, prefix=f"bench{scopes}:", timeout_s=2.0)
    await link.check()
    budgets = SharedBudgets(BudgetManager(defined), link)
    (await budgets.areserve(**names, estimated_usd=0.0)).release()  # scripts loaded
    await budgets.drain()
    found = {}
    raw.config_resetstat()
    started = time.perf_counter()
    held = [await budgets.areserve(**names, estimated_usd=0.01) for _ in range(requests)]
    wall_us[scopes] = (time.perf_counter() - started) / requests * 1e6
    found["reserve, held"] = _per_request(raw, requests)
    raw.config_resetstat()
    for reservation in held:  # one at a time, each settle its own batch: the most a settle costs
        reservation.settle(0.005)
        await budgets.drain()
    found["settle (one batch a request)"] = _per_request(raw, requests)
    for which, what in ((0, "reserve, first budget refuses"),
                        (scopes - 1, "reserve, last budget refuses (give-back included)")):
        budgets.local = BudgetManager([budget if i != which else BudgetConfig(scope=budget.scope, name="s", usd=1e-6)
                                       for i, budget in enumerate(defined)])
        raw.config_resetstat()
        for _ in range(requests):
            try:
                await budgets.areserve(**names, estimated_usd=0.01)
            except BudgetLimitError:
                pass
        await budgets.drain()
        found[what] = _per_request(raw, requests)
    await link.aclose()
    return found


async def _child(requests: int, scopes: int, url: str) -> None:
    defined, names = _scopes(scopes)
    link = RedisLink(url, prefix=f"callgrind{scopes}:", timeout_s=5.0)
    await link.check()
    budgets = SharedBudgets(BudgetManager(defined), link)
    for _ in range(requests):
        (await budgets.areserve(**names, estimated_usd=0.01)).release()
    await budgets.drain()
    await link.aclose()


def _instructions(requests: int, scopes: int, url: str) -> int:
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg", sys.executable, __file__,
             "--child", str(requests), str(scopes), url],
            check=True, capture_output=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
        found = re.search(r"^(?:summary|totals): (\d+)", Path(out, "cg").read_text(), re.M)
        assert found is not None
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("N", "SCOPES", "URL"))
    options = parser.parse_args()
    if options.child:
        anyio.run(_child, int(options.child[0]), int(options.child[1]), options.child[2])
        return
    with RedisServer() as server:
        raw = redis.Redis(port=server.port)
        print("| budgets | request | scripts (round trips) / request | Redis commands / request |")
        print("|---|---|---:|---:|")
        for scopes in (2, 3):
            found = anyio.run(_measure, server.url, raw, scopes, options.requests)
            for what, (scripts, commands) in found.items():
                print(f"| {scopes} | {what} | {scripts:.2f} | {commands:.1f} |")
        print("\nwall time per held reserve, one at a time (load-dependent): "
              + ", ".join(f"{scopes} budgets {us:.0f} µs" for scopes, us in wall_us.items()))
        if options.callgrind:
            for scopes in (2, 3):
                few, many = (_instructions(n, scopes, server.url) for n in (200, 1200))
                print(f"callgrind, {scopes} budgets: {(many - few) / 1000:,.0f} instructions per reserve and release")
        raw.close()


if __name__ == "__main__":
    main()
