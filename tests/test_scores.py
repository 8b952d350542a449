"""Public scores: the bundled LMArena table, the documented name normaliser and aliases, newer files."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchman import ConfigError
from switchman.learn import BUNDLED_ALIASES, ScoreTable, normalise_model_name


@pytest.mark.parametrize(
    ("name", "normal"),
    [
        ("gpt-4o", "gpt-4o"),
        ("openai/gpt-4o-mini", "gpt-4o-mini"),  # vendor prefix (OpenRouter style)
        ("meta-llama/Llama-3.3-70B-Instruct-Turbo", "llama-3.3-70b-instruct"),  # Together's spelling
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet-20241022"),  # Bedrock id
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("llama3.1:8b", "llama3.1"),  # an Ollama tag is dropped
        ("Qwen_14B Chat", "qwen-14b-chat"),
        ("claude-v1", "claude-v1"),  # a -v1 that is part of the name stays
    ],
)
def test_normaliser(name: str, normal: str) -> None:
    assert normalise_model_name(name) == normal


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("gpt-4o", "gpt-4o-2024-08-06"),  # undated: the newest dated snapshot
        ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku-20241022"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
        ("claude-3-5-sonnet-20240620", "claude-3-5-sonnet-20240620"),  # a dated name keeps its own date
        ("openai/gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
        ("meta-llama/Llama-3.3-70B-Instruct-Turbo", "llama-3.3-70b-instruct"),
        ("deepseek-chat", "deepseek-v3.2"),  # bundled alias: the provider id is not the arena name
        ("meta/llama-2-70b-chat", "llama-2-70b-chat"),  # every RouterBench model is covered
        ("mistralai/mistral-7b-chat", "mistral-7b-instruct"),
        ("claude-v1", "claude-1"),  # listed only in the older snapshot, converted onto the scale
    ],
)
def test_catalog_names_find_their_score(name: str, key: str) -> None:
    found = ScoreTable.bundled().find(name)
    assert found is not None and found.key == key
    assert found.source and found.date


def test_unknown_models_find_nothing_rather_than_a_guess() -> None:
    table = ScoreTable.bundled()
    for name in ("smollm2-135m", "my-finetune-v3", "gpt-4o-ultra", "vicuna-13b-v1.5"):
        assert table.find(name) is None, name


def test_the_bundled_table_is_the_style_controlled_scale_with_its_provenance() -> None:
    table = ScoreTable.bundled()
    mini, big = table.find("gpt-4o-mini"), table.find("gpt-4o")
    assert mini is not None and big is not None
    assert big.score > mini.score  # style control (raw scores put gpt-4o-mini first)
    assert mini.score == 1317.3 and mini.date == "2025-12-11"
    assert "leaderboard-text-style-control" in mini.source and "c9558b60" in mini.source
    old = table.find("claude-2")
    assert old is not None and old.date == "2025-08-04" and "median raw difference" in old.note
    assert all(target in table.rows for target in BUNDLED_ALIASES.values())


def test_a_newer_file_and_explicit_aliases(tmp_path: Path) -> None:
    path = tmp_path / "arena.csv"
    path.write_text("model,score,date\ngpt-5-mini-2025-08-07,1390,2026-01-01\nmy-lab-model,1210.5,2026-01-01\n")
    table = ScoreTable.from_csv(path)
    assert len(table) == 2 and table.origin == str(path)
    found = table.find("gpt-5-mini")
    assert found is not None and (found.key, found.score, found.date) == ("gpt-5-mini-2025-08-07", 1390.0, "2026-01-01")
    assert table.find("prod-assistant") is None
    aliased = table.find("prod-assistant", {"prod-assistant": "my-lab-model"})
    assert aliased is not None and aliased.score == 1210.5


@pytest.mark.parametrize(("content", "message"), [("name,elo\nx,1\n", "columns 'model' and 'score'"),
                                                  ("model,score\nx,high\n", "line 2")])
def test_a_bad_score_file_is_a_config_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        ScoreTable.from_csv(path)
    with pytest.raises(ConfigError, match="cannot read"):
        ScoreTable.from_csv(tmp_path / "absent.csv")
