"""Instructions per request of the app on the event-loop thread: a load-proof measure of switchman's own work.

Runs itself twice under `valgrind --tool=callgrind --separate-threads=yes`, serving `--requests` small and
large requests (after the same warm-up) through the ASGI app `switchman serve` builds, in process with a
canned upstream (bench_hotpath_parts.py's app figure), and reports the difference of the main thread's
instructions divided by the difference in requests, so start-up and imports cancel out. The ledger
writer thread's count is left out: how its batches fall moves with valgrind's thread scheduling.

    python benchmarks/callgrind_app.py [--requests 200 1200] [--stream]
    python benchmarks/callgrind_app.py --child 1200 [--stream]   # one run, no valgrind (what it runs)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


async def serve(requests: int, stream: bool) -> None:
    """`requests` requests through the app at concurrency 10, after 200 of warm-up."""
    import bench_hotpath_parts as parts
    from bench_gateway import BODY

    from switchman.ui import serving_app

    gateway = parts._gateway(Path(tempfile.mkdtemp(prefix="callgrind-app-")))
    await gateway.start()
    app = serving_app(gateway, bind_host="127.0.0.1", base_dir=".")
    raw = json.dumps({**BODY, "stream": True} if stream else BODY).encode()
    statuses: list[int] = []

    async def one() -> None:
        await parts.post_chat(app, raw, statuses)

    async def connection(count: int) -> None:
        for _ in range(count):
            await one()

    await asyncio.gather(*(connection(20) for _ in range(10)))
    gc.collect()
    gc.freeze()
    await asyncio.gather(*(connection(requests // 10) for _ in range(10)))
    assert set(statuses) == {200}, set(statuses)
    await gateway.aclose()


def main_thread(out: Path) -> int:
    """Instructions of thread 1 (the event loop) in one callgrind run's files."""
    for path in out.iterdir():
        if path.name.endswith("-01"):
            found = re.search(r"^(?:summary|totals): (\d+)", path.read_text(errors="replace"), re.M)
            if found:
                return int(found.group(1))
    raise SystemExit(f"no thread-1 totals in {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, nargs=2, default=[200, 1200], help="small and large run")
    parser.add_argument("--stream", action="store_true", help="streamed requests")
    parser.add_argument("--child", type=int, help="one run of this many requests, no valgrind")
    args = parser.parse_args()
    if args.child is not None:
        try:
            import uvloop

            uvloop.run(serve(args.child, args.stream))
        except ImportError:
            asyncio.run(serve(args.child, args.stream))
        return
    counts = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.requests:
            out = Path(tmp) / str(n)
            out.mkdir()
            subprocess.run(["valgrind", "--tool=callgrind", "--separate-threads=yes",
                            f"--callgrind-out-file={out}/callgrind.%p", sys.executable, __file__, "--child", str(n),
                            *(["--stream"] if args.stream else [])], check=True, capture_output=True)
            counts.append(main_thread(out))
    small, large = args.requests
    print(f"{(counts[1] - counts[0]) / (large - small):,.0f} instructions per "
          f"{'stream' if args.stream else 'non-stream'} request on the event-loop thread "
          f"({small} and {large} requests: {counts[0]:,} and {counts[1]:,})")


if __name__ == "__main__":
    main()
