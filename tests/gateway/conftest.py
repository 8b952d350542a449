"""A real gateway on loopback in front of the fake upstream, shared by the session.

Each test starts from a clean slate: no pending faults, fresh health board, a sleep that records
the back-off delays instead of waiting them out.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from clock_support import Clock
from server_support import ServerThread

from switchman import Router
from switchman._config import Config, parse_config
from switchman._config_server import CircuitBreaker
from switchman.gateway import Gateway, HealthBoard, build_app
from switchman.ledger import KeyStore, LedgerRecord
from switchman.testing import FakeUpstream

OPENAI_KEY = "sk-upstream-openai-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-upstream-fedcba9876543210"
WRONG_KEY = "sk-wrong-secret-55aa55aa55aa55aa"
MASTER_KEY = "sk-master-switchman-0f0f0f0f0f0f"
ENV = {"FAKE_OPENAI_KEY": OPENAI_KEY, "FAKE_ANTHROPIC_KEY": ANTHROPIC_KEY, "FAKE_WRONG_KEY": WRONG_KEY}
SECRETS = (OPENAI_KEY, ANTHROPIC_KEY, WRONG_KEY, MASTER_KEY)

CAPS = ["tools", "json", "vision"]
ASK = [{"role": "user", "content": "hello"}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Look something up",
                                           "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]


def config_data(upstream: FakeUpstream, ledger_url: str) -> dict[str, Any]:
    """Models on the fake: cheap < mid < big by price; cheap and mid share a small window."""
    openai = {"kind": "openai", "base_url": upstream.openai_base_url, "api_key_env": "FAKE_OPENAI_KEY"}
    return {
        "providers": {
            "fake-openai": openai,
            "fake-anthropic": {"kind": "anthropic", "base_url": upstream.anthropic_base_url,
                               "api_key_env": "FAKE_ANTHROPIC_KEY"},
            "fake-wrong-key": {**openai, "api_key_env": "FAKE_WRONG_KEY"},
        },
        "models": {
            "cheap": {"provider": "fake-openai", "input_price": 0.1, "output_price": 0.2, "context_window": 8000,
                      "capabilities": CAPS},
            "mid": {"provider": "fake-openai", "input_price": 1.0, "output_price": 2.0, "context_window": 8000,
                    "capabilities": CAPS},
            "big": {"provider": "fake-openai", "input_price": 5.0, "output_price": 10.0, "context_window": 128000,
                    "capabilities": CAPS},
            "safe": {"provider": "fake-openai", "input_price": 0.5, "output_price": 1.0, "capabilities": CAPS},
            "slow": {"provider": "fake-openai", "input_price": 0.05, "output_price": 0.1, "capabilities": CAPS,
                     "timeouts": {"connect": 1.0, "first_byte": 0.3, "total": 5.0}},
            "claude": {"provider": "fake-anthropic", "model": "claude-test", "input_price": 3.0,
                       "output_price": 15.0, "context_window": 200000, "capabilities": CAPS},
            "locked": {"provider": "fake-wrong-key", "input_price": 0.01, "output_price": 0.01,
                       "capabilities": CAPS},
            "text-embedding-3-small": {"provider": "fake-openai", "input_price": 0.02,
                      "output_price": 0.0, "capabilities": []},
            "basic": {"provider": "fake-openai", "input_price": 0.01, "output_price": 0.02, "capabilities": []},
        },
        "routes": {
            "default": {"candidates": ["cheap", "mid", "big"], "strategy": "cheapest",
                        "content_policy_fallback": "safe"},
            "strict": {"candidates": ["cheap", "mid"], "strategy": "cheapest"},
            "fast": {"candidates": ["cheap", "mid"], "strategy": "cheapest", "max_ttft_ms": 500},
            "slowroute": {"candidates": ["slow", "big"], "strategy": "cheapest"},
            "claude": {"candidates": ["claude"], "strategy": "fixed", "model": "claude"},
            "budgeted": {"candidates": ["mid"], "strategy": "cheapest"},
            "plain": {"candidates": ["basic"], "strategy": "cheapest"},
        },
        "default_route": "default",
        "agents": {"penny": {"max_price_usd": 1e-9}},
        "budgets": [{"scope": "agent", "name": "frugal", "usd": 0.002, "period": "day"},
                    {"scope": "agent", "name": "broke", "usd": 1e-12, "period": "day"},
                    {"scope": "agent", "name": "thrifty", "usd": 1e-9, "on_exceed": "downgrade",
                     "downgrade_to": "cheap"}],
        "server": {
            "ledger_url": ledger_url,
            "max_body_bytes": 200_000,
            "retries": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 1.0},
            "circuit_breaker": {"failures": 3, "cooldown_s": 30.0},
            "timeouts": {"connect": 2.0, "first_byte": 5.0, "total": 20.0},
        },
    }


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_keys={OPENAI_KEY, ANTHROPIC_KEY}) as fake:
        yield fake


@pytest.fixture(scope="session")
def ledger_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'ledger.sqlite3'}"


@pytest.fixture(scope="session")
def config(upstream: FakeUpstream, ledger_url: str) -> Config:
    return parse_config(config_data(upstream, ledger_url))


@pytest.fixture(scope="session")
def gateway(config: Config) -> Gateway:
    return Gateway.from_config(config, env=ENV)


@pytest.fixture(scope="session")
def server(gateway: Gateway) -> Iterator[str]:
    with ServerThread(build_app(gateway), gateway.config.server.limits) as url:
        yield url


class CallThread(threading.Thread):
    """`call` in a daemon thread; once it ends, `outcome` holds what it raised, or None when it returned (and `result`
    what it returned)."""

    def __init__(self, call: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self._call = call
        self.outcome: list[BaseException | None] = []
        self.result: object = None  # what the call returned, once `outcome` says it returned

    def run(self) -> None:
        try:
            self.result = self._call()
            self.outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - what the call raised is the test's assertion
            self.outcome.append(exc)


def sdk_ledger_url(tmp_path: Path) -> str:
    """The ledger of an SDK test's Router (`sdk_config`)."""
    return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"


