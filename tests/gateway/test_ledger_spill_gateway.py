"""A gateway stopped while its ledger is away: the rows go to the spill directory its configuration names, and the
next gateway writes them (server.ledger_close_timeout_s, server.ledger_spill_dir)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from switchman._config import ConfigError, parse_config
from switchman.gateway import Gateway, build_app
from switchman.ledger import _db
from switchman.testing import FakeUpstream

from .conftest import ASK, ENV, SECRETS, config_data


def test_a_gateway_stopped_with_its_ledger_locked_spills_and_the_next_start_writes_the_rows(
        upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_db, "SQLITE_BUSY_TIMEOUT_S", 0.05)
    db, spill = tmp_path / "l.sqlite3", tmp_path / "spill"
    data = config_data(upstream, f"sqlite:///{db}")
    data["server"] |= {"ledger_close_timeout_s": 0.5, "ledger_spill_dir": str(spill)}
    config = parse_config(data)
    first = Gateway.from_config(config, env=ENV)
    assert first.ledger is not None
    first.ledger.count()  # the tables, before the database goes away
    ids = []
    with TestClient(build_app(first)) as client:
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        for model in ("cheap", "locked", "mid"):  # "locked": the upstream refuses its key (an error row)
            answer = client.post("/v1/chat/completions", json={"model": model, "messages": ASK})
            ids.append(answer.headers["x-switchman-request-id"])
    lock.execute("COMMIT")  # the gateway has stopped: its rows are in the spill file
    lock.close()
    [name] = [p.name for p in spill.iterdir()]
    text = (spill / name).read_text()
    assert all(rid in text for rid in ids)
    assert not any(secret in text for secret in SECRETS)  # rows hold no provider key (errors are scrubbed)

    second = Gateway.from_config(config, env=ENV)
    assert second.ledger is not None
    with TestClient(build_app(second)):
        deadline = time.monotonic() + 15
        while any(spill.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert sorted(r.request_id for r in second.ledger.records()) == sorted(ids)
    assert not any(spill.iterdir())


def test_the_spill_dir_defaults_to_the_state_dir_of_the_environment_given(
        upstream: FakeUpstream, tmp_path: Path) -> None:
    env = ENV | {"XDG_STATE_HOME": str(tmp_path / "state")}  # not the process's (the autouse fixture's)
    gateway = Gateway.from_config(parse_config(config_data(upstream, f"sqlite:///{tmp_path / 'l.sqlite3'}")), env=env)
    assert gateway.ledger is not None and gateway.ledger._replayer.spill is not None
    assert gateway.ledger._replayer.spill.path == tmp_path / "state" / "switchman" / "ledger-spill"
    assert gateway.ledger._close_timeout == 10.0
    assert not gateway.ledger._replayer.spill.path.exists()  # made when a close first needs it


def test_a_gateway_with_no_home_starts_without_a_spill_dir(
        upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No $HOME and no passwd entry (a container's arbitrary uid): Path.home() raises; the gateway still starts."""
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    gateway = Gateway.from_config(parse_config(config_data(upstream, f"sqlite:///{tmp_path / 'l.sqlite3'}")), env=ENV)
    assert gateway.ledger is not None and gateway.ledger._replayer.spill is None


@pytest.mark.parametrize(("value", "why"), [
    (-1, "greater than or equal to 0"), (float("inf"), "finite number"), (float("nan"), "finite number"),
    ("soon", "valid number"),
])
def test_the_close_timeout_setting_is_checked(value: object, why: str) -> None:
    with pytest.raises(ConfigError, match=rf"server\.ledger_close_timeout_s: Input should be a? ?{why}"):
        parse_config({"models": {"gpt-4o-mini": {"provider": "openai"}}, "server": {"ledger_close_timeout_s": value}})


def test_the_sdks_in_process_gateway_takes_the_same_settings(upstream: FakeUpstream, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from switchman import Router

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    data = config_data(upstream, f"sqlite:///{tmp_path / 'l.sqlite3'}")
    data["server"] |= {"ledger_close_timeout_s": 0, "ledger_spill_dir": str(tmp_path / "spill")}
    router = Router.from_dict(data)
    try:
        router.chat("hello", model="cheap")
        ledger = router._client().dispatcher.ledger
        assert ledger is not None and ledger._replayer.spill is not None
        assert (ledger._close_timeout, ledger._replayer.spill.path) == (0.0, tmp_path / "spill")
    finally:
        router.close()
