"""Live health of each deployment: a circuit breaker, and TTFT and throughput marks that stay fresh.

    board = HealthBoard(CircuitBreaker(failures=5, cooldown_s=30))
    if board.allow("gpt-4o@azure"): ...call...; board.record("gpt-4o@azure", ok=True)

Keys are deployment ids (a model with one deployment uses its own name).

Circuit breaker: a key that fails `failures` times in a row is *open* for its cooldown (the
breaker's, or the one `record` is given): requests skip it while anything else can serve them.
Then exactly one request is let through as a probe; its success closes the circuit, its failure
opens it for another cooldown.

Live latency: each answer's TTFT is folded into a moving average whose old value weighs less the
older it is (half-life `half_life_s`), so after a pause a new answer mostly replaces it. What is
folded in is the median of the key's last three answers younger than `reprobe_s` (the lower of two):
one slow answer among fast ones (a provider's tail, a pause in this process) does not set a fast
deployment aside for a whole `reprobe_s`; two in a row do. A lone answer counts as it is, so a
first measurement and a re-probe of a stale mark take effect at once. A mark
older than `reprobe_s` is stale: it reads as unmeasured (`live_ttft` is None) until one request has
been sent to the key (`sent`), then as the old mark again until that request's answer re-measures
it or another `reprobe_s` passes. So a deployment set aside as slow gets one request per
`reprobe_s`, and a recovered one wins its traffic back at its next re-probe.

The shell keeps this state and hands the decision core plain values, so the core stays pure.
`HealthStore` is the interface; `HealthBoard` keeps it in the process. A shared backend (Redis)
implements the same synchronous calls over a local mirror it keeps in step in the background:
the request path never waits on the network for health.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from .._config_server import CircuitBreaker, LiveLatency

__all__ = ["CircuitState", "HealthBoard", "HealthStore"]

CircuitState = Literal["closed", "open", "half_open"]


class HealthStore(Protocol):
    """Circuit state and live latency per key: what the dispatcher and the balancer read and write."""

    @property
    def ttft_ms(self) -> Mapping[str, float]:
        """Moving average of time to first token, ms, by key (for display; decisions use `live_ttft`)."""
        ...

    @property
    def tokens_per_s(self) -> Mapping[str, float]:
        """Moving average of streamed output tokens per second, by key."""
        ...

    def state(self, key: str) -> CircuitState: ...
    def unhealthy(self) -> frozenset[str]: ...
    def allow(self, key: str) -> bool: ...
    def record(self, key: str, *, ok: bool, cooldown_s: float | None = None) -> None: ...
    def abandon(self, key: str) -> None: ...
    def observe(self, key: str, ttft_ms: float, output_tokens: int = 0, stream_s: float = 0.0) -> None: ...
    def live_ttft(self, key: str) -> float | None: ...
    def sent(self, key: str) -> None: ...


@dataclass(slots=True)
class _Circuit:
    failures: int = 0
    opened_at: float | None = None
    cooldown_s: float = 0.0
    probing: bool = False


class HealthBoard:
    """Per-key circuit breakers and live latency marks for one gateway process (the in-process HealthStore)."""

    def __init__(
        self, breaker: CircuitBreaker | None = None, *, latency: LiveLatency | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.breaker = breaker or CircuitBreaker()
        self.latency = latency or LiveLatency()
        self._clock = clock
        self._circuits: dict[str, _Circuit] = {}
        self._open: set[str] = set()
        self._ttft: dict[str, float] = {}
        self._rates: dict[str, float] = {}
        self._measured_at: dict[str, float] = {}
        self._probe_sent_at: dict[str, float] = {}
        self._recent: dict[str, deque[tuple[float, float]]] = {}

    @property
    def ttft_ms(self) -> dict[str, float]:
        """Moving average of time to first token, ms, by key (as last measured, however long ago)."""
        return self._ttft

    @property
    def tokens_per_s(self) -> dict[str, float]:
        """Moving average of output tokens per second while streaming, by key."""
        return self._rates

    # -- circuit breaker ---------------------------------------------------------------------
    def _cooling(self, circuit: _Circuit, now: float) -> bool:
        return circuit.opened_at is not None and now < circuit.opened_at + circuit.cooldown_s

    def state(self, key: str) -> CircuitState:
        """closed, open (cooling down) or half_open (ready for, or running, its probe)."""
        circuit = self._circuits.get(key)
        if circuit is None or circuit.opened_at is None:
            return "closed"
        if circuit.probing or not self._cooling(circuit, self._clock()):
            return "half_open"
        return "open"

    def unhealthy(self) -> frozenset[str]:
        """Keys that should not take traffic now (open, or half-open with a probe in flight)."""
        if not self._open:
            return frozenset()
        now = self._clock()
        return frozenset(k for k in self._open if self._circuits[k].probing or self._cooling(self._circuits[k], now))

    def allow(self, key: str) -> bool:
        """Whether a request may go to `key` now; after a cooldown the first caller becomes the probe."""
        circuit = self._circuits.get(key)
        if circuit is None or circuit.opened_at is None:
            return True
        if circuit.probing or self._cooling(circuit, self._clock()):
            return False
        circuit.probing = True
        return True

    def record(self, key: str, *, ok: bool, cooldown_s: float | None = None) -> None:
        """The outcome of one call: an answer (any answer) or a provider failure.

        `cooldown_s` is the key's own cooldown when it opens (default: the breaker's).
        """
        circuit = self._circuits.get(key)
        if circuit is None:  # (not setdefault: that builds a _Circuit on every call)
            circuit = self._circuits[key] = _Circuit()
        circuit.probing = False
        if ok:
            circuit.failures = 0
            circuit.opened_at = None
            self._open.discard(key)
            return
        circuit.failures += 1
        if circuit.opened_at is not None or circuit.failures >= self.breaker.failures:
            circuit.opened_at = self._clock()
            circuit.cooldown_s = self.breaker.cooldown_s if cooldown_s is None else cooldown_s
            self._open.add(key)

    def abandon(self, key: str) -> None:
        """A call ended with no outcome (cancelled): free the probe slot it may hold."""
        circuit = self._circuits.get(key)
        if circuit is not None:
            circuit.probing = False

    # -- live latency ------------------------------------------------------------------------
    def observe(self, key: str, ttft_ms: float, output_tokens: int = 0, stream_s: float = 0.0) -> None:
        """Fold one answer's time to first token (and streaming throughput) into the key's marks."""
        now = self._clock()
        previous_at = self._measured_at.get(key)
        weight = 1.0
        if previous_at is not None:
            age = now - previous_at
            fade = 0.5 ** ((0.0 if 0.0 > age else age) / self.latency.half_life_s)  # max(age, 0.0), no builtin
            weight = 1.0 - (1.0 - self.latency.smoothing) * fade
        self._measured_at[key] = now
        typical = self._typical(key, ttft_ms, now)
        previous = self._ttft.get(key)
        self._ttft[key] = typical if previous is None else previous + weight * (typical - previous)
        if output_tokens > 0 and stream_s > 0:
            rate = output_tokens / stream_s
            previous = self._rates.get(key)
            self._rates[key] = rate if previous is None else previous + weight * (rate - previous)

    def _typical(self, key: str, ttft_ms: float, now: float) -> float:
        """The median of the key's last three answers younger than `reprobe_s` (of two: the lower)."""
        recent = self._recent.get(key)
        if recent is None:
            recent = self._recent[key] = deque(maxlen=3)
        cutoff = now - self.latency.reprobe_s
        while recent and recent[0][0] <= cutoff:
            recent.popleft()
        recent.append((now, ttft_ms))
        if len(recent) == 1:
            return ttft_ms
        # min and max of two spelled out (`min(a, b)` is `b if b < a else a`): the builtins parse their arguments
        a, b = recent[-2][1], ttft_ms
        low = b if b < a else a
        if len(recent) == 2:
            return low
        c = recent[0][1]
        high = b if b > a else a
        middle = c if c < high else high
        return middle if middle > low else low  # max(min(a, b), min(max(a, b), c))

    def live_ttft(self, key: str) -> float | None:
        """The TTFT mark decisions should use: None when unmeasured, or stale and due a re-probe."""
        value = self._ttft.get(key)
        if value is None:
            return None
        now, every = self._clock(), self.latency.reprobe_s
        measured = self._measured_at.get(key, now)
        if now - measured < every:
            return value
        probed = self._probe_sent_at.get(key)
        if probed is None or probed < measured or now - probed >= every:
            return None  # stale, and no re-probe under way: read as unmeasured until one is sent
        return value

    # -- shared state (RedisHealth keeps this board in step with the other replicas) ----------
    def keys(self) -> frozenset[str]:
        """Every key with a circuit or a latency mark."""
        return frozenset(self._circuits) | frozenset(self._ttft)

    def open_for(self, key: str) -> float | None:
        """Seconds of cooldown left on an open circuit (0 when half-open), None when closed."""
        circuit = self._circuits.get(key)
        if circuit is None or circuit.opened_at is None:
            return None
        return max(circuit.opened_at + circuit.cooldown_s - self._clock(), 0.0)

    def mark(self, key: str) -> tuple[float, float | None, float] | None:
        """(TTFT ms, tokens/s or None, seconds since measured) of the key's latency mark, if any."""
        ttft = self._ttft.get(key)
        if ttft is None:
            return None
        return ttft, self._rates.get(key), max(self._clock() - self._measured_at[key], 0.0)

    def adopt_circuit(self, key: str, open_for_s: float | None) -> None:
        """Take the shared circuit state: open for `open_for_s` more seconds (0: due its probe), or closed (None).

        A probe this process has in flight is left to settle by its own outcome.
        """
        circuit = self._circuits.setdefault(key, _Circuit())
        if circuit.probing:
            return
        if open_for_s is None:
            circuit.failures = 0
            circuit.opened_at = None
            self._open.discard(key)
            return
        circuit.opened_at = self._clock()
        circuit.cooldown_s = max(open_for_s, 0.0)
        self._open.add(key)

    def adopt_mark(self, key: str, ttft_ms: float, tokens_per_s: float | None, age_s: float) -> None:
        """Take another replica's latency mark when it is fresher than this process's own.

        The mark supersedes this process's own earlier answers: it alone stands in the median, as one answer.
        """
        measured_at = self._clock() - max(age_s, 0.0)
        if measured_at <= self._measured_at.get(key, float("-inf")):
            return
        self._ttft[key] = ttft_ms
        self._measured_at[key] = measured_at
        self._recent[key] = deque([(measured_at, ttft_ms)], maxlen=3)
        if tokens_per_s is not None:
            self._rates[key] = tokens_per_s

    def sent(self, key: str) -> None:
        """A request went to `key`: if its mark is stale, this request is the re-probe."""
        measured = self._measured_at.get(key)
        if measured is None:
            return
        now = self._clock()
        if now - measured >= self.latency.reprobe_s:
            self._probe_sent_at[key] = now
