"""docs/scale-out.md stays true to the code: its configuration loads, and every setting it names exists."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from switchman._config import parse_config
from switchman._config_server import ServerConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "scale-out.md"


def test_the_example_configuration_loads() -> None:
    block = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert block is not None
    config = parse_config(yaml.safe_load(block.group(1)))
    assert config.server.redis_url and config.server.ledger_url and config.server.ledger_url.startswith("postgresql")


def test_every_server_setting_named_exists() -> None:
    named = set(re.findall(r"`server\.([a-z_]+)(?:\.([a-z_]+))?", DOC.read_text()))
    assert named
    for field, sub in named:
        assert field in ServerConfig.model_fields, field
        if sub:
            nested = ServerConfig.model_fields[field].annotation
            assert sub in getattr(nested, "model_fields", {}), f"server.{field}.{sub}"
