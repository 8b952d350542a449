"""`switchman init --from-litellm`: LiteLLM proxy configurations (shaped as LiteLLM documents them) imported,
everything not carried over reported, no secret copied, and the result served."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from typer.testing import CliRunner

from switchman import Router
from switchman._config import load_config, parse_config
from switchman.cli import app
from switchman.cli._litellm import Import, from_litellm
from switchman.gateway import Gateway, build_app
from switchman.testing import FakeUpstream

from .conftest import ENV, OPENAI_KEY, ServerThread

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "litellm"


def imported(name: str) -> Import:
    result = from_litellm(yaml.safe_load((FIXTURES / f"{name}.yaml").read_text()))
    parse_config(result.config)  # every import loads as a switchman configuration
    return result


def mentions(result: Import, *words: str) -> bool:
    return any(all(w in line for w in words) for line in result.not_mapped)


def test_several_deployments_of_one_name_become_one_model() -> None:
    result = imported("load_balancer")
    model = result.config["models"]["gpt-3.5-turbo"]
    assert [(d["name"] if "name" in d else d["provider"], d["model"], d.get("rpm"), d.get("tpm"))
            for d in model["deployments"]] == [
        ("openai-1", "gpt-3.5-turbo", 3, 20000), ("openai-2", "gpt-3.5-turbo", 3, 20000),
        ("openrouter", "openai/gpt-3.5-turbo", None, None)]
    assert model["balance"] == "usage"  # usage-based-routing-v2
    assert result.config["providers"]["openrouter"] == {"kind": "openai", "base_url": "https://openrouter.ai/api/v1",
                                                        "api_key_env": "OPENROUTER_API_KEY"}
    assert mentions(result, "#1", "api_key is written in the LiteLLM file; not copied")
    assert mentions(result, "mistralai/mistral-7b-instruct", "not the 'mistralai' API")
    assert mentions(result, "environment_variables")
    assert "sk-placeholder" not in yaml.safe_dump(result.config)


def test_providers_keys_and_what_switchman_does_not_speak() -> None:
    result = imported("quickstart")
    config = result.config
    assert config["models"]["gpt-4o"] == {"provider": "openai", "rpm": 100, "tpm": 200000}  # the Azure one left out
    assert mentions(result, "azure/gpt-4o-europe", "Azure OpenAI")
    assert config["models"]["claude-sonnet"] == {"provider": "anthropic", "model": "claude-3-5-sonnet-20240620"}
    assert config["providers"]["anthropic"]["kind"] == "anthropic"
    assert config["providers"]["anthropic"]["api_key_env"] == "ANTHROPIC_API_KEY"  # from os.environ/NAME
    vllm = config["models"]["vllm-models"]
    assert (vllm["provider"], vllm["model"], vllm["input_price"]) == ("hosted_vllm", "facebook/opt-125m", 0.0)
    assert mentions(result, "master_key is written in the LiteLLM file; not copied")
    assert mentions(result, "litellm_settings: drop_params, success_callback not mapped")
    assert mentions(result, "general_settings: alerting not mapped")
    assert config["routes"]["default"] == {"candidates": ["gpt-4o", "claude-sonnet", "vllm-models"],
                                           "strategy": "cheapest"}


def test_fallbacks_retries_timeouts_and_cooldowns() -> None:
    result = imported("reliability")
    config = result.config
    assert config["routes"]["gpt-3.5-turbo"] == {"candidates": ["gpt-3.5-turbo"], "strategy": "fixed",
                                                 "model": "gpt-3.5-turbo", "fallbacks": ["gpt-4", "claude"]}
    assert config["routes"]["gpt-4"]["fallbacks"] == ["claude"]
    assert config["routes"]["gpt-4"]["content_policy_fallback"] == "claude"
    assert mentions(result, "context_window_fallbacks", "gpt-3.5-turbo-16k was not imported")
    # router_settings win over litellm_settings, as in LiteLLM.
    assert config["server"] == {"retries": {"attempts": 2, "backoff_s": 1.0}, "timeouts": {"total": 30.0},
                                "circuit_breaker": {"failures": 3, "cooldown_s": 30},
                                "master_key_env": "LITELLM_MASTER_KEY"}
    assert mentions(result, "database_url", "not copied")
    assert mentions(result, "router_settings: enable_pre_call_checks not mapped")
    decision = Router(parse_config(config)).route("hello", model="auto:gpt-3.5-turbo")
    assert (decision.model, decision.fallbacks) == ("gpt-3.5-turbo", ("gpt-4", "claude"))


def test_model_info_local_servers_parameters_and_unpriced_models() -> None:
    result = imported("aliases")
    models = result.config["models"]
    assert models["gpt-4"] == {"provider": "ollama", "model": "llama2", "input_price": 0.0, "output_price": 0.0}
    assert result.config["providers"]["ollama"] == {"kind": "openai", "base_url": "http://localhost:11434/v1"}
    assert models["house-model"] == {"provider": "llm.example.com", "model": "house-model-v3", "input_price": 0.5,
                                     "output_price": 1.5, "context_window": 32768, "capabilities": ["tools"]}
    assert mentions(result, "gpt-3.5-turbo", "max_tokens, temperature not mapped")
    assert set(result.unpriced) == {"embeddings", "mystery"} and "mystery" not in models
    assert result.unpriced["embeddings"]["capabilities"] == []  # an embedding model: no chat capabilities
    assert mentions(result, "bedrock/amazon.titan-text-express-v1", "not the 'bedrock' API")


def test_the_command_writes_a_loadable_file_with_the_report(tmp_path: Path) -> None:
    out = tmp_path / "switchman.yaml"
    runner = CliRunner()
    result = runner.invoke(app, ["init", str(out), "--from-litellm", str(FIXTURES / "aliases.yaml")],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: 4 models, 4 providers, 1 routes" in result.stdout  # with those of the unpriced ones
    assert "not carried over (4; also listed at the top of" in result.stdout
    text = out.read_text()
    assert text.startswith("# switchman configuration, imported from the LiteLLM configuration")
    assert "#   model_list[titan]: bedrock/" in text
    assert "# Left out until priced" in text and "#     mystery:" in text
    assert set(load_config(out).models) == {"text-davinci-003", "gpt-4", "gpt-3.5-turbo", "house-model"}
    again = runner.invoke(app, ["init", str(out), "--from-litellm", str(FIXTURES / "aliases.yaml")])
    assert again.exit_code == 2 and "already exists" in again.stderr
    bad = tmp_path / "not-litellm.yaml"
    bad.write_text("routes: {}\n")
    refused = runner.invoke(app, ["init", str(tmp_path / "x.yaml"), "--from-litellm", str(bad)])
    assert refused.exit_code == 2 and "not a LiteLLM proxy configuration (no model_list)" in refused.stderr


def test_an_imported_configuration_serves(upstream: FakeUpstream, tmp_path: Path) -> None:
    litellm: dict[str, Any] = {
        "model_list": [
            {"model_name": "cheap", "litellm_params": {"model": "openai/cheap", "api_base": upstream.openai_base_url,
                                                       "api_key": "os.environ/FAKE_OPENAI_KEY"},
             "model_info": {"input_cost_per_token": 1e-7, "output_cost_per_token": 2e-7}},
            {"model_name": "big", "litellm_params": {"model": "openai/big", "api_base": upstream.openai_base_url,
                                                     "api_key": "os.environ/FAKE_OPENAI_KEY"},
             "model_info": {"input_cost_per_token": 5e-6, "output_cost_per_token": 1e-5}},
        ],
        "router_settings": {"fallbacks": [{"cheap": ["big"]}], "num_retries": 0},
    }
    result = from_litellm(litellm)
    config = parse_config({**result.config, "server": {**result.config["server"],
                                                       "ledger_url": f"sqlite:///{tmp_path / 'l.sqlite3'}"}})
    upstream.clear()
    upstream.inject("server_error", model="cheap", times=None)
    gateway = Gateway.from_config(config, env=ENV)
    try:
        with ServerThread(build_app(gateway)) as url, \
                openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="auto:cheap", messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-switchman-model"] == "big"  # LiteLLM's fallback, as a switchman route
        assert raw.parse().choices[0].message.content == "Hello from big."
        assert upstream.requests_for("big")[-1].headers["authorization"] == f"Bearer {OPENAI_KEY}"
    finally:
        upstream.clear()


@pytest.mark.parametrize("name", ["quickstart", "load_balancer", "reliability", "aliases"])
def test_no_secret_written_in_a_fixture_is_copied(name: str) -> None:
    text = yaml.safe_dump(imported(name).config)
    assert "sk-" not in text
