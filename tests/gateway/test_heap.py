"""`switchman serve` freezes the startup heap out of the garbage collector's passes; an embedded app does not."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from switchman._config import Config
from switchman.gateway import Gateway, build_app

from .conftest import ENV


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session collects as before


def test_settle_heap_freezes_what_startup_built(config: Config, unfrozen: None) -> None:
    app = build_app(Gateway.from_config(config, env=ENV), settle_heap=True)
    with TestClient(app) as client:
        assert gc.get_freeze_count() > 10_000  # modules, configuration, catalog: all out of later passes
        assert client.get("/health").status_code == 200


def test_an_app_built_without_it_leaves_the_collector_alone(config: Config, unfrozen: None) -> None:
    with TestClient(build_app(Gateway.from_config(config, env=ENV))) as client:
        assert client.get("/health").status_code == 200
        assert gc.get_freeze_count() == 0
