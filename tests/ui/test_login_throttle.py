"""The login throttle: wrong keys slow the browser that typed them and, past a ceiling, everyone; never a second
person behind the same address (a reverse proxy, a NAT) for one attacker's guesses."""

from __future__ import annotations

from starlette.testclient import TestClient

from switchman.ui._throttle import LoginThrottle

from .conftest import MASTER_KEY, Site, csrf_of

def _attempt(browser: TestClient, key: str) -> int:
    form = browser.get("/ui/login")
    return browser.post("/ui/login", data={"key": key, "csrf": csrf_of(form.text)}, follow_redirects=False).status_code


def test_a_second_browser_behind_a_throttled_address_still_logs_in(site: Site) -> None:
    proxy = ("203.0.113.9", 443)  # every user arrives from the reverse proxy's address
    attacker, colleague = TestClient(site.app, client=proxy), TestClient(site.app, client=proxy)
    assert [_attempt(attacker, "sk-guess") for _ in range(10)] == [401] * 10
    assert _attempt(attacker, MASTER_KEY) == 429  # the guessing browser waits, even with the right key
    assert _attempt(colleague, MASTER_KEY) == 303


def test_one_login_guessed_from_many_addresses_is_throttled(site: Site) -> None:
    answers = [_attempt(TestClient(site.app, client=(f"198.51.100.{i}", 5000)), "sk-guess") for i in range(100)]
    assert answers == [401] * 100  # each address tried once: no browser is over its own limit
    assert _attempt(TestClient(site.app, client=("192.0.2.1", 5000)), "sk-guess") == 429
    assert _attempt(TestClient(site.app, client=("192.0.2.2", 5000)), MASTER_KEY) == 429


def test_the_ceiling_lifts_as_its_failures_leave_the_window() -> None:
    throttle = LoginThrottle(failures=3, window_s=60.0, ceiling=5)
    for i in range(5):
        throttle.failed(f"10.0.0.{i}", "form", now=100.0 + i)
    assert throttle.blocked("10.0.0.99", "other", now=105.0)
    assert throttle.blocked("10.0.0.99", "other", now=160.0)  # the first failure (100.0) is exactly 60 s old
    assert not throttle.blocked("10.0.0.99", "other", now=160.5)
    for i in range(50):
        throttle.failed(f"10.0.1.{i}", "form", now=200.0)
    assert len(throttle._everyone) == 5  # never more than the ceiling's timestamps


def test_a_browser_is_throttled_at_its_address_only() -> None:
    throttle = LoginThrottle(failures=3, window_s=60.0, ceiling=100)
    for _ in range(3):
        throttle.failed("10.0.0.1", "form-a", now=0.0)
    assert throttle.blocked("10.0.0.1", "form-a", now=1.0)
    assert not throttle.blocked("10.0.0.1", "form-b", now=1.0)
    assert not throttle.blocked("10.0.0.2", "form-a", now=1.0)
    assert not throttle.blocked("10.0.0.1", "form-a", now=61.0)
