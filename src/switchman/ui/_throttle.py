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
  a WARNING is logged when it trips (no key text), at most once per window however often a freed slot refills
  under a sustained flood, and an INFO once a whole window passes without it filling.

A 429 says when to come back (`retry_after`: whole seconds until the failure that fills the bucket leaves it).
Nothing may await between asking (`retry_after`) and counting (`failed`): another login would slip in
between, and concurrent guesses could all pass a bucket one short of full.

The address is the connection's (`request.client`): uvicorn replaces it with X-Forwarded-For only when the peer
is one it is told to trust (`FORWARDED_ALLOW_IPS`, loopback by default). Memory is bounded: at most
`max_clients` addresses and as many devices (the least recently failed forgotten first; asking about one never
adds it) and `ceiling` timestamps. One process's view: each worker counts its own.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["LoginThrottle"]

logger = logging.getLogger("switchman.ui")


def _prune(times: deque[float], now: float, window_s: float) -> deque[float]:
    while times and now - times[0] > window_s:
        times.popleft()
    return times


def _wait(times: deque[float], limit: int, now: float, window_s: float) -> int:
    """Whole seconds until fewer than `limit` of `times` (pruned) are within the window; 0 when already fewer.

    A failure leaves once it is more than `window_s` old, so the answer is the first whole second after that.
    """
    if len(times) < limit:
        return 0
    return int(times[len(times) - limit] + window_s - now) + 1


class _Buckets:
    """Recent failure times per name, for at most `max_names` names (least recently failed forgotten first)."""

    def __init__(self, window_s: float, max_names: int) -> None:
        self.window_s = window_s
        self.max_names = max_names
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._times)

    def recent(self, name: str, now: float) -> deque[float]:
        """Failure times of `name` within the window, oldest first (asking never adds a name)."""
        times = self._times.get(name)
        return deque() if times is None else _prune(times, now, self.window_s)

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
                 max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.window_s = window_s
        self.ceiling = ceiling
        self.max_clients = max_clients
        self._clock = clock
        self._addresses = _Buckets(window_s, max_clients)
        self._devices = _Buckets(window_s, max_clients)
        self._newcomers: deque[float] = deque(maxlen=ceiling)
        self._filled_at: float | None = None  # when the ceiling last filled (None: not since it cleared)
        self._warned_at: float | None = None  # when its WARNING was last logged

    def retry_after(self, address: str, device: str | None, now: float | None = None) -> int:
        """Whole seconds this login must wait (0: it may try now), until every full bucket it counts in has room."""
        now = self._clock() if now is None else now
        if device is not None:
            return _wait(self._devices.recent(device, now), self.failures, now, self.window_s)
        newcomers = self._newcomers_at(now)
        return max(_wait(newcomers, self.ceiling, now, self.window_s),
                   _wait(self._addresses.recent(address, now), self.failures, now, self.window_s))

    def failed(self, address: str, device: str | None, now: float | None = None) -> None:
        """Note a wrong key (a known device's only in its own bucket)."""
        now = self._clock() if now is None else now
        if device is not None:
            self._devices.add(device, now)
            return
        self._addresses.add(address, now)
        newcomers = self._newcomers_at(now)
        was_open = len(newcomers) < self.ceiling
        newcomers.append(now)
        if was_open and len(newcomers) == self.ceiling:
            self._filled(now)

    def _newcomers_at(self, now: float) -> deque[float]:
        """The newcomers' failures within the window; logs (INFO) that the ceiling cleared once a window passed
        without it filling."""
        if self._filled_at is not None and now - self._filled_at > self.window_s:
            self._filled_at = self._warned_at = None
            logger.info("dashboard: the ceiling over newcomers' wrong keys has not filled for %g s: newcomers log in "
                        "again", self.window_s)
        return _prune(self._newcomers, now, self.window_s)

    def _filled(self, now: float) -> None:
        """The ceiling just filled: WARNING, at most once per window (a flood refills every slot that frees)."""
        self._filled_at = now
        if self._warned_at is not None and now - self._warned_at < self.window_s:
            return
        self._warned_at = now
        logger.warning("dashboard: %d wrong keys in %g s from browsers that never logged in; their logins wait "
                       "until the oldest leaves the window (known devices still log in)", self.ceiling, self.window_s)
