"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright.

Playwright is pointed at /usr/bin/chromium (`apt-get install chromium`; .ci/run installs it): its
own browser download cannot work here. A real gateway serves the dashboard on loopback over a
ledger of synthetic traffic. The overview and a request page are photographed into docs/.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchman.ledger import LedgerRecord
from switchman.testing import FakeUpstream

from .conftest import MASTER_KEY, ServerThread, Site, make_site

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
DOCS = Path(__file__).resolve().parents[2] / "docs"
#: The screenshots in docs/ are refreshed only when asked (`SWITCHMAN_UPDATE_SCREENSHOTS=1`): a test run must not
#: leave the checkout modified.
UPDATE_DOCS = os.environ.get("SWITCHMAN_UPDATE_SCREENSHOTS") == "1"
PAGES = ("/ui/", "/ui/agents", "/ui/models", "/ui/requests", "/ui/routers", "/ui/keys")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get install -y chromium")
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def served(upstream: FakeUpstream, filled_ledger: tuple[str, list[LedgerRecord]],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Site]]:
    import sqlite3

    copy = tmp_path_factory.mktemp("browser-ledger") / "ledger.sqlite3"
    with sqlite3.connect(filled_ledger[0].removeprefix("sqlite:///")) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    site = make_site(upstream, f"sqlite:///{copy}", filled_ledger[1])
    with ServerThread(site.app) as url:
        yield url, site


