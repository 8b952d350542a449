"""What OpenTelemetry tracing costs the gateway: the same load with tracing off and on.

    python benchmarks/bench_tracing.py [--requests 2000]

`switchman serve` (one worker, static route) in front of the fake upstream, loaded by the minimal
keep-alive client of bench_gateway.py; run twice: without OTEL_* variables, and exporting every
span (sampler always_on) over OTLP/HTTP to a collector on loopback that counts what it receives.
Measured: gateway CPU ms per request (from /proc: the span work and the batch exporter's thread
are both in it), latency p50/p99 at concurrency 1 and 10, and spans received.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_gateway import (  # noqa: E402 - the sibling benchmark's client and helpers
    BODY,
    KEY,
    WARMUP,
    cpu_seconds,
    free_port,
    gateway_config,
    http_request,
    run_load,
    wait_for_port,
)


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that counts the spans it is sent."""

    spans = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        message = ExportTraceServiceRequest()
        message.ParseFromString(self.rfile.read(int(self.headers["content-length"])))
        type(self).spans += sum(len(s.spans) for rs in message.resource_spans for s in rs.scope_spans)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        """Quiet."""


async def load(port: int, pid: int, total: int) -> list[dict[str, float]]:
    raw = http_request("/v1/chat/completions", BODY, port)
    rows = []
    for concurrency in (1, 10):
        before = cpu_seconds(pid)
        row = await run_load(port, raw, concurrency, total)
        row["cpu_ms_per_request"] = (cpu_seconds(pid) - before) * 1000 / (total + WARMUP * concurrency)
        rows.append(row)
    return rows


def serve_and_load(config: Path, env: dict[str, str], total: int, folder: Path, name: str) -> list[dict[str, float]]:
    port = free_port()
    gateway = subprocess.Popen(
        [sys.executable, "-c", "from switchman.cli import app; app()", "serve", "--config", str(config),
         "--port", str(port)], env=env, stderr=(folder / f"serve-{name}.log").open("wb"))
    try:
        wait_for_port(port, gateway)
        return asyncio.run(load(port, gateway.pid, total))
    finally:
        gateway.terminate()
        gateway.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-tracing-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["BENCH_UPSTREAM_KEY"] = KEY
    up_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom switchman.testing import FakeUpstream\n"
         f"FakeUpstream(port={up_port}).start()\nwhile True: time.sleep(3600)"], env=env)
    collector = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    traced_env = {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_address[1]}",
                  "OTEL_TRACES_SAMPLER": "always_on"}
    try:
        wait_for_port(up_port, upstream)
        config = gateway_config(up_port, folder, None)
        results = {"off": serve_and_load(config, env, args.requests, folder, "off"),
                   "on": serve_and_load(config, traced_env, args.requests, folder, "on")}
    finally:
        upstream.terminate()
        upstream.wait(30)
        collector.shutdown()
    print(f"{'tracing':<9}{'conc':>6}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}{'CPU ms/req':>12}")
    for name, rows in results.items():
        for row in rows:
            print(f"{name:<9}{row['concurrency']:>6}{row['p50_ms']:>10.3f}{row['p99_ms']:>10.3f}{row['rps']:>10.0f}"
                  f"{row['cpu_ms_per_request']:>12.3f}")
    for off, on in zip(results["off"], results["on"], strict=True):
        print(f"concurrency {off['concurrency']}: tracing adds {on['cpu_ms_per_request'] - off['cpu_ms_per_request']:.3f}"
              f" ms CPU and {on['p50_ms'] - off['p50_ms']:.3f} ms p50 per request")
    print(f"spans received by the collector: {Collector.spans} "
          f"(3 per request expected: request, decision, attempt)")


if __name__ == "__main__":
    main()
