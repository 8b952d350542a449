"""Shadow routing: the shadow decision lands in the ledger; the response is the same with or without it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from switchman._config import parse_config
from switchman.gateway import Gateway, build_app
from switchman.learn._artifact import TrainedRouter
from switchman.testing import FakeUpstream

from .conftest import ENV, ServerThread, config_data, ledger_row

MATH = "Calculate the square root of 1764 and explain each step."
GREETING = "Hello, good evening to you!"


def _gateway(upstream: FakeUpstream, tmp_path: Path, router_file: Path) -> Gateway:
    data = config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    aliases = {"cheap-model": "cheap", "strong-model": "big"}
    data["routes"] = {
        "plain": {"candidates": ["cheap", "big"], "strategy": "cheapest"},
        "shadowed": {"candidates": ["cheap", "big"], "strategy": "cheapest", "shadow": str(router_file),
                     "aliases": aliases},
    }
    data["default_route"] = "plain"
    return Gateway.from_config(parse_config(data), env=ENV)


def _ask(http: httpx.Client, route: str, prompt: str) -> tuple[httpx.Response, str]:
    response = http.post("/v1/chat/completions",
                         json={"model": f"auto:{route}", "messages": [{"role": "user", "content": prompt}]})
    assert response.status_code == 200, response.text
    return response, response.headers["x-switchman-request-id"]


def test_shadow_decisions_are_logged_and_change_nothing(upstream: FakeUpstream, tmp_path: Path,
                                                        math_greeting_router: TrainedRouter) -> None:
    router_file = math_greeting_router.save(tmp_path / "shadow.safetensors")
    gateway = _gateway(upstream, tmp_path, router_file)
    with ServerThread(build_app(gateway)) as url, httpx.Client(base_url=url, timeout=30) as http:
        plain, plain_id = _ask(http, "plain", MATH)
        shadowed, math_id = _ask(http, "shadowed", MATH)
        _, greeting_id = _ask(http, "shadowed", GREETING)
        # Same model, same body (apart from the upstream's own id/created), same routing headers.
        assert shadowed.headers["x-switchman-model"] == plain.headers["x-switchman-model"] == "cheap"
        assert shadowed.headers["x-switchman-cost-usd"] == plain.headers["x-switchman-cost-usd"]
        strip = ("id", "created")
        assert {k: v for k, v in shadowed.json().items() if k not in strip} == \
            {k: v for k, v in plain.json().items() if k not in strip}
    # The server has stopped: every shadow decision was made and written before the ledger closed.
    math, greeting, unshadowed = (ledger_row(gateway, i) for i in (math_id, greeting_id, plain_id))
    assert (math.model, math.shadow_model) == ("cheap", "big")  # the router would send math to the strong model
    assert (greeting.model, greeting.shadow_model) == ("cheap", "cheap")
    assert math.shadow_quality is not None and math.shadow_quality > 0.9
    assert math.shadow_cost_usd is not None and math.shadow_cost_usd > greeting.shadow_cost_usd > 0  # type: ignore[operator]
    assert unshadowed.shadow_model is None and unshadowed.shadow_cost_usd is None


def test_a_missing_shadow_file_costs_nothing_but_the_shadow(upstream: FakeUpstream, tmp_path: Path) -> None:
    gateway = _gateway(upstream, tmp_path, tmp_path / "missing.safetensors")
    with ServerThread(build_app(gateway)) as url, httpx.Client(base_url=url, timeout=30) as http:
        _, request_id = _ask(http, "shadowed", MATH)
    record = ledger_row(gateway, request_id)
    assert record.model == "cheap" and record.shadow_model is None


def test_streamed_answers_get_their_shadow_too(upstream: FakeUpstream, tmp_path: Path,
                                               math_greeting_router: TrainedRouter) -> None:
    gateway = _gateway(upstream, tmp_path, math_greeting_router.save(tmp_path / "shadow.safetensors"))
    body = {"model": "auto:shadowed", "stream": True, "messages": [{"role": "user", "content": MATH}]}
    with ServerThread(build_app(gateway)) as url, httpx.Client(base_url=url, timeout=30) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            text = "".join(response.iter_text())
            request_id = response.headers["x-switchman-request-id"]
        assert text.rstrip().endswith("data: [DONE]")
    record = ledger_row(gateway, request_id)
    assert (record.model, record.shadow_model) == ("cheap", "big")


class _BrokenShadow:
    """A shadow strategy whose decision fails with no SwitchmanError (its embedder's download, a bug)."""

    def decide(self, *args: object, **kwargs: object) -> None:
        raise OSError("embedder weights could not be fetched")


def test_a_shadow_decision_that_raises_costs_nothing_but_the_shadow(upstream: FakeUpstream, tmp_path: Path,
                                                                     math_greeting_router: TrainedRouter) -> None:
    """Before, any error of the shadow decision but a SwitchmanError ended the task that was to queue the
    record: the request's ledger row was lost."""
    router_file = math_greeting_router.save(tmp_path / "shadow.safetensors")
    gateway = _gateway(upstream, tmp_path, router_file)
    gateway.decider.shadow_strategy = lambda route: _BrokenShadow()  # type: ignore[method-assign,assignment,return-value]
    with ServerThread(build_app(gateway)) as url, httpx.Client(base_url=url, timeout=30) as http:
        _, first = _ask(http, "shadowed", MATH)
        _, second = _ask(http, "shadowed", GREETING)
    for request_id in (first, second):
        record = ledger_row(gateway, request_id)
        assert record.model == "cheap" and record.shadow_model is None


def test_a_failing_shadow_decision_keeps_the_record_and_is_logged_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A bad shadow file is one warning line (no traceback); any other failure (a bug) is logged with its traceback;
    either way the record is queued, and only the first failure of a recorder is logged."""
    from switchman import ConfigError
    from switchman.gateway import _shadow

    failures: list[Exception] = [ConfigError("shadow.safetensors: not found"), RuntimeError("a bug")]

    def fails(*_: object) -> object:
        raise failures[0]

    monkeypatch.setattr(_shadow, "shadow_fields", fails)
    queued: list[object] = []
    ledger = SimpleNamespace(record=lambda record: queued.append(record) or len(queued))
    decider = SimpleNamespace(config=SimpleNamespace(server=SimpleNamespace(store_prompts=False), routes={}))
    decision = SimpleNamespace(route="shadowed")
    logged = []
    for failure in list(failures):
        failures[0] = failure
        recorder = _shadow.Recorder(decider)  # type: ignore[arg-type]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="switchman.gateway"):
            for _ in range(2):
                asyncio.run(recorder._shadow_then_record(ledger, "row", None, decision))  # type: ignore[arg-type]
        logged.append([(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records])
    assert queued == ["row"] * 4
    assert logged == [
        [(logging.WARNING, "shadow router for route shadowed failed: shadow.safetensors: not found", False)],
        [(logging.ERROR, "shadow router for route shadowed failed; recording without its decision", True)],
    ]
