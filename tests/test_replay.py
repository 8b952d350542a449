"""Replay: a router over logged traffic; totals checked against a hand calculation."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from switchman._exceptions import DatasetError
from switchman.cli._replay import replay_command
from switchman.evaluate import OutcomeTable
from switchman.learn._artifact import TrainedRouter
from switchman.ledger import Ledger, LedgerRecord

PRICES = {"cheap-model": (0.1, 0.2), "strong-model": (10.0, 30.0)}  # the synthetic router's fitted prices


def _ledger(path: Path, records: list[LedgerRecord]) -> str:
    url = f"sqlite:///{path}"
    ledger = Ledger(url)
    for rec in records:
        ledger.record(rec)
    ledger.close_sync()
    return url


def _traffic(now: float) -> list[LedgerRecord]:
    return [
        LedgerRecord(time=now, request_id="g1", model="strong-model", prompt="Hello, good evening to you!",
                     input_tokens=10, output_tokens=70, cost_usd=0.001),
        LedgerRecord(time=now, request_id="g2", model="strong-model", prompt="Hi! Lovely to meet you, how have you been?",
                     input_tokens=12, output_tokens=75, cost_usd=0.001),
        LedgerRecord(time=now, request_id="m1", model="cheap-model",
                     prompt="Calculate the square root of 1764 and explain each step.",
                     input_tokens=20, output_tokens=40, cost_usd=0.00001),
        LedgerRecord(time=now, request_id="e1", model="cheap-model", prompt="Hello", status="error"),  # not replayed
        LedgerRecord(time=now, request_id="n1", model="cheap-model", input_tokens=5, cost_usd=1.0),  # no prompt
    ]


def test_replay_totals_equal_a_hand_calculation(tmp_path: Path, math_greeting_router: TrainedRouter) -> None:
    import time

    router_file = math_greeting_router.save(tmp_path / "router.safetensors")
    url = _ledger(tmp_path / "ledger.sqlite3", _traffic(time.time()))
    out = tmp_path / "replay.json"
    report = replay_command(router=router_file, ledger=url, since="1d", json_path=out,
                            console=Console(file=io.StringIO()))
    # Greetings go to the cheap model, math to the strong one; output tokens are predicted (50 and 80
    # on every training prompt), input tokens are the ledger's: (in × in price + out × out price) / 1e6.
    in_cheap, out_cheap = math_greeting_router.prices["cheap-model"]
    in_strong, out_strong = math_greeting_router.prices["strong-model"]
    assert (in_cheap, out_cheap) == pytest.approx(PRICES["cheap-model"], rel=1e-3)
    expected = ((10 * in_cheap + 50 * out_cheap) + (12 * in_cheap + 50 * out_cheap)
                + (20 * in_strong + 80 * out_strong)) / 1e6
    assert report["requests"] == 3
    assert report["router"]["cost_usd"] == pytest.approx(expected, rel=1e-3)
    assert report["router"]["cost_per_1k"] == pytest.approx(expected * 1000 / 3, rel=1e-3)
    assert report["router"]["share"] == pytest.approx({"cheap-model": 2 / 3, "strong-model": 1 / 3})
    assert report["actual"]["cost_usd"] == pytest.approx(0.00201)
    assert report["actual"]["share"] == pytest.approx({"strong-model": 2 / 3, "cheap-model": 1 / 3})
    assert report["saving_usd"] == pytest.approx(0.00201 - expected, rel=1e-3)
    assert 0.9 <= report["router"]["predicted_quality"] <= 1.0
    assert json.loads(out.read_text())["router"]["share"] == report["router"]["share"]


def test_replay_reads_no_feedback(tmp_path: Path, math_greeting_router: TrainedRouter,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A replay scores the router's choices by its predictions, not by feedback: it reads none (a query for nothing)."""
    import time

    def unread(*args: object, **kwargs: object) -> None:
        raise AssertionError("replay read the feedback table")

    router_file = math_greeting_router.save(tmp_path / "router.safetensors")
    url = _ledger(tmp_path / "ledger.sqlite3", _traffic(time.time()))
    monkeypatch.setattr(Ledger, "feedback_scores", unread)
    monkeypatch.setattr(Ledger, "feedback_by_key", unread)
    report = replay_command(router=router_file, ledger=url, since="1d", console=Console(file=io.StringIO()))
    assert report["requests"] == 3


def test_replay_without_stored_prompts_says_how_to_get_them(tmp_path: Path,
                                                             math_greeting_router: TrainedRouter) -> None:
    router_file = math_greeting_router.save(tmp_path / "router.safetensors")
    url = _ledger(tmp_path / "ledger.sqlite3", [LedgerRecord(request_id="x", model="cheap-model", input_tokens=3)])
    with pytest.raises(DatasetError, match="store_prompts"):
        replay_command(router=router_file, ledger=url, since="1d", console=Console(file=io.StringIO()))


