"""How fast wrong dashboard keys may be tried: per browser at one address, and a ceiling over everyone.

Keyed on the address alone, one attacker's wrong keys locked out everybody sharing that address (everyone
behind a reverse proxy or a NAT), while an attacker with many addresses was not slowed at all. The login
has no user name (a key is the whole credential), so the two tiers are:

- a browser at an address: `failures` wrong keys in `window_s`, then 429 for that browser. A browser is the
  signed login-form token its cookie carries (kept for half an hour across re-rendered forms, see
  `Access.login_token`): a second person behind the same address, in another browser, still logs in;
- everyone: `ceiling` wrong keys in `window_s` from all addresses and browsers together, then every login
  waits (429) until the oldest of them leaves the window. This is what slows a guesser with many addresses
  or one who fetches a fresh form for every guess; its price is that such a flood also keeps legitimate
  logins out for a few minutes (sessions already open are not touched).

The address is the connection's (`request.client`): uvicorn replaces it with X-Forwarded-For only when the peer
is one it is told to trust (`FORWARDED_ALLOW_IPS`, loopback by default), as for the gateway's own per-address
limits; nothing here reads forwarding headers. Memory is bounded: at most `max_clients` browsers (the oldest
forgotten first; asking about one never adds it) and `ceiling` timestamps. One process's view (each worker
counts its own).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

__all__ = ["LoginThrottle"]


class LoginThrottle:
    """Wrong keys per (address, browser) and over everyone, each within `window_s`."""

    def __init__(self, failures: int = 10, window_s: float = 300.0, *, ceiling: int = 100,
                 max_clients: int = 10_000) -> None:
        self.failures = failures
        self.window_s = window_s
        self.ceiling = ceiling
        self.max_clients = max_clients
        self._seen: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._everyone: deque[float] = deque(maxlen=ceiling)

    def _recent(self, times: deque[float], now: float) -> deque[float]:
        while times and now - times[0] > self.window_s:
            times.popleft()
        return times

    def blocked(self, address: str, browser: str, now: float | None = None) -> bool:
        """Whether this browser at this address, or everyone, has used up the attempts."""
        now = time.monotonic() if now is None else now
        if len(self._recent(self._everyone, now)) >= self.ceiling:
            return True
        times = self._seen.get((address, browser))  # only `failed` adds a browser (it holds the bound)
        return times is not None and len(self._recent(times, now)) >= self.failures

    def failed(self, address: str, browser: str, now: float | None = None) -> None:
        """Note a wrong key."""
        now = time.monotonic() if now is None else now
        key = (address, browser)
        times = self._seen.get(key)
        if times is None:
            while len(self._seen) >= self.max_clients:
                self._seen.popitem(last=False)
            times = self._seen[key] = deque()
        else:
            self._seen.move_to_end(key)
        self._recent(times, now).append(now)
        self._everyone.append(now)
