"""The login throttle over real HTTP, against attackers who drop every cookie (a fresh login form each guess):
per address, per known device (a browser that logged in with the master key before), and a ceiling over newcomers. Addresses come
from X-Forwarded-For, which uvicorn believes from loopback (its default FORWARDED_ALLOW_IPS)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from itsdangerous import TimestampSigner
from starlette.testclient import TestClient

from switchman._config import parse_config
from switchman.gateway import Gateway
from switchman.ledger import LedgerRecord
from switchman.testing import FakeUpstream
from switchman.ui._access import DEVICE_TTL_S, Access
from switchman.ui._guard import DEVICE_COOKIE
from switchman.ui._throttle import LoginThrottle

from .conftest import MASTER_KEY, VIEWER_KEY, ServerThread, Site, close_gateway, config_data, csrf_of, make_site

PROXY = "203.0.113.9"  # everyone behind one reverse proxy arrives from its address


@pytest.fixture
def base(site: Site) -> Iterator[str]:
    with ServerThread(site.app) as url:
        yield url


def _attempt(base: str, key: str, address: str, device: str | None = None) -> httpx.Response:
    """One login from `address` by a client with no cookie but the form's (and `device`'s, when given)."""
    with httpx.Client(base_url=base, headers={"x-forwarded-for": address}, timeout=30) as http:
        if device is not None:
            http.cookies.set(DEVICE_COOKIE, device)
        form = http.get("/ui/login")
        return http.post("/ui/login", data={"key": key, "csrf": csrf_of(form.text)})


def _device(base: str) -> str:
    """A device cookie from a successful admin login (at an address of its own)."""
    response = _attempt(base, MASTER_KEY, "192.0.2.200")
    assert response.status_code == 303
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(f"{DEVICE_COOKIE}="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=2592000" in cookie
    return response.cookies[DEVICE_COOKIE]


def test_a_cookieless_guesser_gets_ten_tries_per_address_and_a_known_device_still_logs_in(base: str) -> None:
    assert [_attempt(base, "sk-guess", PROXY).status_code for _ in range(10)] == [401] * 10
    assert _attempt(base, MASTER_KEY, PROXY).status_code == 429  # the address waits, even with the right key
    colleague = _device(base)  # logged in from this browser before (elsewhere)
    assert _attempt(base, MASTER_KEY, "192.0.2.1").status_code == 303  # another address is not slowed
    assert _attempt(base, MASTER_KEY, PROXY, device=colleague).status_code == 303


def test_after_a_flood_from_many_addresses_known_devices_log_in_and_newcomers_wait(
        base: str, caplog: pytest.LogCaptureFixture) -> None:
    admin = _device(base)
    with caplog.at_level(logging.WARNING, logger="switchman.ui"):
        answers = [_attempt(base, "sk-guess", f"198.51.100.{i}").status_code for i in range(100)]
    assert answers == [401] * 100  # each address tried once
    assert _attempt(base, MASTER_KEY, "192.0.2.2").status_code == 429
    assert _attempt(base, MASTER_KEY, "192.0.2.3", device=admin).status_code == 303
    (tripped,) = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "switchman.ui"]
    assert "100 wrong keys" in tripped.getMessage() and "sk-guess" not in tripped.getMessage()


def test_a_tampered_device_cookie_counts_as_none(base: str) -> None:
    device = _device(base)
    tampered = device[:-2] + ("AA" if not device.endswith("AA") else "BB")  # its signature no longer matches
    for _ in range(10):
        _attempt(base, "sk-guess", PROXY)
    for forged in (tampered, "eyJ4Ijoi.forged.sig", ""):
        assert _attempt(base, MASTER_KEY, PROXY, device=forged).status_code == 429
    assert _attempt(base, MASTER_KEY, PROXY, device=device).status_code == 303


def test_a_device_cookie_made_under_another_secret_counts_as_none(
        base: str, upstream: FakeUpstream, filled_ledger: tuple[str, list[LedgerRecord]]) -> None:
    other = make_site(upstream, filled_ledger[0], filled_ledger[1], viewer=False)  # other keys: another secret
    with ServerThread(other.app) as elsewhere:
        foreign = _device(elsewhere)
    assert Access(master_key=MASTER_KEY, dashboard_key=None, loopback=True, ttl_s=60).device_of(foreign)
    for _ in range(10):
        _attempt(base, "sk-guess", PROXY)
    assert _attempt(base, MASTER_KEY, PROXY, device=foreign).status_code == 429


def test_only_the_master_key_makes_a_known_device(base: str) -> None:
    """The read-only key's holders could otherwise mint device cookies, each with its own tries at the master key."""
    viewer = _attempt(base, VIEWER_KEY, "192.0.2.201")
    assert viewer.status_code == 303 and "switchman_session" in viewer.cookies
    assert DEVICE_COOKIE not in viewer.cookies