def test_replay_over_outcome_data_scores_the_choices(
    tmp_path: Path, math_greeting_router: TrainedRouter, make_table: Callable[..., OutcomeTable]
) -> None:
    from switchman.evaluate._replay import replay_choices
    from switchman.learn import get_embedder

    table = make_table(pairs=10, seed=7)
    embedder = get_embedder(math_greeting_router.embedder)
    features = embedder.embed(math_greeting_router.texts(list(table.prompts)))
    result = replay_choices(math_greeting_router, features, table.prompt_input_tokens(),
                            true_quality=table.quality)
    summary = result.summary()
    assert summary["router"]["true_quality"] == pytest.approx(1.0)  # math to strong, greetings to cheap
    assert summary["router"]["share"] == pytest.approx({"cheap-model": 0.5, "strong-model": 0.5})
    assert "actual" not in summary


def test_the_command_line_replays_and_trains_from_a_ledger(tmp_path: Path, math_greeting_router: TrainedRouter,
                                                            embedding_cache_dir: Path) -> None:
    import time

    from typer.testing import CliRunner

    from switchman.cli import app

    router_file = math_greeting_router.save(tmp_path / "router.safetensors")
    url = _ledger(tmp_path / "ledger.sqlite3", _traffic(time.time()))
    env = {"COLUMNS": "200", "SWITCHMAN_CACHE_DIR": str(embedding_cache_dir)}
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["replay", "--router", str(router_file), "--ledger", url, "--json", str(out)],
                                env=env)
    assert result.exit_code == 0, result.output
    assert "would have run" in result.stdout and "actually ran" in result.stdout
    assert json.loads(out.read_text())["requests"] == 3
    # Neither source, or both: a clear usage error.
    result = CliRunner().invoke(app, ["replay", "--router", str(router_file)], env=env)
    assert result.exit_code == 2 and "exactly one of --ledger URL or --data DIR" in result.stderr
    # No feedback in this ledger: train --from-ledger says what is missing.
    result = CliRunner().invoke(app, ["train", "--from-ledger", url, "--out", str(tmp_path / "x.safetensors")],
                                env=env)
    assert result.exit_code == 2 and "no logged request has both a stored prompt and feedback" in result.stderr
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "x.safetensors")], env=env)
    assert result.exit_code == 2 and "--from-ledger" in result.stderr


def _configured_traffic(now: float) -> list[LedgerRecord]:
    """The same traffic, logged under the names a configuration gives the two models."""
    renamed = {"cheap-model": "budget", "strong-model": "premium"}
    return [LedgerRecord(**{**vars_of(r), "model": renamed.get(r.model or "", r.model)}) for r in _traffic(now)]


def vars_of(record: LedgerRecord) -> dict[str, object]:
    from dataclasses import fields

    return {f.name: getattr(record, f.name) for f in fields(record)}


def test_replay_warns_when_router_and_ledger_share_no_model(tmp_path: Path,
                                                            math_greeting_router: TrainedRouter) -> None:
    import time

    router_file = math_greeting_router.save(tmp_path / "router.safetensors")
    url = _ledger(tmp_path / "ledger.sqlite3", _configured_traffic(time.time()))
    out = io.StringIO()
    report = replay_command(router=router_file, ledger=url, since="1d", console=Console(file=out, width=200))
    assert report["warnings"] == [
        "the router's models (cheap-model, strong-model) and the ones that ran (budget, premium) share no model, so "
        "the cost and saving compare unrelated models; map trained names to configured ones with --config FILE (its "
        "routes' aliases) or --alias trained=configured"]
    text = out.getvalue()
    assert "warning:" in text and "saving:" not in text  # no "saving" between unrelated models


def test_replay_compares_names_through_the_configs_aliases(tmp_path: Path,
                                                           math_greeting_router: TrainedRouter) -> None:
    import time

    import yaml

    router_file = math_greeting_router.save(tmp_path / "router.safetensors")
    url = _ledger(tmp_path / "ledger.sqlite3", _configured_traffic(time.time()))
    config = tmp_path / "switchman.yaml"
    config.write_text(yaml.safe_dump({
        "models": {"budget": {"provider": "p", "input_price": 0.2, "output_price": 0.4},
                   "premium": {"provider": "p", "input_price": 5.0, "output_price": 15.0}},
        "routes": {"default": {"candidates": ["budget", "premium"], "strategy": "learned", "router": router_file.name,
                               "aliases": {"cheap-model": "budget", "strong-model": "premium"}}},
    }))
    out = io.StringIO()
    report = replay_command(router=router_file, ledger=url, since="1d", config=config,
                            console=Console(file=out, width=200))
    assert "warnings" not in report and report["aliases"] == {"cheap-model": "budget", "strong-model": "premium"}
    assert report["router"]["share"] == pytest.approx({"budget": 2 / 3, "premium": 1 / 3})
    # The configured prices, not the router file's: greetings on budget, the math prompt on premium.
    expected = ((10 * 0.2 + 50 * 0.4) + (12 * 0.2 + 50 * 0.4) + (20 * 5.0 + 80 * 15.0)) / 1e6
    assert report["router"]["cost_usd"] == pytest.approx(expected, rel=1e-3)
    assert report["actual"]["predicted_quality"] is not None  # what ran is known to the router under its name
    assert "saving:" in out.getvalue()
    # --alias does the same without a configuration.
    by_flag = replay_command(router=router_file, ledger=url, since="1d", console=Console(file=io.StringIO()),
                             aliases={"cheap-model": "budget", "strong-model": "premium"})
    assert "warnings" not in by_flag and set(by_flag["router"]["share"]) == {"budget", "premium"}