class Watched:
    """A page that remembers console errors, page errors and failed or refused requests."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", self._failed)
        page.on("response", lambda r: self.problems.append(f"{r.status}: {r.url}") if r.status >= 400 else None)

    def _failed(self, request: Any) -> None:
        # The favicon may still be loading when a test moves on: the navigation cancels it.
        if not (request.url.endswith("/favicon.svg") and "ERR_ABORTED" in str(request.failure)):
            self.problems.append(f"failed: {request.url} {request.failure}")

    def visit(self, url: str) -> None:
        self.page.goto(url, wait_until="load")  # scripts are deferred: charts are drawn before "load"


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light")
    yield Watched(context.new_page())
    context.close()


def log_in(watched: Watched, base: str, key: str = MASTER_KEY) -> None:
    watched.visit(base + "/ui/")
    assert watched.page.url.startswith(base + "/ui/login?next=")  # no session: sent to the login form
    watched.page.fill("#key", key)
    watched.page.click("#login")
    watched.page.wait_for_url(base + "/ui/")
    assert watched.page.url == base + "/ui/"


def test_every_page_loads_cleanly(watched: Watched, served: tuple[str, Site]) -> None:
    base, _ = served
    log_in(watched, base)
    for path in PAGES:
        watched.visit(base + path)
        assert watched.page.title().endswith("· switchman"), path
    assert watched.problems == []


def test_the_charts_draw_every_point(watched: Watched, served: tuple[str, Site]) -> None:
    base, _ = served
    log_in(watched, base)
    for window, step in (("24h", 3600), ("7d", 6 * 3600), ("30d", 86_400)):
        watched.visit(f"{base}/ui/?window={window}")
        span = {"24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400}[window]
        now = time.time()
        expected = math.ceil((now - (now - span) // 3600 * 3600) / step)
        for chart in ("chart-spend", "chart-saving"):
            drawn = watched.page.evaluate("""id => {
                const u = window.switchmanCharts[id];
                const canvas = document.querySelector('#' + id + ' canvas');
                const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
                let painted = 0;
                for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
                return {points: u.data[0].length, series: u.data.length - 1, painted: painted,
                        payload: JSON.parse(document.getElementById('chart-data').textContent).x.length};
            }""", chart)
            assert drawn["points"] == drawn["payload"], (window, chart, drawn)
            assert abs(drawn["points"] - expected) <= 1, (window, chart, drawn)
            assert drawn["series"] == (2 if chart == "chart-spend" else 1)
            assert drawn["painted"] > 1000, (window, chart, drawn)
    assert watched.problems == []


def test_filters_change_the_rows(watched: Watched, served: tuple[str, Site]) -> None:
    base, site = served
    log_in(watched, base)
    watched.visit(base + "/ui/requests")
    rows = watched.page.locator("#log-table tbody tr[data-request-id]")
    assert rows.count() == 50
    agents_before = set(rows.locator("td:nth-child(2)").all_inner_texts())
    assert len(agents_before) > 1
    watched.page.select_option("select[name=agent]", "coder")  # htmx swaps the log in place
    watched.page.wait_for_function("() => new URL(location.href).searchParams.get('agent') === 'coder'")
    watched.page.wait_for_load_state("networkidle")
    assert set(rows.locator("td:nth-child(2)").all_inner_texts()) == {"coder"}
    shown = [watched.page.locator("#log-table tbody tr[data-request-id]").nth(i).get_attribute("data-request-id")
             for i in range(5)]
    expected = [r.request_id for r in reversed(site.records) if r.agent == "coder"][:5]
    assert shown == expected
    watched.page.select_option("select[name=status]", "error")
    watched.page.wait_for_function("() => new URL(location.href).searchParams.get('status') === 'error'")
    watched.page.wait_for_load_state("networkidle")
    statuses = set(watched.page.locator("#log-table tbody tr[data-request-id] td:nth-child(5)").all_inner_texts())
    assert statuses == {"error"}
    assert watched.problems == []


def test_a_request_page_shows_its_decision(watched: Watched, served: tuple[str, Site], tmp_path: Path) -> None:
    base, site = served
    log_in(watched, base)
    record = next(r for r in reversed(site.records) if r.route == "default" and r.status == "ok")
    watched.visit(f"{base}/ui/requests?route=default&status=ok")
    watched.page.click(f"tr[data-request-id='{record.request_id}'] a")  # the newest such request
    watched.page.wait_for_load_state("networkidle")
    assert watched.page.url == f"{base}/ui/requests/{record.request_id}"
    assert watched.page.inner_text("#model") == record.model
    assert watched.page.inner_text("#reason") == record.reason
    chosen = watched.page.locator("#candidates tr.chosen")
    assert chosen.count() == 1 and chosen.get_attribute("data-model") == record.model
    assert watched.page.locator("#candidates tbody tr").count() == len(record.candidates)
    shot = tmp_path / "request.png"
    watched.page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if UPDATE_DOCS:
        shutil.copy(shot, DOCS / "dashboard-request.png")
    assert watched.problems == []


def test_creating_and_revoking_a_key_in_the_browser(watched: Watched, served: tuple[str, Site]) -> None:
    base, _ = served
    log_in(watched, base)
    watched.visit(base + "/ui/keys")
    watched.page.fill("#create-key input[name=name]", "browser-bot")
    watched.page.fill("#create-key input[name=budget_usd]", "3")
    watched.page.click("#create")
    watched.page.wait_for_load_state("networkidle")
    secret = watched.page.inner_text("#secret")
    ask = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {secret}"}
    assert httpx.post(base + "/v1/chat/completions", json=ask, headers=headers, timeout=30).status_code == 200
    watched.visit(base + "/ui/keys")
    row = watched.page.locator("#keys tr", has_text="browser-bot")
    key_id = row.get_attribute("data-key-id")
    watched.page.once("dialog", lambda dialog: dialog.accept())  # "Revoke key ...?"
    row.locator("button.danger").click()
    watched.page.wait_for_load_state("networkidle")
    assert f"Key {key_id} revoked" in watched.page.inner_text("#revoked")
    assert httpx.post(base + "/v1/chat/completions", json=ask, headers=headers, timeout=30).status_code == 401
    assert watched.problems == []


def test_a_post_without_the_csrf_token_is_refused(watched: Watched, served: tuple[str, Site]) -> None:
    base, _ = served
    log_in(watched, base)
    watched.visit(base + "/ui/keys")
    status = watched.page.evaluate("""async () => {
        const r = await fetch('/ui/keys', {method: 'POST', body: new URLSearchParams({name: 'sneaky'}),
                                          credentials: 'same-origin'});
        return r.status;
    }""")
    assert status == 403
    watched.page.reload()
    assert "sneaky" not in watched.page.inner_text("#keys")


def test_readable_on_a_phone_and_in_the_dark(browser: Any, served: tuple[str, Site]) -> None:
    base, _ = served
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark", is_mobile=True)
    watched = Watched(context.new_page())
    try:
        log_in(watched, base)
        for path in PAGES:
            watched.visit(base + path)
            # Wide tables scroll inside their own box: the page itself never scrolls sideways.
            width = watched.page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 390, (path, width)
        background = watched.page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        red, green, blue = (int(v) for v in background.removeprefix("rgb(").rstrip(")").split(",")[:3])
        assert red + green + blue < 150, background  # dark
        assert watched.problems == []
    finally:
        context.close()


def test_overview_screenshot(watched: Watched, served: tuple[str, Site], tmp_path: Path) -> None:
    base, _ = served
    log_in(watched, base)
    watched.visit(base + "/ui/?window=30d")
    shot = tmp_path / "overview.png"
    watched.page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    if UPDATE_DOCS:
        shutil.copy(shot, DOCS / "dashboard-overview.png")
