"""How fast wrong dashboard keys may be tried: per address, per known device, and a ceiling over newcomers.

The login has no user name (a key is the whole credential), and anything a browser is handed for free (a login
form's token, a fresh cookie) is no identity: an attacker who drops cookies gets a new one for every guess. So
the tiers are keyed on what a guesser cannot reset for free:

- an address: `failures` wrong keys in `window_s` per client address, then 429 from that address;
- a known device: a browser that logged in with the master key before carries a signed device cookie
  (`Access.device_cookie`; not for the read-only key, whose holders could mint devices to guess the master key
  with). Its logins count in that device's own bucket (`failures` in `window_s`) and are
  exempt from the address limit and the ceiling: the admins who used this browser before still log in during a
  flood, or behind a reverse proxy whose one address an attacker exhausted;
- newcomers (no valid device cookie): `ceiling` wrong keys in `window_s` from all addresses together, then every
  newcomer's login waits (429) until the oldest leaves the window. This slows a guesser with many addresses;
  a WARNING is logged when it trips (no key text).

The address is the connection's (`request.client`): uvicorn replaces it with X-Forwarded-For only when the peer
is one it is told to trust (`FORWARDED_ALLOW_IPS`, loopback by default). Memory is bounded: at most
`max_clients` addresses and as many devices (the least recently failed forgotten first; asking about one never
adds it) and `ceiling` timestamps. One process's view: each worker counts its own.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque

__all__ = ["LoginThrottle"]

logger = logging.getLogger("switchman.ui")


def _prune(times: deque[float], now: float, window_s: float) -> deque[float]:
    while times and now - times[0] > window_s:
        times.popleft()
    return times


class _Buckets:
    """Recent failure times per name, for at most `max_names` names (least recently failed forgotten first)."""

    def __init__(self, window_s: float, max_names: int) -> None:
        self.window_s = window_s
        self.max_names = max_names
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._times)

    def count(self, name: str, now: float) -> int:
        """Failures of `name` within the window (asking never adds a name)."""
        times = self._times.get(name)
        return 0 if times is None else len(_prune(times, now, self.window_s))

    def add(self, name: str, now: float) -> None:
        times = self._times.get(name)
        if times is None:
            while len(self._times) >= self.max_names:
                self._times.popitem(last=False)
            times = self._times[name] = deque()
        else:
            self._times.move_to_end(name)
        _prune(times, now, self.window_s).append(now)


class LoginThrottle:
    """Wrong keys per address and per known device, and over every newcomer, each within `window_s`."""

    def __init__(self, failures: int = 10, window_s: float = 300.0, *, ceiling: int = 100,
                 max_clients: int = 10_000) -> None:
        self.failures = failures
        self.window_s = window_s
        self.ceiling = ceiling
        self.max_clients = max_clients
        self._addresses = _Buckets(window_s, max_clients)
        self._devices = _Buckets(window_s, max_clients)
        self._newcomers: deque[float] = deque(maxlen=ceiling)

    def blocked(self, address: str, device: str | None, now: float | None = None) -> bool:
        """Whether this login must wait: its device's bucket when it has one, else its address's and the ceiling."""
        now = time.monotonic() if now is None else now
        if device is not None:
            return self._devices.count(device, now) >= self.failures
        return (len(_prune(self._newcomers, now, self.window_s)) >= self.ceiling
                or self._addresses.count(address, now) >= self.failures)

    def failed(self, address: str, device: str | None, now: float | None = None) -> None:
        """Note a wrong key (a known device's only in its own bucket)."""
        now = time.monotonic() if now is None else now
        if device is not None:
            self._devices.add(device, now)
            return
        self._addresses.add(address, now)
        newcomers = _prune(self._newcomers, now, self.window_s)
        was_open = len(newcomers) < self.ceiling
        newcomers.append(now)
        if was_open and len(newcomers) == self.ceiling:  # once per trip, not once per later failure
            logger.warning("dashboard: %d wrong keys in %g s from browsers that never logged in; their logins wait "
                           "until the oldest leaves the window (known devices still log in)", self.ceiling,
                           self.window_s)
