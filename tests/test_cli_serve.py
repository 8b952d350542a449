"""serve/init/route commands, the bind check and the embedded defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from switchman import ConfigError
from switchman._config import parse_config
from switchman.cli._serve import check_bind, init_command
from switchman.gateway import default_config, default_config_data, local_models


def test_check_bind() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.5"):
        check_bind(host, has_keys=False, master_key=False)
    with pytest.raises(ConfigError, match="refusing to listen on 0.0.0.0"):
        check_bind("0.0.0.0", has_keys=False, master_key=False)
    check_bind("0.0.0.0", has_keys=True, master_key=False)
    check_bind("0.0.0.0", has_keys=False, master_key=True)


def test_default_config_follows_the_keys_that_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("switchman.gateway._defaults.local_models", list)
    assert default_config_data({}) == {"providers": {}, "models": {}}
    assert default_config({}).models == {}
    data = default_config_data({"OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "y", "GROQ_API_KEY": "z"})
    assert set(data["models"]) == {"gpt-4o-mini", "gpt-4o", "claude-3-5-haiku-latest", "claude-sonnet-4-5",
                                   "llama-3.1-8b-instant"}
    assert data["providers"]["anthropic"]["kind"] == "anthropic"
    # Learned routing by default: the bundled router over the configured models, 95% of the best's quality.
    assert data["routes"]["default"] == {"candidates": list(data["models"]), "strategy": "learned",
                                         "router": "bundled", "target": "quality=0.95"}
    config = parse_config(data)
    assert config.default_route_name == "default"
    assert set(default_config({"OPENAI_API_KEY": "x"}).model_specs()) == {"gpt-4o-mini", "gpt-4o"}


def test_local_model_has_its_own_route_and_serves_default_only_without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    local = {"provider": "local", "provider_config": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
             "models": {"tiny": {"provider": "local", "input_price": 0.0, "output_price": 0.0}}}
    monkeypatch.setattr("switchman.gateway._defaults.local_models", lambda: [local])
    data = default_config_data({"OPENAI_API_KEY": "x"})
    assert data["providers"]["local"]["base_url"] == "http://127.0.0.1:9/v1"
    # With a hosted provider the local model joins the learned default route as its cheapest tier (its
    # configured score places it), and keeps its own route.
    assert data["routes"]["default"]["candidates"] == ["gpt-4o-mini", "gpt-4o", "tiny"]
    assert data["routes"]["default"]["strategy"] == "learned"
    assert data["routes"]["local"]["candidates"] == ["tiny"]
    no_keys = default_config_data({})
    assert no_keys["routes"]["default"]["candidates"] == ["tiny"]
    assert isinstance(local_models(), list)


def test_init_writes_a_valid_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-written-anywhere")
    monkeypatch.setattr("switchman.gateway._defaults.local_models", list)
    path = tmp_path / "switchman.yaml"
    written = init_command(path)
    text = path.read_text()
    assert "sk-not-written-anywhere" not in text and "OPENAI_API_KEY" in text
    config = parse_config(yaml.safe_load(text))
    assert set(config.models) >= {"gpt-4o-mini", "gpt-4o"}
    assert written == list(config.models)  # the models init says it wrote, in the file's order
    with pytest.raises(ConfigError, match="already exists"):
        init_command(path)
    init_command(path, force=True)


def test_init_writes_no_yaml_anchors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from switchman.local import local_model_config

    entries = local_model_config()
    local = {"provider": "local", "provider_config": entries["providers"]["local"], "models": entries["models"]}
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "GROQ_API_KEY", "TOGETHER_API_KEY",
                 "OPENROUTER_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("switchman.gateway._defaults.local_models", lambda: [local])
    init_command(tmp_path / "switchman.yaml")
    text = (tmp_path / "switchman.yaml").read_text()
    # The local-only defaults use one candidate list for two routes: written out twice, not as &id001/*id001.
    assert "&" not in text and "*" not in text
    data = yaml.safe_load(text)
    assert data["routes"]["default"]["candidates"] == data["routes"]["local"]["candidates"] == ["smollm2-135m"]
    assert data["providers"]["local"]["base_url"] == "http://127.0.0.1:0/v1"  # a free port when serve starts it


def test_init_with_no_key_and_no_local_model_says_the_file_has_no_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It printed only "wrote switchman.yaml", a file with `models: {}` that serves nothing: say so, and how to fix."""
    from typer.testing import CliRunner

    from switchman.cli import app
    from switchman.gateway import KNOWN_PROVIDERS

    for known in KNOWN_PROVIDERS.values():
        monkeypatch.delenv(known.api_key_env, raising=False)
    monkeypatch.setattr("switchman.gateway._defaults.local_models", list)
    result = CliRunner().invoke(app, ["init", str(tmp_path / "switchman.yaml")], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "no models" in result.output and "OPENAI_API_KEY" in result.output, result.output
    assert "switchman local install" in result.output, result.output
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    result = CliRunner().invoke(app, ["init", str(tmp_path / "switchman.yaml"), "--force"], env={"COLUMNS": "400"})
    assert "no models" not in result.output and "gpt-4o-mini" in result.output, result.output


def test_init_with_one_model_says_one_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The local-only file has one model: "1 models" read as a slip."""
    from typer.testing import CliRunner

    from switchman.cli import app
    from switchman.gateway import KNOWN_PROVIDERS
    from switchman.local import local_model_config

    entries = local_model_config()
    local = {"provider": "local", "provider_config": entries["providers"]["local"], "models": entries["models"]}
    for known in KNOWN_PROVIDERS.values():
        monkeypatch.delenv(known.api_key_env, raising=False)
    monkeypatch.setattr("switchman.gateway._defaults.local_models", lambda: [local])
    result = CliRunner().invoke(app, ["init", str(tmp_path / "switchman.yaml")], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert ": 1 model (smollm2-135m)" in result.output, result.output
