"""The revocation feed on a Redis of the test's own: it survives a failing callback and subscribes afresh
whenever the link resyncs (a half-open connection that never errors cannot leave a replica deaf)."""

from __future__ import annotations

import logging

import anyio
import pytest

from switchman.state import RedisLink, RevocationFeed
from switchman.testing import RedisServer


def test_the_feed_survives_a_failing_callback_and_resubscribes_at_every_resync(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "switchman.state")
    dropped: list[str] = []
    connects: list[int] = []

    def drop(key_id: str) -> None:
        if key_id == "bad":
            raise ValueError("a bug")
        dropped.append(key_id)

    async def on_connect() -> None:
        connects.append(1)
        if len(connects) == 1:
            raise RuntimeError("a bug at the first connect")

    with RedisServer() as server:
        async def main() -> None:
            link = RedisLink(server.url, timeout_s=0.5, ping_s=0.05)
            await link.start()
            feed = RevocationFeed(link)
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: feed.run(drop, on_connect=on_connect))
                with anyio.fail_after(10):
                    while feed.subscriptions < 2:  # the first on_connect failed: the feed went on
                        await anyio.sleep(0.01)
                    await anyio.sleep(0.05)
                    assert await feed.publish("bad") and await feed.publish("k-1")
                    while dropped != ["k-1"]:
                        await anyio.sleep(0.01)
                    subscriptions = feed.subscriptions
                    link.up = False  # as after an outage the feed's own connection did not notice
                    while not link.up:
                        await anyio.sleep(0.01)
                    while feed.subscriptions == subscriptions:  # subscribed again, refreshed again
                        await anyio.sleep(0.01)
                assert len(connects) == feed.subscriptions
                feed.stop()
            await link.aclose()

        anyio.run(main)
    messages = [r.getMessage() for r in caplog.records if r.exc_info]
    assert any("revocation feed failed" in m for m in messages)
    assert any("dropping key bad failed" in m for m in messages)
