"""Key revocations broadcast on Redis pub/sub, so every replica drops a revoked key at once.

    feed = RevocationFeed(link)
    await feed.publish("k-123")                       # the replica (or CLI) that revoked it
    await feed.run(keyring.drop, on_connect=refresh)   # every replica, until feed.stop()
    publish_revocation("redis://...", "sm:", "k-123")  # blocking, for the command line

Messages go to `<prefix>revoked` (one channel: a Cluster propagates PUBLISH to every node, so the
subscription is a plain connection to one node picked from the slot map at each (re)subscription,
and another is tried after that node fails). A
replica that was not subscribed (Redis down, a reconnect) may have missed some: `on_connect` runs
at every (re)subscription so it re-reads the keys database, which is the record. The subscription
has its own connection without the link's short read timeout (it waits for messages, `ping_s` at
a time, so `stop()` ends it within that without cancelling redis-py mid-read); redis-py pings an
idle subscription, TCP keepalive is on, and a failed connection is opened again after `ping_s`.
Every time the link resyncs (Redis came back) the feed subscribes afresh on a new connection, so a
half-open connection that never errors cannot leave a replica deaf. A failure of anything else in
the loop (a callback's bug) is logged and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ._redis_client import any_node_url, failures, sync_client
from ._redis_link import RedisLink, RedisUnavailable

__all__ = ["RevocationFeed", "publish_revocation"]

logger = logging.getLogger("switchman.state")

CHANNEL = "revoked"


class RevocationFeed:
    """Publishes revoked key ids and hands those other replicas publish to a callback."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.channel = link.channel(CHANNEL)
        self.received = 0  # revocations heard from the channel
        self.subscriptions = 0  # (re)subscriptions made
        self._stopped = False
        self._renew = False  # set at a link resync: subscribe again on a new connection
        link.on_resync(self._resubscribe)

    async def _resubscribe(self) -> None:
        self._renew = True

    def stop(self) -> None:
        """End `run` at its next wake-up (within `ping_s`)."""
        self._stopped = True

    async def publish(self, key_id: str) -> bool:
        """Tell every replica; False when Redis is down (they pick it up at their next key refresh)."""
        try:
            await self.link.run(lambda r: r.publish(self.channel, key_id.encode()))
        except RedisUnavailable:
            return False
        return True

    async def run(self, drop: Callable[[str], None], *, on_connect: Callable[[], Awaitable[Any]] | None = None) -> None:
        """Subscribe and call `drop(key_id)` for every revocation, reconnecting after failures, until `stop()`."""
        import redis.asyncio

        while not self._stopped:
            client: Any = None
            try:
                url = await any_node_url(self.link.url, socket_timeout=self.link.timeout_s * 10,
                                         socket_connect_timeout=self.link.timeout_s * 10)
                client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=self.link.timeout_s * 10,
                                                      socket_keepalive=True,
                                                      health_check_interval=max(self.link.ping_s * 5, 1.0))
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    self._renew = False
                    await pubsub.subscribe(self.channel)
                    self.subscriptions += 1
                    if on_connect is not None:
                        await on_connect()
                    await self._listen(pubsub, drop)
            except failures():
                if not self._stopped:
                    await asyncio.sleep(self.link.ping_s)  # the link logs the outage; try again
            except Exception:  # a callback's bug must not end the feed: this replica would stop hearing revocations
                logger.exception("revocation feed failed; subscribing again in %.1f s", self.link.ping_s)
                if not self._stopped:
                    await asyncio.sleep(self.link.ping_s)
            finally:
                if client is not None:
                    with contextlib.suppress(*failures()):
                        async with asyncio.timeout(1.0):
                            await client.aclose()

    async def _listen(self, pubsub: Any, drop: Callable[[str], None]) -> None:
        while not self._stopped and not self._renew:
            message = await pubsub.get_message(timeout=self.link.ping_s)
            if message is not None and message.get("type") == "message":
                data = message.get("data")
                key_id = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
                self.received += 1
                try:
                    drop(key_id)
                except Exception:  # one bad revocation must not stop the feed
                    logger.exception("revocation feed: dropping key %s failed", key_id)


def publish_revocation(url: str, prefix: str, key_id: str, *, timeout_s: float = 2.0) -> bool:
    """Publish one revocation (blocking: the command line's `keys revoke`); False when Redis cannot be reached."""
    try:
        client = sync_client(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    except failures():  # a Cluster client reads the slot map at once
        return False
    try:
        client.publish(f"{prefix}{CHANNEL}", key_id.encode())
    except failures():
        return False
    finally:
        client.close()
    return True
