"""The Redis link alone: CPU per simulated shared request, without the gateway's noise around it.

    flock /work/notes/bench.lock python benchmarks/bench_redis_link.py [--requests 5000] [--workers 2] \
        [--url redis://127.0.0.1:6379/9] [--rounds 5]

Each simulated request does what a shared request asks of Redis: a session GET and two scripts (the
rate-limit admission and the budget reservation) queued side by side, then, a turn of the event loop
later, one more script (the session write). `--workers` requests run concurrently, so round trips
are shared as in the gateway (with 2 workers about one round trip per request). Prints the process
CPU per request (min and median of the rounds) and Redis's reads per request (`total_reads_processed`:
one per round trip).

On a loaded machine CPU time is noisy; instruction counts are not. Run it under callgrind twice, with
`--requests 500 --rounds 1` and `--requests 2500 --rounds 1`, and divide the difference of the two
"Collected" totals by 2,000 (startup and warm-up cancel out): that is how the per-change figures in
docs/benchmarks.md ("third session") were taken, each version's src/ on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from switchman.state import RedisLink

ADMIT = "return {1, '0', tostring(ARGV[1]), '5'}"
PUT = "redis.call('SET', KEYS[1], ARGV[1], 'PX', 60000) return 1"


async def main(url: str, total: int, workers: int, rounds: int) -> None:
    import redis

    link = RedisLink(url, prefix=f"bench-link-{os.getpid()}:", timeout_s=0.25, ping_s=5.0)
    await link.start()
    key = link.key("session:s", "state")

    async def worker(count: int) -> None:
        for i in range(count):
            got = link.command_soon("GET", key)
            admitted = link.eval_soon(ADMIT, [key], [i])
            reserved = link.eval_soon(ADMIT, [key], [i])
            await admitted
            await reserved
            await got
            await asyncio.sleep(0)  # the turn's next step
            await link.eval_soon(PUT, [key], ["v" * 100])

    await asyncio.gather(*(worker(200) for _ in range(workers)))  # warm-up: scripts loaded, connection open
    stats = redis.Redis.from_url(url)
    reads = stats.info("stats")["total_reads_processed"]
    spent = []
    for _ in range(rounds):
        started = time.process_time()
        await asyncio.gather(*(worker(total // workers) for _ in range(workers)))
        spent.append((time.process_time() - started) / total * 1e6)
    reads = (stats.info("stats")["total_reads_processed"] - reads) / (rounds * total)
    await link.run(lambda r: r.delete(key))
    await link.aclose()
    stats.close()
    ordered = sorted(spent)
    print(f"CPU µs per request: min {ordered[0]:.1f}, median {ordered[len(ordered) // 2]:.1f} "
          f"(rounds {', '.join(f'{s:.1f}' for s in spent)}); Redis reads per request {reads:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.requests, args.workers, args.rounds))
