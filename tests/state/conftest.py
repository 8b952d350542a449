"""A clock the state tests move by hand, and a key prefix of their own on the shared Redis."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from switchman.state import RedisLink
from switchman.testing import forget_prefix, unique_prefix

SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"


class Clock:
    """Monotonic seconds, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix no other test uses on the shared Redis; its keys are deleted afterwards."""
    prefix = unique_prefix()
    yield prefix
    forget_prefix(SHARED_REDIS_URL, prefix)


async def counting_link(
    prefix: str, sources: list[str] | None = None,
) -> tuple[RedisLink, list[list[str]]]:
    """A link on the shared Redis under `prefix`, and the keys of every script it runs, in order (their sources
    appended to `sources` when given)."""
    link = RedisLink(SHARED_REDIS_URL, prefix=prefix, timeout_s=2.0)
    await link.check()
    assert link.up
    scripts: list[list[str]] = []
    real = link.eval

    async def counted(source: str, keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
        scripts.append(list(keys))
        if sources is not None:
            sources.append(source)
        return await real(source, keys, args)

    link.eval = counted  # type: ignore[method-assign]
    return link, scripts
