"""Live health of each model: a circuit breaker and moving averages of TTFT and throughput.

    board = HealthBoard(CircuitBreaker(failures=5, cooldown_s=30))
    if board.allow("gpt-4o"): ...call...; board.record("gpt-4o", ok=True)

A model that fails `failures` times in a row is *open* for `cooldown_s`: requests skip it while
anything else can serve them. Then exactly one request is let through as a probe; its success
closes the circuit, its failure opens it for another cooldown. The shell keeps this state and
hands the decision core plain values (`unhealthy()`, `ttft_ms`), so the core stays pure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .._config import CircuitBreaker

__all__ = ["CircuitState", "HealthBoard"]

CircuitState = Literal["closed", "open", "half_open"]


@dataclass(slots=True)
class _Circuit:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False


class HealthBoard:
    """Per-model circuit breakers and latency averages for one gateway process."""

    def __init__(
        self, breaker: CircuitBreaker | None = None, *, clock: Callable[[], float] = time.monotonic,
        smoothing: float = 0.2,
    ) -> None:
        self.breaker = breaker or CircuitBreaker()
        self._clock = clock
        self._alpha = smoothing
        self._circuits: dict[str, _Circuit] = {}
        self._open: set[str] = set()
        #: Moving average of time to first token, ms, by model (read by the decision core).
        self.ttft_ms: dict[str, float] = {}
        #: Moving average of output tokens per second while streaming, by model.
        self.tokens_per_s: dict[str, float] = {}

    def state(self, model: str) -> CircuitState:
        """closed, open (cooling down) or half_open (ready for, or running, its probe)."""
        circuit = self._circuits.get(model)
        if circuit is None or circuit.opened_at is None:
            return "closed"
        if circuit.probing or self._clock() >= circuit.opened_at + self.breaker.cooldown_s:
            return "half_open"
        return "open"

    def unhealthy(self) -> frozenset[str]:
        """Models that should not take traffic now (open, or half-open with a probe in flight)."""
        if not self._open:
            return frozenset()
        now = self._clock()
        return frozenset(
            m for m in self._open
            if self._circuits[m].probing or now < (self._circuits[m].opened_at or 0.0) + self.breaker.cooldown_s
        )

    def allow(self, model: str) -> bool:
        """Whether a request may go to `model` now; after a cooldown the first caller becomes the probe."""
        circuit = self._circuits.get(model)
        if circuit is None or circuit.opened_at is None:
            return True
        if circuit.probing or self._clock() < circuit.opened_at + self.breaker.cooldown_s:
            return False
        circuit.probing = True
        return True

    def record(self, model: str, *, ok: bool) -> None:
        """The outcome of one call: an answer (any answer) or a provider failure."""
        circuit = self._circuits.setdefault(model, _Circuit())
        circuit.probing = False
        if ok:
            circuit.failures = 0
            circuit.opened_at = None
            self._open.discard(model)
            return
        circuit.failures += 1
        if circuit.opened_at is not None or circuit.failures >= self.breaker.failures:
            circuit.opened_at = self._clock()
            self._open.add(model)

    def abandon(self, model: str) -> None:
        """A call ended with no outcome (cancelled): free the probe slot it may hold."""
        circuit = self._circuits.get(model)
        if circuit is not None:
            circuit.probing = False

    def observe(self, model: str, ttft_ms: float, output_tokens: int = 0, stream_s: float = 0.0) -> None:
        """Fold one call's time to first token (and streaming throughput) into the averages."""
        a = self._alpha
        previous = self.ttft_ms.get(model)
        self.ttft_ms[model] = ttft_ms if previous is None else previous + a * (ttft_ms - previous)
        if output_tokens > 0 and stream_s > 0:
            rate = output_tokens / stream_s
            previous = self.tokens_per_s.get(model)
            self.tokens_per_s[model] = rate if previous is None else previous + a * (rate - previous)
