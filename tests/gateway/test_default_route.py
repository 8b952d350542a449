"""`switchman init` → `serve` → route: the default configuration routes with the bundled router."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from switchman._config import parse_config
from switchman.cli._serve import init_command
from switchman.gateway import Gateway, build_app
from switchman.testing import FakeUpstream

from .conftest import ENV, OPENAI_KEY, ServerThread

EASY = "Draft a job posting for a part-time barista at a neighbourhood cafe."
HARD = ("Alice is taller than Bob. Bob is taller than Carol. Carol is taller than Dave. Is Dave taller than Alice? "
        "Explain step by step.")


@pytest.fixture
def default_gateway(tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The configuration `switchman init` writes with OpenAI and Anthropic keys set, served on the fake upstream."""
    monkeypatch.setenv("OPENAI_API_KEY", "set")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "set")
    monkeypatch.setattr("switchman.gateway._defaults.local_models", list)
    written = init_command(tmp_path / "switchman.yaml")
    data = yaml.safe_load((tmp_path / "switchman.yaml").read_text())
    assert written == list(data["models"])  # the models init says it wrote
    route = data["routes"]["default"]
    assert (route["strategy"], route["router"], route["target"]) == ("learned", "bundled", "quality=0.95")
    # Two of its models, both answered by the fake upstream: gpt-4o-mini (public score 1317, $0.15/$0.60)
    # and claude-sonnet-4-5 (1445, $3/$15). Everything else is as init wrote it.
    fake = {"kind": "openai", "base_url": upstream.openai_base_url, "api_key_env": "FAKE_OPENAI_KEY"}
    data["providers"] = {"openai": fake, "anthropic": fake}
    route["candidates"] = ["gpt-4o-mini", "claude-sonnet-4-5"]
    data["models"] = {m: data["models"][m] for m in route["candidates"]}
    data["server"]["ledger_url"] = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    gateway = Gateway.from_config(parse_config(data), env=ENV)
    with ServerThread(build_app(gateway)) as url:
        yield url


def _served_by(url: str, prompt: str) -> str:
    response = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
        "model": "auto", "messages": [{"role": "user", "content": prompt}], "max_tokens": 50})
    assert response.status_code == 200, response.text
    assert OPENAI_KEY not in response.text
    return response.headers["x-switchman-model"]


def test_a_hard_prompt_goes_up_and_an_easy_one_down(default_gateway: str) -> None:
    assert _served_by(default_gateway, HARD) == "claude-sonnet-4-5"
    assert _served_by(default_gateway, EASY) == "gpt-4o-mini"


def test_route_explains_every_candidate(default_gateway: str) -> None:
    response = httpx.post(f"{default_gateway}/v1/route", timeout=30,
                          json={"model": "auto", "messages": [{"role": "user", "content": HARD}]})
    assert response.status_code == 200, response.text
    decision = response.json()
    assert decision["model"] == "claude-sonnet-4-5" and decision["strategy"] == "learned"
    scores = {c["model"]: c for c in decision["candidates"]}
    assert set(scores) == {"gpt-4o-mini", "claude-sonnet-4-5"}
    assert all(0 < c["predicted_quality"] < 1 and c["predicted_cost_usd"] > 0 for c in scores.values())
    assert scores["claude-sonnet-4-5"]["predicted_quality"] > scores["gpt-4o-mini"]["predicted_quality"]
    assert "gpt-4o-mini would" in decision["reason"] or "has the best" in decision["reason"]
