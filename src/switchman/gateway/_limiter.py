"""A token bucket per client address, for failed authentications.

    limiter = AddressLimiter(burst=20, per_s=1.0)
    if not limiter.allowed(address): ...answer 429 with Retry-After: limiter.retry_after(address)...
    limiter.spend(address)          # one failed attempt

Each address may fail `burst` times at once and then `per_s` times a second; a blocked address is
answered 429 without its key being checked. At most `max_addresses` are remembered (least recently
seen forgotten first), so a flood from many addresses cannot grow it without bound.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["AddressLimiter"]


class AddressLimiter:
    """Per-address token buckets (one process's view; issue-11's shared state can replace it)."""

    def __init__(
        self, *, burst: int, per_s: float, max_addresses: int = 100_000, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = float(burst)
        self.per_s = per_s
        self.max_addresses = max_addresses
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (tokens, at)

    def _tokens(self, address: str, now: float) -> float:
        found = self._buckets.get(address)
        if found is None:
            return self.burst
        tokens, at = found
        return min(self.burst, tokens + (now - at) * self.per_s)

    def allowed(self, address: str) -> bool:
        """Whether the address may try (at least one token left)."""
        return self._tokens(address, self.clock()) >= 1.0

    def retry_after(self, address: str) -> float:
        """Seconds until the address has a token again."""
        return max((1.0 - self._tokens(address, self.clock())) / self.per_s, 0.0)

    def spend(self, address: str) -> None:
        """Take one token for a failed attempt."""
        now = self.clock()
        self._buckets[address] = (max(self._tokens(address, now) - 1.0, 0.0), now)
        self._buckets.move_to_end(address)
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)
