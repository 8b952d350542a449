"""serve/init/route commands, the bind check and the embedded defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from switchman import ConfigError
from switchman._config import parse_config
from switchman.gateway import check_bind, default_config, init_command, local_models, route_command


def test_check_bind() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.5"):
        check_bind(host, has_keys=False, master_key=False)
    with pytest.raises(ConfigError, match="refusing to listen on 0.0.0.0"):
        check_bind("0.0.0.0", has_keys=False, master_key=False)
    check_bind("0.0.0.0", has_keys=True, master_key=False)
    check_bind("0.0.0.0", has_keys=False, master_key=True)


def test_default_config_follows_the_keys_that_are_set() -> None:
    assert default_config({}) == {"providers": {}, "models": {}}
    data = default_config({"OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "y", "GROQ_API_KEY": "z"})
    assert set(data["models"]) == {"gpt-4o-mini", "gpt-4o", "claude-3-5-haiku-latest", "claude-sonnet-4-5",
                                   "llama-3.1-8b-instant"}
    assert data["providers"]["anthropic"]["kind"] == "anthropic"
    assert data["routes"]["default"]["strategy"] == "cheapest"
    config = parse_config(data)
    assert config.default_route_name == "default"
    assert local_models() == []


def test_init_writes_a_valid_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-written-anywhere")
    path = init_command(tmp_path / "switchman.yaml")
    text = path.read_text()
    assert "sk-not-written-anywhere" not in text and "OPENAI_API_KEY" in text
    config = parse_config(yaml.safe_load(text))
    assert set(config.models) >= {"gpt-4o-mini", "gpt-4o"}
    with pytest.raises(ConfigError, match="already exists"):
        init_command(path)
    init_command(path, force=True)


def test_route_command(tmp_config_file, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    result = route_command("hello", config=tmp_config_file(), model="auto:strict")
    assert result["model"] == "cheap" and result["route"] == "strict"
    assert '"model": "cheap"' in capsys.readouterr().out