def sdk_config(upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The shared configuration for an SDK Router of its own (ledger at `sdk_ledger_url`), the upstream's keys in
    the environment, the fake upstream's faults and requests cleared."""
    monkeypatch.setenv("FAKE_OPENAI_KEY", OPENAI_KEY)
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", ANTHROPIC_KEY)
    upstream.clear()
    return config_data(upstream, sdk_ledger_url(tmp_path))


@pytest.fixture
def sdk_router(upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Router]:
    """The SDK's Router on the shared configuration (its own ledger), closed at the end (safe to repeat)."""
    router = Router.from_dict(sdk_config(upstream, tmp_path, monkeypatch))
    yield router
    router.close()


@pytest.fixture
def base_url(server: str) -> str:
    return server + "/v1"


@pytest.fixture
def http(server: str) -> Iterator[httpx.Client]:
    """A plain HTTP client on the shared gateway (for raw bodies and headers)."""
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    """The real openai client pointed at the shared gateway (no client-side retries)."""
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture(autouse=True)
def clean_slate(request: pytest.FixtureRequest, sleeps: list[float], clock: Clock) -> Iterator[None]:
    if "gateway" not in request.fixturenames:
        yield
        return
    gateway: Gateway = request.getfixturevalue("gateway")
    upstream: FakeUpstream = request.getfixturevalue("upstream")
    dispatcher = gateway.dispatcher
    upstream.clear()
    dispatcher.health = HealthBoard(CircuitBreaker(failures=3, cooldown_s=30.0), clock=clock)
    original_sleep = dispatcher.sleep

    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    dispatcher.sleep = record_sleep
    yield
    dispatcher.sleep = original_sleep
    upstream.clear()


@contextlib.contextmanager
def served_with_key(data: dict[str, Any], headers: Mapping[str, str] | None = None) -> Iterator[httpx.Client]:
    """The gateway `data` configures (master key on), on loopback, and a client holding a new virtual key made in its
    ledger (`data["server"]["ledger_url"]`), sending `headers` too."""
    store = KeyStore(data["server"]["ledger_url"])
    key = store.create("one")[1]
    store.close()
    built = Gateway.from_config(parse_config(data), env={**ENV, "SWITCHMAN_MASTER_KEY": MASTER_KEY})
    with ServerThread(build_app(built)) as base, httpx.Client(
            base_url=base, timeout=30, headers={"authorization": f"Bearer {key}", **(headers or {})}) as client:
        yield client


def fresh_ledger_url(tmp_path: Path) -> str:
    """A SQLite ledger of its own under `tmp_path` (a test may start several gateways there)."""
    return f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.sqlite3'}"


def ledger_row(gateway: Gateway, request_id: str) -> LedgerRecord:
    """The request's one ledger row (a stream's is written just after its last byte: waited for, 30 s at most, so a
    loaded machine does not fail the test; a row that is there ends the wait at once)."""
    assert gateway.ledger is not None
    deadline = time.monotonic() + 30.0
    while True:
        gateway.ledger.flush_sync(timeout=5)
        found = gateway.ledger.find(request_id)
        if found is not None:
            rows = [r for r in gateway.ledger.records() if r.request_id == request_id]
            assert len(rows) == 1, rows
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no ledger row for {request_id} after 30 s")
        time.sleep(0.02)


@pytest.fixture
def ledger_record(gateway: Gateway) -> Callable[[str], LedgerRecord]:
    """`ledger_row` of the session's gateway."""
    return functools.partial(ledger_row, gateway)


@pytest.fixture
def tmp_config_file(tmp_path: Path, upstream: FakeUpstream) -> Callable[..., Path]:
    def write(**overrides: Any) -> Path:
        import yaml

        data = config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
        data.update(overrides)
        path = tmp_path / "switchman.yaml"
        path.write_text(yaml.safe_dump(data))
        return path

    return write


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
