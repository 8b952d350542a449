"""Instructions per ledger row, per thread, at a gateway's pace: a load-proof measure of the writer's cost.

Runs itself twice under `valgrind --tool=callgrind --separate-threads=yes` (once with `--rows` small,
once large, same batch size) and reports the difference divided by the difference in rows, so start-up,
imports and table creation cancel out. Each run records rows in groups of `--group` and flushes each
group (one committed batch, as a gateway's writer commits every 50 ms), into a fresh SQLite file.
`--pooled 2` first puts two connections in the engine's pool, as a dashboard read overlapping a write
does. "main" is the recording thread (`record()` and the flush wait), "writer" the ledger's writer thread.

    python benchmarks/callgrind_ledger.py [--rows 200 1000] [--group 40] [--pooled 2] [--like gateway] [--keep DIR]
    python benchmarks/callgrind_ledger.py --child 1000 --group 40   # one run, no valgrind (what it runs)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def gateway_records(n: int) -> list[Any]:
    """Rows like bench_hotpath's: the static `cheapest` route, no agent, session or key, random request ids."""
    from switchman.ledger import LedgerRecord

    now = time.time()
    return [
        LedgerRecord(time=now, request_id=uuid.uuid4().hex, route="default", model="small",
                     reason="cheapest of 2 candidates", strategy="cheapest", candidates=("small", "large"),
                     input_tokens=21, output_tokens=12, cost_usd=4.5e-06, baseline_cost_usd=0.000225,
                     latency_ms=1.8, status="ok", fallback_chain=("small",), api="chat.completions",
                     deployment="small", scores=(("small", None, 4.5e-06), ("large", None, 0.000225)))
        for _ in range(n)
    ]


def child(rows: int, group: int, url: str | None, pooled: int, like: str) -> None:
    """Record `rows` rows, flushed every `group` (the measured work); `pooled` connections in the pool first."""
    from bench_ledger import make_records

    from switchman.ledger import Ledger

    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(url or f"sqlite:///{Path(tmp) / 'ledger.sqlite3'}", max_queued=rows + 1)
        ledger.count()  # tables made before the writer starts
        if pooled > 1:  # as after a dashboard read overlapped a write: the pool holds several connections
            with ExitStack() as stack:
                for _ in range(pooled):
                    stack.enter_context(ledger._engine.connect())
        records = make_records(rows) if like == "agents" else gateway_records(rows)
        ledger.start_sync()
        for first in range(0, rows, group):
            for rec in records[first:first + group]:
                ledger.record(rec)
            ledger.flush_sync()
        ledger.close_sync(timeout=None)
        assert ledger.stats.written == rows, ledger.stats


def totals(out_dir: Path, pid_prefix: str) -> dict[int, int]:
    """Instructions per thread of one callgrind run, by callgrind's thread number (1 is main)."""
    per_thread: dict[int, int] = {}
    for path in out_dir.glob(f"{pid_prefix}*"):
        match = re.search(r"-(\d+)$", path.name)
        text = path.read_text(errors="replace")
        found = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        if match and found:
            per_thread[int(match.group(1))] = int(found.group(1))
    return per_thread


def per_row(few: dict[int, int], many: dict[int, int], rows: int) -> dict[str, float]:
    """main, writer and total instructions per row between two runs.

    The writer is the other thread whose count grows most with the rows, each thread compared with the same
    thread of the other run: not the busiest thread of each run, which in a short run can be another
    thread (one with a fixed start-up cost larger than the writer's few rows).
    """
    growth = {tid: many.get(tid, 0) - few.get(tid, 0) for tid in few.keys() | many.keys()}
    main = growth.pop(1, 0)
    writer = max(growth.values(), default=0)
    return {"main": main / rows, "writer": writer / rows, "total": (main + sum(growth.values())) / rows}


def run(rows: int, group: int, out_dir: Path, url: str | None, pooled: int, like: str) -> dict[int, int]:
    prefix = f"callgrind.{rows}"
    cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out_dir / prefix}.%p",
           sys.executable, __file__, "--child", str(rows), "--group", str(group), "--pooled", str(pooled), "--like", like]
    if url:
        cmd += ["--url", url]
    subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
    return totals(out_dir, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs=2, default=(200, 1000), metavar=("FEW", "MANY"))
    parser.add_argument("--group", type=int, default=40, help="rows per committed batch")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--like", choices=("agents", "gateway"), default="agents",
                        help="bench_ledger's rows (agent, session, key, tags) or bench_hotpath's (none of those)")
    parser.add_argument("--pooled", type=int, default=1, help="connections in the engine's pool before writing")
    parser.add_argument("--url", default=None, help="a ledger URL instead of a fresh SQLite file")
    parser.add_argument("--keep", type=Path, default=None, help="keep callgrind's files here (for callgrind_annotate)")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.group, args.url, args.pooled, args.like)
        return
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.keep or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        few, many = (run(n, args.group, out_dir, args.url, args.pooled, args.like) for n in args.rows)
    result = per_row(few, many, args.rows[1] - args.rows[0])
    print(f"callgrind: {args.like} rows, {args.group} per committed batch, instructions per row ({args.rows[1]} - {args.rows[0]} rows)")
    for name in ("main", "writer", "total"):
        print(f"  {name:7s} {result[name]:>10,.0f}")


if __name__ == "__main__":
    main()
