"""After a reload that adds a provider, that provider's key is scrubbed from the gateway's error answers: the error
renderer reads the live dispatcher's scrubber, not the one built from the startup configuration's keys."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml
from server_support import LoopbackServer

from switchman._config import parse_config
from switchman.gateway import ConfigReloader, Gateway, build_app
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
