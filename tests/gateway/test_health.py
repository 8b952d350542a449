"""HealthBoard: circuit breaker states and latency averages."""

from __future__ import annotations

from switchman._config import CircuitBreaker
from switchman.gateway import HealthBoard

from .conftest import Clock


def test_circuit_lifecycle(clock: Clock) -> None:
    board = HealthBoard(CircuitBreaker(failures=2, cooldown_s=10), clock=clock)
    assert board.allow("m") and board.state("m") == "closed"
    board.record("m", ok=False)
    assert board.state("m") == "closed" and board.unhealthy() == frozenset()
    board.record("m", ok=False)
    assert board.state("m") == "open" and board.unhealthy() == {"m"} and not board.allow("m")
    clock.now += 10
    assert board.state("m") == "half_open" and board.unhealthy() == frozenset()
    assert board.allow("m")  # the probe
    assert not board.allow("m") and board.unhealthy() == {"m"}  # only one at a time
    board.record("m", ok=False)
    assert board.state("m") == "open"  # a failed probe reopens at once
    clock.now += 10
    assert board.allow("m")
    board.record("m", ok=True)
    assert board.state("m") == "closed" and board.allow("m")


def test_success_resets_the_count(clock: Clock) -> None:
    board = HealthBoard(CircuitBreaker(failures=2, cooldown_s=10), clock=clock)
    board.record("m", ok=False)
    board.record("m", ok=True)
    board.record("m", ok=False)
    assert board.state("m") == "closed"


def test_abandoned_probe_frees_the_slot(clock: Clock) -> None:
    board = HealthBoard(CircuitBreaker(failures=1, cooldown_s=1), clock=clock)
    board.record("m", ok=False)
    clock.now += 1
    assert board.allow("m") and not board.allow("m")
    board.abandon("m")
    assert board.allow("m")


def test_moving_averages() -> None:
    board = HealthBoard(smoothing=0.5)
    board.observe("m", 100.0)
    assert board.ttft_ms["m"] == 100.0
    board.observe("m", 200.0, output_tokens=50, stream_s=1.0)
    assert board.ttft_ms["m"] == 150.0 and board.tokens_per_s["m"] == 50.0
    board.observe("m", 150.0, output_tokens=100, stream_s=1.0)
    assert board.tokens_per_s["m"] == 75.0
