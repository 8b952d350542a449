"""YAML configuration: resolution against genai-prices, and errors that name file, key path and problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from switchman import ConfigError
from switchman._catalog import lookup_catalog_price
from switchman._config import Config, load_config, parse_config

VALID = """\
providers:
  openai: {base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY}
  local: {base_url: http://127.0.0.1:8000/v1}
models:
  gpt-4o-mini: {provider: openai, capabilities: [tools, json, vision]}
  gpt-4o: {provider: openai, output_price: 7.5}
  house-model: {provider: local, model: org/house-7b, input_price: 0.05, output_price: 0.1, context_window: 8192}
routes:
  default:
    candidates: [gpt-4o-mini, gpt-4o, house-model]
    strategy: rules
    rules:
      - when: {tags: [hard]}
        model: gpt-4o
    default: gpt-4o-mini
    fallbacks: [gpt-4o]
  cheap: {candidates: [house-model, gpt-4o-mini]}
agents:
  triage: {model: gpt-4o-mini}
  coder: {route: cheap, deny: [house-model]}
"""


def write(tmp_path: Path, text: str, name: str = "switchman.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> tuple[Path, str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return path, str(info.value)


def test_valid_config_round_trip_resolves_prices_from_genai_prices(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    assert isinstance(config, Config)
    assert list(config.routes) == ["default", "cheap"]
    assert config.routes["default"].rules[0].match.tags == ["hard"]
    assert config.agents["coder"].deny == ["house-model"]

    specs = config.model_specs()
    mini, known_mini = specs["gpt-4o-mini"], lookup_catalog_price("gpt-4o-mini")
    assert known_mini is not None
    assert (mini.input_price, mini.output_price) == (known_mini.input_price, known_mini.output_price)
    assert mini.cached_input_price == known_mini.cached_input_price
    assert mini.context_window == known_mini.context_window == 128_000
    assert mini.capabilities == frozenset({"tools", "json", "vision"})

    # The validated model dumps back to a mapping that validates to the same configuration.
    assert parse_config(config.model_dump(by_alias=True)) == config


def test_config_fields_override_genai_prices(tmp_path: Path) -> None:
    specs = load_config(write(tmp_path, VALID)).model_specs()
    gpt4o, known = specs["gpt-4o"], lookup_catalog_price("gpt-4o")
    assert known is not None and known.output_price != 7.5
    assert gpt4o.output_price == 7.5  # the override wins
    assert gpt4o.input_price == known.input_price  # the rest still comes from the catalog
    assert gpt4o.capabilities == frozenset({"tools", "json"})  # documented default

    house = specs["house-model"]
    assert (house.input_price, house.output_price, house.context_window) == (0.05, 0.1, 8192)
    assert house.wire_name == "org/house-7b" and house.name == "house-model"


def test_model_without_any_price_names_the_model_and_the_file(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, """\
        models:
          gpt-4o-mini: {provider: openai}
          my-private-llm: {provider: local}
        """)
    assert str(path) in message
    assert "my-private-llm" in message
    assert "input_price" in message and "output_price" in message


def test_only_one_price_given_is_still_an_error(tmp_path: Path) -> None:
    _, message = error_of(tmp_path, "models:\n  my-private-llm: {provider: local, input_price: 1.0}\n")
    assert "models.my-private-llm" in message


def test_unknown_candidate_in_a_route_names_the_key_path(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, """\
        models:
          gpt-4o-mini: {provider: openai}
        routes:
          default: {candidates: [gpt-4o-mini, gpt-9-ultra]}
        """)
    assert str(path) in message
    assert "routes.default.candidates.1" in message
    assert "gpt-9-ultra" in message


def test_learned_strategy_without_router_file_uses_the_bundled_router() -> None:
    config = parse_config({"models": {"gpt-4o-mini": {"provider": "openai", "score": 1250}},
                           "routes": {"default": {"candidates": ["gpt-4o-mini"], "strategy": "learned"}}})
    assert config.routes["default"].router is None  # the bundled router (learn.BUNDLED)
    assert config.models["gpt-4o-mini"].score == 1250


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "models:\n  a: {provider: openai}\n  b: [unclosed\nroutes: {}\n")
    assert str(path) in message
    assert "not valid YAML" in message
    # The parser notices the unclosed flow sequence on line 4, where `routes:` starts.
    assert "line 4" in message


def test_wrong_type_names_the_key_path(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "models:\n  x: {provider: local, input_price: cheap, output_price: 1}\n")
    assert str(path) in message
    assert "models.x.input_price" in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "modles:\n  x: {provider: openai}\n")
    assert str(path) in message
    assert "modles: unknown key 'modles' (did you mean 'models'?)" in message


@pytest.mark.parametrize(("text", "expected"), [
    ("servr: {}", "servr: unknown key 'servr' (did you mean 'server'?)"),
    ("server: {timeouts: {conect: 1}}", "server.timeouts.conect: unknown key 'conect' (did you mean 'connect'?)"),
    ("models: {m: {provider: openai, input_pric: 1}}", "models.m.input_pric: unknown key 'input_pric' "
                                                      "(did you mean 'input_price'?)"),
    ("routes: {d: {candidates: [m], strategi: cheapest}}", "routes.d.strategi: unknown key 'strategi' "
                                                           "(did you mean 'strategy'?)"),
    ("routes: {d: {candidates: [m], rules: [{when: {tsk: code}, model: m}]}}",
     "routes.d.rules.0.when.tsk: unknown key 'tsk' (did you mean 'task'?)"),
    ("routes: {d: {candidates: [m], cascade: {ladr: [m]}}}", "routes.d.cascade.ladr: unknown key 'ladr' "
                                                              "(did you mean 'ladder'?)"),
    ("budgets: [{scope: agent, name: a, usd: 1, perod: day}]", "budgets.0.perod: unknown key 'perod' "
                                                               "(did you mean 'period'?)"),
    ("sessions: {ttl: 60}", "sessions.ttl: unknown key 'ttl' (did you mean 'ttl_s'?)"),
    ("routes: {d: {candidates: [m], strategy: learnd}}", "(did you mean 'learned'?)"),
    ("models: {m: {provider: openai, capabilities: [tool]}}", "(did you mean 'tools'?)"),
])
def test_typos_get_the_nearest_key_at_any_depth(tmp_path: Path, text: str, expected: str) -> None:
    _, message = error_of(tmp_path, "models: {m: {provider: openai}}\n" + text + "\n" if not text.startswith("models")
                          else text + "\n")
    assert expected in message


def test_an_unknown_key_with_no_near_one_lists_the_allowed_keys(tmp_path: Path) -> None:
    _, message = error_of(tmp_path, "server: {timeouts: {zzzzzz: 1}}\n")
    assert "server.timeouts.zzzzzz: unknown key 'zzzzzz' (allowed: connect, first_byte, total)" in message


def test_an_unknown_model_in_a_route_lists_the_models_and_providers(tmp_path: Path) -> None:
    _, message = error_of(tmp_path, """\
        providers:
          openai: {base_url: https://api.openai.com/v1}
          groq: {base_url: https://api.groq.com/openai/v1}
        models:
          gpt-4o: {provider: openai}
          gpt-4o-mini: {provider: openai}
        routes:
          default: {candidates: [gpt4o-mini]}
        agents:
          coder: {route: defualt}
        """)
    assert ("routes.default.candidates.0: unknown model 'gpt4o-mini' (did you mean 'gpt-4o-mini'?); configured "
            "models: gpt-4o, gpt-4o-mini; to add it, put it under 'models' with one of the providers (groq, openai)"
            ) in message
    assert "agents.coder.route: unknown route 'defualt' (did you mean 'default'?); configured routes: default" in message


def test_agent_with_both_route_and_model(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, """\
        models:
          gpt-4o-mini: {provider: openai}
        routes:
          default: {candidates: [gpt-4o-mini]}
        agents:
          triage: {route: default, model: gpt-4o-mini}
        """)
    assert str(path) in message
    assert "agents.triage" in message
    assert "not both" in message


def test_unknown_provider_when_providers_are_declared(tmp_path: Path) -> None:
    _, message = error_of(tmp_path, """\
        providers:
          openai: {base_url: https://api.openai.com/v1}
        models:
          gpt-4o-mini: {provider: opena1}
        """)
    assert "models.gpt-4o-mini.provider" in message and "opena1" in message


def test_top_level_must_be_a_mapping_and_missing_file(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "- just\n- a list\n")
    assert str(path) in message and "mapping" in message
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_empty_file_is_an_empty_configuration(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.models == {} and config.routes == {}
    assert config.default_route_name is None


MODELS = {"gpt-4o-mini": {"provider": "openai"}}


def routes(*names: str) -> dict[str, dict[str, list[str]]]:
    return {name: {"candidates": ["gpt-4o-mini"]} for name in names}


def test_default_route_name_explicit_wins() -> None:
    config = parse_config({"models": MODELS, "routes": routes("a", "default", "b"), "default_route": "b"})
    assert config.default_route_name == "b"


def test_default_route_name_prefers_a_route_named_default() -> None:
    assert parse_config({"models": MODELS, "routes": routes("a", "default")}).default_route_name == "default"


def test_default_route_name_falls_back_to_the_first_route() -> None:
    assert parse_config({"models": MODELS, "routes": routes("zeta", "alpha")}).default_route_name == "zeta"


def test_default_route_must_exist() -> None:
    with pytest.raises(ConfigError, match="default_route: unknown route 'nope'"):
        parse_config({"models": MODELS, "routes": routes("a"), "default_route": "nope"})


def test_a_redis_url_is_checked_by_its_scheme_and_empty_still_means_no_redis() -> None:
    for url in ("redis://h:6379/0", "rediss://u:p@h:6380/1", "unix:///run/redis.sock",
                "unix:///run/r@1.sock", "unix:///run/redis;x.sock",  # a socket's file name, no password in it
                "redis+cluster://h:7000", "rediss+cluster://:pw@h:7000"):
        assert parse_config({"server": {"redis_url": url}}).server.redis_url == url
    # "" is how a templated file leaves Redis off (the link and the cache read it as unset), as before
    assert parse_config({"server": {"redis_url": ""}, "cache": {"redis_url": ""}}).server.redis_url == ""
    # redis-py's own check is case-sensitive: REDIS:// passed here only to fail at startup
    with pytest.raises(ConfigError, match="not 'REDIS'"):
        parse_config({"server": {"redis_url": "REDIS://h:6379/0"}})
    # a "://" later in the URL is not its scheme: the password before it is never quoted
    with pytest.raises(ConfigError, match="not a URL without a scheme") as caught:
        parse_config({"cache": {"redis_url": "rediss:/:hunter2@h:6379/0?x=a://b"}})
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("url", ["redis://:s3c/ret@127.0.0.1:1/0", "redis://u:s3c?ret@h:6379/0",
                                 "rediss://:s3c#ret@h:6380/1", "redis://:s3cret@[::1:6379/0",
                                 "redis+cluster://:s3c/ret@h:7000"])
def test_a_redis_url_no_message_could_show_safely_is_refused_without_quoting_it(url: str) -> None:
    """A password with `/`, `?` or `#` unescaped ends the host early: before, such a URL was taken, its shown form
    (or redis-py's error at startup, the password read as the port) quoted the password."""
    for section in ({"server": {"redis_url": url}}, {"cache": {"redis_url": url}}):
        with pytest.raises(ConfigError, match="percent-escape") as caught:
            parse_config(section)
        assert "s3c" not in str(caught.value)
    escaped = "redis://:s3c%2Fret@127.0.0.1:1/0"  # as the message says: taken
    assert parse_config({"server": {"redis_url": escaped}}).server.redis_url == escaped
