"""`switchman route` and `switchman models`: predictions per candidate, why the choice won, abilities and sources."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from switchman.cli import app

CONFIG = {
    "models": {
        "gpt-4o-mini": {"provider": "p"},
        "claude-sonnet-4-5": {"provider": "p"},
        "in-house": {"provider": "p", "input_price": 0.05, "output_price": 0.1, "score": 1150},
        "mystery": {"provider": "p", "input_price": 0.05, "output_price": 0.1},
    },
    "routes": {"default": {"candidates": ["gpt-4o-mini", "claude-sonnet-4-5", "in-house"], "strategy": "learned"}},
}


def _write(tmp_path: Path, config: dict[str, object]) -> Path:
    path = tmp_path / "switchman.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_route_shows_every_candidates_prediction_and_why(tmp_path: Path) -> None:
    path = _write(tmp_path, CONFIG)
    result = CliRunner().invoke(app, ["route", "Write a haiku about autumn.", "--config", str(path)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ("gpt-4o-mini", "claude-sonnet-4-5", "in-house", "predicted quality", "predicted cost"):
        assert name in result.output
    assert "why: learned (tradeoff" in result.output
    as_json = CliRunner().invoke(app, ["route", "Write a haiku about autumn.", "--config", str(path), "--json"])
    decision = json.loads(as_json.output)
    assert {c["model"] for c in decision["candidates"]} == {"gpt-4o-mini", "claude-sonnet-4-5", "in-house"}
    assert all(c["predicted_quality"] is not None for c in decision["candidates"])


def test_models_shows_ability_and_its_source(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["models", "--config", str(_write(tmp_path, CONFIG))], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert "1317" in lines["gpt-4o-mini"] and "public score" in lines["gpt-4o-mini"]
    assert "1150" in lines["in-house"] and "config score" in lines["in-house"]
    assert "none: cannot be learn-routed" in lines["mystery"]


def test_route_over_an_unplaceable_model_fails_naming_it(tmp_path: Path) -> None:
    config = {**CONFIG, "routes": {"default": {"candidates": ["gpt-4o-mini", "mystery"], "strategy": "learned"}}}
    result = CliRunner().invoke(app, ["route", "hello", "--config", str(_write(tmp_path, config))])
    assert result.exit_code == 2
    assert "mystery" in result.output and "score_name" in result.output and "score: 1250" in result.output
