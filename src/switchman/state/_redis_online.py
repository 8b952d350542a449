"""An online route's per-cluster success counts shared by every replica on Redis.

    shared = RedisOnlineCounts(link, "default", strategy)   # strategy: the route's OnlineStrategy
    await shared.start()                                    # every `sync_s`: push this replica's feedback, pull all

Each replica starts from the same prior (the router's trained quality per cluster) and adds the
feedback every replica received: Redis holds only the feedback, as sums per (cluster, model), in
one hash per route and router, `<prefix>{online:<route>:<router>}` (`<router>` is a digest of the
clusters and model names, so replicas on a different router file never mix counts). A score is
counted locally at once and reaches the other replicas within about `sync_s` (default 1 s).
Decisions never wait on Redis. While Redis is down each replica learns alone; what it counted
meanwhile is pushed when Redis answers again. Every push carries an id that the same Lua script records
(`...:done`, kept an hour), so a push sent again after a timeout that Redis had in fact run counts once.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import uuid
from typing import TYPE_CHECKING

import numpy as np

from .._streaks import OnceLog
from ._redis_link import RedisLink, RedisUnavailable
from ._sync_loop import SyncLoop

if TYPE_CHECKING:  # the learned-routing stack loads only where a route uses it
    from ..learn import OnlineStrategy

__all__ = ["RedisOnlineCounts"]

logger = logging.getLogger("switchman.state")

_TTL_S = 90 * 86_400  # counts nobody has added to for 90 days are forgotten
#: How long a push id is remembered (a push sent again later than this would count twice: Redis was unreachable
#: for that long right after it ran the first one).
_DONE_KEEP_MS = 3_600_000

#: KEYS[1] the counts hash, KEYS[2] the push ids done (zset, score: Redis time ms). ARGV: push id, ttl s,
#: keep ms, then field, amount pairs. Adds the amounts once per push id; returns the whole hash. One command per
#: field: a count HINCRBYFLOAT refuses as no number, or makes no finite double of (another writer's), is dropped
#: and the amount added to 0, so the push never fails halfway — caught from the command's own reply instead of
#: read beforehand (an HGET a field more). Any other refusal (OOM under maxmemory: it refuses the first write,
#: so nothing is half-applied) fails the script: the push is sent again, and no learned count is lost.
_PUSH = """
if #ARGV > 3 and not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  for i = 4, #ARGV, 2 do
    local added = redis.pcall('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
    local sum = type(added) == 'string' and tonumber(added)  -- (a refusal is a table; 1e400 passes as inf)
    if not sum or sum ~= sum or sum == math.huge or sum == -math.huge then
      if type(added) == 'table' and not (string.find(added.err, 'hash value is not a float', 1, true)
          or string.find(added.err, 'NaN or Infinity', 1, true)) then
        return added
      end
      redis.call('HDEL', KEYS[1], ARGV[i])
      redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
    end
  end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[3]))
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return redis.call('HGETALL', KEYS[1])
"""


def router_digest(strategy: OnlineStrategy) -> str:
    """A short digest of the router's clusters and model names: replicas share counts only on the same router."""
    digest = hashlib.sha256(np.ascontiguousarray(strategy.centroids, dtype=np.float32).tobytes())
    digest.update("\0".join(strategy.learned.router.model_names).encode())
    return digest.hexdigest()[:16]


class RedisOnlineCounts:
    """Keeps one online route's `BetaCounts` equal to its prior plus every replica's feedback."""

    def __init__(self, link: RedisLink, route: str, strategy: OnlineStrategy, *, sync_s: float = 1.0) -> None:
        self.link = link
        self.sync_s = sync_s
        self.counts = strategy.counts
        self.models = list(strategy.learned.router.model_names)
        self.prior = strategy.counts.snapshot()
        entity = f"online:{route}:{router_digest(strategy)}"
        self.key = link.key(entity)
        self.done_key = link.key(entity, "done")  # push ids Redis has counted (same slot as the counts)
        self._pending: dict[str, float] = {}  # field -> feedback not yet in Redis
        self._unsent: tuple[str, dict[str, float]] | None = None  # a push (id, fields) Redis may not have taken
        self._lock = threading.Lock()  # feedback may arrive from a worker thread (the SDK's submit)
        self._loop = SyncLoop(self.sync, sync_s, "online counts")
        self._malformed = OnceLog()  # fields whose malformed count was logged (bounded: another writer's)
        self.counts.on_observe(self._observed)

    def _observed(self, cluster: int, column: int, score: float) -> None:
        model = self.models[column]
        with self._lock:
            for field, amount in ((f"a:{cluster}:{model}", score), (f"b:{cluster}:{model}", 1.0 - score)):
                self._pending[field] = self._pending.get(field, 0.0) + amount

    async def sync(self) -> None:
        """Push this replica's new feedback, then set the counts to the prior plus everyone's (skipped while down).

        Each push has an id Redis records in the same script, so a push sent again after a timeout that Redis had
        in fact run counts once. One push is in flight at a time: a push that failed is sent again as it was
        (same id) before the feedback that arrived since goes out in a push of its own."""
        with self._lock:
            if self._unsent is None and self._pending:
                self._unsent = (uuid.uuid4().hex, self._pending)
                self._pending = {}
            batch = self._unsent
        push_id, fields = batch if batch is not None else ("", {})
        args: list[str | int | float] = [push_id, _TTL_S, _DONE_KEEP_MS]
        for field, amount in fields.items():
            args += [field, amount]
        try:
            replies = await self.link.eval(_PUSH, [self.key, self.done_key], args)
        except RedisUnavailable:
            return  # the batch stays unsent, with its id: sent again at the next sync, counted once
        with self._lock:
            if self._unsent is batch:
                self._unsent = None
        shared = dict(zip(replies[::2], replies[1::2], strict=True))
        alpha, beta = self.prior[0].copy(), self.prior[1].copy()
        column = {name: i for i, name in enumerate(self.models)}
        for raw_field, raw_value in shared.items():
            field = raw_field.decode("utf-8", "replace") if isinstance(raw_field, bytes) else str(raw_field)
            which, _, rest = field.partition(":")
            cluster_text, _, model = rest.partition(":")
            if model not in column or not (cluster_text.isascii() and cluster_text.isdigit()) or int(cluster_text) >= alpha.shape[0]:
                continue
            target = alpha if which == "a" else beta if which == "b" else None
            if target is not None:
                try:
                    amount = float(raw_value)
                except ValueError:
                    amount = math.nan
                if not math.isfinite(amount):  # one malformed count must not keep every other one from the sync
                    if self._malformed.first(field):
                        logger.warning("redis online counts %s: malformed count %s=%r; skipped", self.key, field,
                                       raw_value)
                    continue
                target[int(cluster_text), column[model]] += amount
        with self._lock:  # feedback not in Redis yet (it arrived during the exchange, or waits): keep it counted
            for field, amount in self._pending.items():
                which, _, rest = field.partition(":")
                cluster_text, _, model = rest.partition(":")
                (alpha if which == "a" else beta)[int(cluster_text), column[model]] += amount
            self.counts.assign(alpha, beta)

    async def start(self) -> None:
        """Take the shared counts now, then keep in step in the background."""
        await self.sync()
        self._loop.start()

    async def aclose(self) -> None:
        """Stop syncing, pushing what is pending once more."""
        await self._loop.stop(self.link.timeout_s * 3 + 5.0)
        await self.sync()
