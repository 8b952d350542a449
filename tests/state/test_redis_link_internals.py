"""The redis-py internals the Redis link leans on (`Pipe` reads replies itself on connections redis-py opens): a
redis-py upgrade that removes or renames one fails here by name, and at startup as a ConfigError naming the version
(never as a failed request)."""

from __future__ import annotations

import pytest

from switchman._exceptions import ConfigError
from switchman.state import RedisLink
from switchman.state import _redis_link, _redis_wire


def test_the_installed_redis_py_has_every_internal_the_link_uses() -> None:
    import redis

    assert _redis_wire.missing_internals() == [], f"redis-py {redis.__version__}"


def test_the_internals_in_use_are_the_ones_checked() -> None:
    """The names `Pipe` touches on a redis-py connection are among those checked (a new one must be added there)."""
    import inspect

    source = inspect.getsource(_redis_link) + inspect.getsource(_redis_wire)
    for used in ("connection._writer.transport", "connection._reader._buffer", "BaseParser.parse_error",
                 "connection.encoder", "pool.connection_class", "pool.connection_kwargs", "get_node_from_key",
                 "mget_nonatomic", "get_primaries"):
        assert used in source, used
    checked = inspect.getsource(_redis_wire.missing_internals)
    for name in ('"_reader"', '"_writer"', '"encoder"', '"_buffer"', "parse_error", '"connection_class"',
                 '"connection_kwargs"', '"get_node_from_key"', '"mget_nonatomic"', '"get_primaries"',
                 "notEnoughData"):
        assert name in checked, name


@pytest.mark.parametrize("remove", ["parse_error", "_writer"])
def test_a_redis_py_without_them_is_a_config_error_at_startup_naming_its_version(
        monkeypatch: pytest.MonkeyPatch, remove: str) -> None:
    import redis
    import redis.asyncio
    from redis._parsers.base import BaseParser

    if remove == "parse_error":
        monkeypatch.delattr(BaseParser, "parse_error")
    else:
        init = redis.asyncio.Connection.__init__

        def without_writer(self: object, *args: object, **kwargs: object) -> None:
            init(self, *args, **kwargs)  # type: ignore[arg-type]
            del self._writer  # type: ignore[attr-defined]
        monkeypatch.setattr(redis.asyncio.Connection, "__init__", without_writer)
    with pytest.raises(ConfigError) as raised:
        RedisLink("redis://127.0.0.1:6379/0")
    message = str(raised.value)
    assert f"redis-py {redis.__version__}" in message and remove in message, message