def test_a_known_device_has_its_own_ten_tries() -> None:
    throttle = LoginThrottle(failures=3, window_s=60.0, ceiling=3)  # the device's failures alone would fill the ceiling
    for _ in range(3):
        throttle.failed("10.0.0.1", "device-a", now=0.0)
    assert throttle.retry_after("10.0.0.1", "device-a", now=1.0) > 0
    assert throttle.retry_after("10.0.0.1", "device-b", now=1.0) == 0
    assert throttle.retry_after("10.0.0.1", None, now=1.0) == 0  # a device's failures count neither for its address
    assert throttle.retry_after("10.0.0.2", None, now=1.0) == 0  # nor for the ceiling
    assert throttle.retry_after("10.0.0.1", "device-a", now=61.0) == 0


def test_the_ceiling_lifts_as_its_failures_leave_the_window_and_memory_stays_bounded() -> None:
    throttle = LoginThrottle(failures=3, window_s=60.0, ceiling=5, max_clients=4)
    for i in range(5):
        throttle.failed(f"10.0.0.{i}", None, now=100.0 + i)
    assert throttle.retry_after("10.0.0.99", None, now=105.0) > 0
    assert throttle.retry_after("10.0.0.99", "device", now=105.0) == 0
    assert throttle.retry_after("10.0.0.99", None, now=160.0) > 0  # the first failure (100.0) is exactly 60 s old
    assert throttle.retry_after("10.0.0.99", None, now=160.5) == 0
    for i in range(50):
        throttle.failed(f"10.0.1.{i}", None, now=300.0 + i * 61)
        throttle.failed("10.0.2.1", f"device-{i}", now=300.0)
    assert len(throttle._newcomers) <= 5
    assert len(throttle._addresses) == 4 and len(throttle._devices) == 4


def test_a_short_master_or_dashboard_key_is_warned_about_once_at_start(
        upstream: FakeUpstream, filled_ledger: tuple[str, list[LedgerRecord]], caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config(config_data(upstream, filled_ledger[0]))
    for master, viewer, short in ((MASTER_KEY, VIEWER_KEY, []), ("sk-short-master", VIEWER_KEY, ["MASTER"]),
                                  ("sk-short-master", "sk-viewer-19-chars!", ["MASTER", "DASHBOARD"])):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="switchman.gateway"):
            gateway = Gateway.from_config(config, env={"FAKE_KEY": "unused", "SWITCHMAN_MASTER_KEY": master,
                                                       "SWITCHMAN_DASHBOARD_KEY": viewer})
        close_gateway(gateway)
        lines = [r.getMessage() for r in caplog.records if "characters" in r.getMessage()]
        assert len(lines) == (1 if short else 0), lines
        for line in lines:
            assert [n for n in ("MASTER", "DASHBOARD") if f"SWITCHMAN_{n}_KEY" in line] == short
            assert master not in line and viewer not in line


def test_the_device_cookie_is_secure_over_https(site: Site) -> None:
    with TestClient(site.app, base_url="https://testserver") as https:
        form = https.get("/ui/login")
        response = https.post("/ui/login", data={"key": MASTER_KEY, "csrf": csrf_of(form.text)},
                              follow_redirects=False)
    assert response.status_code == 303
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(f"{DEVICE_COOKIE}="))
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie


def test_a_sustained_flood_warns_about_once_per_window_and_says_when_it_clears(caplog: pytest.LogCaptureFixture) -> None:
    """Each slot that frees is refilled at once under a flood: one WARNING per refill was ~ceiling per window."""
    throttle = LoginThrottle(failures=3, window_s=60.0, ceiling=5)
    warned: list[float] = []

    def flood(start: int, seconds: int) -> None:
        for second in range(start, start + seconds):
            for attempt in range(3):  # three guessers each second, each from an address of its own
                now = second + attempt / 10
                caplog.clear()
                if throttle.retry_after(f"10.{second}.0.{attempt}", None, now=now) == 0:
                    throttle.failed(f"10.{second}.0.{attempt}", None, now=now)
                warned.extend(now for r in caplog.records if r.levelno == logging.WARNING)

    with caplog.at_level(logging.INFO, logger="switchman.ui"):
        flood(0, 300)  # five windows
        assert len(warned) == 5, warned
        assert all(later - earlier >= 60.0 for earlier, later in zip(warned, warned[1:], strict=False))
        caplog.clear()
        assert throttle.retry_after("10.9.9.9", None, now=400.0) == 0  # quiet for more than a window: cleared
        assert [r.levelno for r in caplog.records] == [logging.INFO]
        assert throttle.retry_after("10.9.9.9", None, now=401.0) == 0
        assert [r.levelno for r in caplog.records] == [logging.INFO]  # said once
        warned.clear()
        flood(500, 2)  # a new flood warns at once
        assert len(warned) == 1


def test_a_device_cookie_older_than_its_ttl_is_refused_by_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The browser drops it after Max-Age, but a kept copy must not stay a known device (with its own tries)."""
    access = Access(master_key=MASTER_KEY, dashboard_key=VIEWER_KEY, loopback=True, ttl_s=60)
    real = TimestampSigner.get_timestamp

    def minted(age_s: int) -> str:
        with monkeypatch.context() as patch:
            patch.setattr(TimestampSigner, "get_timestamp", lambda self: real(self) - age_s)
            return access.device_cookie()

    assert access.device_of(minted(DEVICE_TTL_S - 60)) is not None
    assert access.device_of(minted(DEVICE_TTL_S + 60)) is None


def test_a_429_says_when_to_come_back(site: Site) -> None:
    """Retry-After: whole seconds until the failure that filled the bucket leaves the window (clock injected)."""
    mounted = next(r.app for r in site.app.routes if getattr(r, "path", "") == "/ui")  # the dashboard's app
    now = [1000.0]
    mounted.state.dashboard.throttle = LoginThrottle(failures=2, window_s=300.0, ceiling=100, clock=lambda: now[0])
    with ServerThread(site.app) as base:
        for at in (1000.0, 1010.0):
            now[0] = at
            assert _attempt(base, "sk-guess", PROXY).status_code == 401
        now[0] = 1100.5
        blocked = _attempt(base, MASTER_KEY, PROXY)
        assert blocked.status_code == 429 and blocked.headers["retry-after"] == "200"  # 1000 + 300 - 1100.5, rounded up
        now[0] = 1300.0  # the first failure is exactly 300 s old: still in the window
        assert _attempt(base, MASTER_KEY, PROXY).headers["retry-after"] == "1"
        now[0] = 1300.5
        assert _attempt(base, MASTER_KEY, PROXY).status_code == 303
        assert "retry-after" not in _attempt(base, "sk-guess", "192.0.2.9").headers


def test_retry_after_waits_for_every_full_bucket() -> None:
    throttle = LoginThrottle(failures=2, window_s=60.0, ceiling=3)
    assert throttle.retry_after("10.0.0.1", None, now=0.0) == 0
    throttle.failed("10.0.0.1", None, now=0.0)
    throttle.failed("10.0.0.1", None, now=10.0)  # the address is full until 0.0 leaves
    assert throttle.retry_after("10.0.0.1", None, now=20.0) == 41
    throttle.failed("10.0.0.2", None, now=30.0)  # the ceiling is full until 0.0 leaves too
    assert throttle.retry_after("10.0.0.3", None, now=30.0) == 31
    for at in (40.0, 41.0):
        throttle.failed("10.0.0.9", "device", now=at)
    assert throttle.retry_after("10.0.0.1", "device", now=50.0) == 51  # the device's own bucket only
    assert throttle.retry_after("10.0.0.1", None, now=61.0) == 0
