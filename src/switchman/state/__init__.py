"""What gateway replicas can share: sessions, budgets, rate limits, key revocations, health, cached responses.

Each is one small interface with an in-process backend; a shared (Redis) backend implements the
same interface, so the gateway does not change when state moves out of the process.

    from switchman.state import HealthBoard, LocalRateLimiter, MemoryCache, RedisCache, RedisLink

`RedisLink` is the one Redis connection (`server.redis_url`) the shared backends use: a timeout on
every call, an up/down state (down: each replica serves from its own state) and resync callbacks.
A `redis+cluster://` URL makes it (and the response cache, and the revocation feed) a Redis Cluster client.

| interface      | in process          | shared                  |
|----------------|---------------------|-------------------------|
| `HealthStore`  | `HealthBoard`       | `RedisHealth`           |
| `RateLimiter`  | `LocalRateLimiter`  | `RedisRateLimiter`      |
| `CacheBackend` | `MemoryCache`       | `RedisCache`            |
| sessions       | (gateway's memory)  | `RedisSessionStore`     |
| `Budgets`      | `BudgetManager`     | `SharedBudgets`         |
| key revocations| (keys database)     | `RevocationFeed`        |
| online counts  | `BetaCounts` (learn)| `RedisOnlineCounts`     |
"""

from ._budgets import SharedBudgets, SharedReservation
from ._cache import CacheBackend, MemoryCache
from ._health import CircuitState, HealthBoard, HealthStore
from ._limits import Admission, LocalRateLimiter, RateLimit, RateLimiter
from ._redis_cache import RedisCache
from ._redis_client import is_cluster as is_redis_cluster
from ._redis_client import sync_client as redis_sync_client
from ._redis_health import RedisHealth
from ._redis_limits import RedisRateLimiter
from ._redis_online import RedisOnlineCounts
from ._redis_link import RedisLink, RedisUnavailable
from ._revocations import RevocationFeed, publish_revocation
from ._sessions import RedisSessionStore

__all__ = [
    "Admission",
    "CacheBackend",
    "CircuitState",
    "HealthBoard",
    "HealthStore",
    "LocalRateLimiter",
    "MemoryCache",
    "RateLimit",
    "RateLimiter",
    "RedisCache",
    "RedisHealth",
    "RedisLink",
    "RedisOnlineCounts",
    "RedisRateLimiter",
    "RedisSessionStore",
    "RedisUnavailable",
    "RevocationFeed",
    "SharedBudgets",
    "SharedReservation",
    "is_redis_cluster",
    "publish_revocation",
    "redis_sync_client",
]
