"""Building redis-py clients for a single Redis or a Redis Cluster, chosen by the URL's scheme.

    async_client("redis://10.0.0.5:6379/0", socket_timeout=0.05)      # redis.asyncio.Redis
    async_client("redis+cluster://10.0.0.5:7000", socket_timeout=0.05)  # redis.asyncio.cluster.RedisCluster
    sync_client("rediss+cluster://:pw@10.0.0.5:7000")                   # redis.cluster.RedisCluster (TLS)

`redis+cluster://` and `rediss+cluster://` name one node of a Cluster (a seed: the client reads the
slot map from it and talks to every primary itself); the rest of the URL is redis-py's (user,
password, query options), with no database number (a Cluster has only database 0). The scheme
travels with the URL, so `server.redis_url`, `--redis-url`, `cache.redis_url` and `keys revoke`
all take a Cluster the same way. Every other URL builds the plain client, exactly as before.
"""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .._config_server import CLUSTER_SCHEMES, check_redis_url
from .._exceptions import ConfigError
from .._urls import shown_url

__all__ = ["any_node_url", "async_client", "failures", "is_cluster", "node_url", "plain_url", "shown_redis_url",
           "sync_client"]


def shown_redis_url(url: str) -> str:
    """The URL as messages and logs show it (`shown_url`: no password); ConfigError for one that redis-py would
    misread and quote part of the password from (`check_redis_url`), before any client is made of it."""
    try:
        check_redis_url(url)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return shown_url(url)


def is_cluster(url: str) -> bool:
    """Whether the URL names a Redis Cluster (`redis+cluster://` or `rediss+cluster://`)."""
    return urlsplit(url).scheme.lower() in CLUSTER_SCHEMES


def plain_url(url: str) -> str:
    """The URL with redis-py's own scheme (`redis://` or `rediss://`)."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme.lower(), parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def node_url(url: str, host: str, port: int) -> str:
    """The plain URL of one Cluster node: the seed's scheme, credentials and options with another address."""
    parts = urlsplit(plain_url(url))
    credentials = parts.netloc.rpartition("@")[0]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    netloc = f"{credentials}@{address}" if credentials else address
    return urlunsplit((parts.scheme, netloc, "", parts.query, ""))


def async_client(url: str, **options: Any) -> Any:
    """A redis-py asyncio client: `RedisCluster` for a Cluster URL, `Redis` otherwise (same options)."""
    if is_cluster(url):
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(plain_url(url), **options)
    import redis.asyncio

    return redis.asyncio.Redis.from_url(url, **options)


def sync_client(url: str, **options: Any) -> Any:
    """A blocking redis-py client: `redis.cluster.RedisCluster` for a Cluster URL, `redis.Redis` otherwise."""
    if is_cluster(url):
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(plain_url(url), **options)
    import redis

    return redis.Redis.from_url(url, **options)


async def any_node_url(url: str, **options: Any) -> str:
    """A plain URL of one Cluster node picked at random (read from the seed's slot map), for a pub/sub
    connection: PUBLISH reaches every node, so any one hears every message. The seed itself for a plain URL."""
    if not is_cluster(url):
        return url
    client = async_client(url, **options)
    try:
        await client.initialize()
        node = random.choice(client.get_nodes())
        return node_url(url, node.host, int(node.port))
    finally:
        await client.aclose()


def failures() -> tuple[type[BaseException], ...]:
    """What redis-py raises when Redis is down, slow or refuses a command (a Cluster's slot-map errors too)."""
    from redis.exceptions import RedisClusterException, RedisError

    return (RedisError, RedisClusterException, OSError, TimeoutError)
