"""`switchman serve` run like a service: access lines, SIGHUP reloads (one process and --workers), clear refusals."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from serve_support import free_port, serve_command, serving

from switchman.testing import FakeUpstream

from .conftest import ENV, config_data

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def data(upstream: FakeUpstream, tmp_path: Path) -> dict[str, Any]:
    upstream.clear()
    return config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")


def with_extra_route(data: dict[str, Any]) -> dict[str, Any]:
    models = {**data["models"], "extra": {**data["models"]["mid"]}}
    return {**data, "models": models, "routes": {**data["routes"], "added": {"candidates": ["extra"]}}}


def test_one_process_logs_each_request_and_reloads_on_sighup(data: dict[str, Any], tmp_path: Path) -> None:
    config = write(tmp_path / "switchman.yaml", data)
    with serving(tmp_path, config, env=ENV) as served:
        response = httpx.post(served.base + "/v1/chat/completions", timeout=30,
                              json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
        request_id = response.headers["x-switchman-request-id"]
        served.wait_for(lambda: request_id in served.stdout)
        line = next(x for x in served.stdout.splitlines() if request_id in x)
        assert "POST /v1/chat/completions 200 model=cheap " in line and f"ms id={request_id}" in line

        write(config, with_extra_route(data))
        served.process.send_signal(signal.SIGHUP)
        served.wait_for(lambda: {"extra", "auto:added"} <= served.models())
        assert "configuration reloaded" in served.stderr
        assert "changed in" not in served.stderr  # `--port` is where it listens, not a file change to restart for
        routed = httpx.post(served.base + "/v1/chat/completions", timeout=30,
                            json={"model": "auto:added", "messages": [{"role": "user", "content": "hi"}]})
        assert routed.headers["x-switchman-model"] == "extra"

        config.write_text("routes: {default: {candidates: [nowhere]}}\n")
        served.process.send_signal(signal.SIGHUP)
        served.wait_for(lambda: "configuration reload failed" in served.stderr)
        assert "unknown model 'nowhere'" in served.stderr
        assert {"extra", "auto:added"} <= served.models()  # still the last good configuration
        assert "Traceback" not in served.stderr


def test_workers_reload_on_sighup_and_keep_serving_on_a_bad_file(data: dict[str, Any], tmp_path: Path) -> None:
    config = write(tmp_path / "switchman.yaml", data)
    with serving(tmp_path, config, "--workers", "2", "--no-access-log", env=ENV) as served:
        httpx.post(served.base + "/v1/chat/completions", timeout=30,
                   json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
        write(config, with_extra_route(data))
        served.process.send_signal(signal.SIGHUP)
        # uvicorn replaces the workers one by one, each reading the file; both are replaced once both old ones end.
        served.wait_for(lambda: served.stderr.count("Terminated child process") == 2, seconds=120)
        # uvicorn logs that line when it sends SIGTERM: an old worker may take one more connection
        # before it stops accepting, so the new configuration must win within a few seconds.
        served.wait_for(lambda: all("extra" in served.models() for _ in range(6)), seconds=20)

        config.write_text("routes: {default: {candidates: [nowhere]}}\n")
        served.process.send_signal(signal.SIGHUP)
        served.wait_for(lambda: "this worker does not start" in served.stderr, seconds=120)
        assert all("extra" in served.models() for _ in range(6))  # the old workers still serve
        assert "POST /v1/chat/completions" not in served.stdout  # --no-access-log


def requests_by_worker(metrics_dir: Path) -> dict[str, float]:
    """switchman_requests_total of each worker, read from its own multiprocess file."""
    counts: dict[str, float] = {}
    for file in metrics_dir.glob("counter_*.db"):
        alone = metrics_dir.parent / f"alone-{file.stem}"
        alone.mkdir(exist_ok=True)
        shutil.copy(file, alone / file.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        counts[file.stem] = sum(s.value for m in registry.collect() for s in m.samples
                                if s.name == "switchman_requests_total")
    return counts


def scraped(base: str, name: str = "switchman_requests_total") -> float:
    body = httpx.get(base + "/metrics", timeout=10, headers={"connection": "close"}).text
    return sum(s.value for f in text_string_to_metric_families(body) for s in f.samples if s.name == name)


def test_metrics_are_whole_across_workers(data: dict[str, Any], tmp_path: Path) -> None:
    config = write(tmp_path / "switchman.yaml", {**data, "server": {**data["server"], "metrics_access": "open"}})
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left by an earlier run")  # serve empties the directory
    with serving(tmp_path, config, "--workers", "2", "--no-access-log",
                 env={**ENV, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}) as served:
        sent = 0

        def ask(_: int) -> int:
            response = httpx.post(served.base + "/v1/chat/completions", timeout=30, headers={"connection": "close"},
                                  json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
            return response.status_code

        with ThreadPoolExecutor(8) as pool:  # new connections, so both workers accept some
            while sent < 800 and sum(1 for n in requests_by_worker(metrics_dir).values() if n > 0) < 2:
                assert set(pool.map(ask, range(40))) == {200}
                sent += 40
        by_worker = requests_by_worker(metrics_dir)
        assert sum(1 for n in by_worker.values() if n > 0) == 2, by_worker  # both workers answered some
        assert sum(by_worker.values()) == sent
        assert [scraped(served.base) for _ in range(8)] == [sent] * 8  # whichever worker answers
        # each worker's ledger writer counts reach the shared files too, without another request
        served.wait_for(lambda: scraped(served.base, "switchman_ledger_written_rows_total") == sent, seconds=15)
        assert scraped(served.base, "switchman_ledger_queued_rows") == 0

        served.process.send_signal(signal.SIGHUP)  # both workers replaced: their counts stay, their live gauges go
        served.wait_for(lambda: served.stderr.count("Terminated child process") == 2, seconds=120)
        served.wait_for(lambda: len(list(metrics_dir.glob("gauge_livesum_*.db"))) == 2)
        assert scraped(served.base) == sent
    assert not list(metrics_dir.glob("*.db"))  # cleaned up when serve ends


def test_serve_refuses_a_port_in_use_naming_the_flag(data: dict[str, Any], tmp_path: Path) -> None:
    config = write(tmp_path / "switchman.yaml", data)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(serve_command(config, port), env={**os.environ, **ENV}, capture_output=True, text=True,
                                timeout=120)
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr and "--port" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_with_a_missing_router_file_says_so_in_one_line(data: dict[str, Any], tmp_path: Path) -> None:
    data["routes"]["default"] = {"candidates": ["cheap", "mid"], "strategy": "learned", "router": "absent.safetensors"}
    config = write(tmp_path / "switchman.yaml", data)
    result = subprocess.run(serve_command(config, free_port()), env={**os.environ, **ENV}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "routes.default.router" in lines[0] and "absent.safetensors" in lines[0], lines
    assert "router file not found" in lines[0]
