"""The dashboard over a ledger database that hangs or refuses: every page answers 503 in bounded time, never
hangs and never 500s, and the API beside it keeps serving."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from hanging_server import HangingServer
from pg_support import PG_HOST, PG_PORT, schema_url
from serve_support import free_port

from switchman.testing import FakeUpstream
from switchman.ui import _app

from .conftest import ServerThread, make_site

PG = (PG_HOST, PG_PORT)


@pytest.fixture
def quick_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_app, "PAGE_TIMEOUT_S", 1.5, raising=False)


def test_pages_over_a_ledger_that_stalls_mid_run_answer_503_in_bounded_time(
        upstream: FakeUpstream, pg_schema: str, quick_pages: None) -> None:
    proxy = HangingServer(target=PG)
    url = schema_url(pg_schema, port=proxy.port)
    site = make_site(upstream, url, [], master=False, viewer=False)  # open (read-only) on loopback
    try:
        with ServerThread(site.app) as base, httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/ui/").status_code == 200  # a pooled connection now exists
            proxy.hang()
            for path in ("/ui/", "/ui/keys", "/ui/requests", "/ui/agents"):
                started = time.monotonic()
                page = http.get(path)
                assert page.status_code == 503, (path, page.status_code)
                assert "ledger" in page.text
                assert time.monotonic() - started < 10  # the pool's 5 s connect bound, or the page's own
            assert http.get("/v1/models").status_code == 200
    finally:
        assert site.gateway.ledger is not None
        site.gateway.ledger.close_sync(timeout=0.5)
        proxy.close()


def test_pages_over_a_ledger_that_refuses_answer_503_not_500(upstream: FakeUpstream) -> None:
    port = free_port()  # nothing listens there
    site = make_site(upstream, f"postgresql://postgres@127.0.0.1:{port}/test", [], master=False, viewer=False)
    try:
        with ServerThread(site.app) as base, httpx.Client(base_url=base, timeout=30) as http:
            for path in ("/ui/", "/ui/keys", "/ui/models", "/ui/requests/abc"):
                page = http.get(path)
                assert page.status_code == 503, (path, page.status_code)
                assert "the ledger" in page.text and "Traceback" not in page.text
    finally:
        assert site.gateway.ledger is not None
        site.gateway.ledger.close_sync(timeout=0.5)


def _ledger_worker_threads() -> int:
    return sum(thread.name == "AnyIO worker thread" for thread in threading.enumerate())


def test_page_loads_on_a_stalled_ledger_block_a_bounded_number_of_threads_and_log_once(
        upstream: FakeUpstream, pg_schema: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import concurrent.futures

    from switchman.gateway._ledger_threads import LEDGER_THREADS

    monkeypatch.setattr(_app, "PAGE_TIMEOUT_S", 0.5)
    proxy = HangingServer(target=PG)
    url = schema_url(pg_schema, port=proxy.port)
    site = make_site(upstream, url, [], master=False, viewer=False)
    try:
        with ServerThread(site.app) as base, httpx.Client(base_url=base, timeout=30) as http, \
                concurrent.futures.ThreadPoolExecutor(32) as pool:
            assert http.get("/ui/").status_code == 200
            proxy.hang()
            peak, codes = 0, set()
            started = time.monotonic()
            while time.monotonic() - started < 4:  # each round's timeouts would start 8 more blocked threads
                loads = [pool.submit(lambda: httpx.get(base + "/ui/requests", timeout=30).status_code)
                         for _ in range(32)]
                codes |= {load.result() for load in loads}
                peak = max(peak, _ledger_worker_threads())
            assert codes == {503}
            assert peak <= LEDGER_THREADS + 2, peak  # (+ the idle ones that served the first page)
    finally:
        assert site.gateway.ledger is not None
        site.gateway.ledger.close_sync(timeout=0.5)
        proxy.close()
    warnings = [r for r in caplog.records if r.name == "switchman.ui" and "ledger" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
