"""After a reload, every provider key any dispatcher has served with is scrubbed from the gateway's error answers: a
provider the reload added (the startup configuration's scrubber does not know its key), and one it removed while a
request to it was still running on the retired dispatcher (the live one does not know that key any more)."""

from __future__ import annotations

import asyncio
import copy
import threading
from pathlib import Path
from typing import Any

import httpx
import yaml
from server_support import LoopbackServer

from switchman._config import parse_config
from switchman.gateway import Completion, ConfigReloader, Gateway, build_app
from switchman.testing import FakeUpstream

from .conftest import ENV, config_data

#: A key the fake upstream does not know (so it echoes it in its 401), not shaped like one (no `sk-`): only the
#: configured secrets' list can redact it.
NEW_SECRET = "plainsecretvalue0123456789"


def test_a_provider_added_by_a_reload_has_its_key_scrubbed_from_errors(upstream: FakeUpstream, tmp_path: Path) -> None:
    data = config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    gateway = Gateway.from_config(parse_config(data), base_dir=tmp_path, env={**ENV, "NEW_PROVIDER_KEY": NEW_SECRET})
    data["providers"]["fake-new"] = {"kind": "openai", "base_url": upstream.openai_base_url,
                                     "api_key_env": "NEW_PROVIDER_KEY"}
    data["models"]["fresh"] = {"provider": "fake-new", "input_price": 0.01, "output_price": 0.01}
    data["routes"]["fresh"] = {"candidates": ["fresh"], "strategy": "cheapest"}
    path = tmp_path / "switchman.yaml"
    path.write_text(yaml.safe_dump(data))
    upstream.clear()
    reloader = ConfigReloader(gateway, path)
    with LoopbackServer(build_app(gateway, reloader=reloader)) as server, \
            httpx.Client(base_url=server.url, timeout=30) as http:
        assert server.call(reloader.reload) is True
        answer = http.post("/v1/chat/completions", json={"model": "auto:fresh",
                                                         "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code >= 400 and answer.json()["error"]["message"], answer.text
    assert upstream.requests and upstream.requests[-1].headers["authorization"] == f"Bearer {NEW_SECRET}"
    assert NEW_SECRET not in answer.text and "[redacted]" in answer.text, answer.text


def test_a_provider_removed_by_a_reload_has_its_key_scrubbed_from_its_running_requests_error(
        upstream: FakeUpstream, tmp_path: Path) -> None:
    data = config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    data["providers"]["fake-new"] = {"kind": "openai", "base_url": upstream.openai_base_url,
                                     "api_key_env": "NEW_PROVIDER_KEY"}
    data["models"]["fresh"] = {"provider": "fake-new", "input_price": 0.01, "output_price": 0.01}
    data["routes"]["fresh"] = {"candidates": ["fresh"], "strategy": "cheapest"}
    data["server"]["retries"] = {"attempts": 1, "backoff_s": 0.0}
    gateway = Gateway.from_config(parse_config(data), base_dir=tmp_path, env={**ENV, "NEW_PROVIDER_KEY": NEW_SECRET})
    reloaded = copy.deepcopy(data)
    del reloaded["providers"]["fake-new"], reloaded["models"]["fresh"], reloaded["routes"]["fresh"]
    path = tmp_path / "switchman.yaml"
    path.write_text(yaml.safe_dump(reloaded))
    upstream.clear()
    retired = gateway.dispatcher
    complete = retired.complete
    entered, release = threading.Event(), threading.Event()

    async def held(*args: Any, **kwargs: Any) -> Completion:
        """The request waits on the dispatcher it bound until the reload has landed, then goes upstream."""
        entered.set()
        while not release.is_set():
            await asyncio.sleep(0.01)
        return await complete(*args, **kwargs)

    retired.complete = held  # type: ignore[method-assign]
    reloader = ConfigReloader(gateway, path)
    answers: list[httpx.Response] = []
    with LoopbackServer(build_app(gateway, reloader=reloader)) as server, \
            httpx.Client(base_url=server.url, timeout=30) as http:
        sender = threading.Thread(target=lambda: answers.append(http.post(
            "/v1/chat/completions", json={"model": "auto:fresh", "messages": [{"role": "user", "content": "hi"}]})))
        sender.start()
        try:
            assert entered.wait(30)
            assert server.call(reloader.reload) is True
            assert gateway.dispatcher is not retired and "fake-new" not in gateway.config.providers
        finally:
            release.set()
            sender.join(30)
    [answer] = answers
    assert answer.status_code >= 400 and answer.json()["error"]["message"], answer.text
    assert upstream.requests and upstream.requests[-1].headers["authorization"] == f"Bearer {NEW_SECRET}"
    assert NEW_SECRET not in answer.text and "[redacted]" in answer.text, answer.text
