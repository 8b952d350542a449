"""HealthBoard: circuit breaker states, latency marks that fade with age, and re-probes of stale marks."""

from __future__ import annotations

import pytest
from clock_support import Clock

from switchman._config_server import CircuitBreaker, LiveLatency
from switchman.state import HealthBoard


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


def test_a_key_s_own_cooldown(clock: Clock) -> None:
    board = HealthBoard(CircuitBreaker(failures=1, cooldown_s=30), clock=clock)
    board.record("a", ok=False, cooldown_s=5)
    board.record("b", ok=False)
    clock.now += 5
    assert board.state("a") == "half_open" and board.state("b") == "open"
    assert board.unhealthy() == {"b"}


def test_moving_averages(clock: Clock) -> None:
    board = HealthBoard(latency=LiveLatency(smoothing=0.5), clock=clock)
    board.observe("m", 100.0)
    assert board.ttft_ms["m"] == 100.0
    board.observe("m", 200.0, output_tokens=50, stream_s=1.0)  # of two answers the lower counts: 100
    assert board.ttft_ms["m"] == 100.0 and board.tokens_per_s["m"] == 50.0
    board.observe("m", 300.0, output_tokens=100, stream_s=1.0)  # median of 100, 200, 300
    assert board.ttft_ms["m"] == 150.0 and board.tokens_per_s["m"] == 75.0


def test_one_slow_answer_among_fast_ones_does_not_make_a_slow_mark(clock: Clock) -> None:
    board = HealthBoard(latency=LiveLatency(smoothing=0.2, reprobe_s=10), clock=clock)
    for _ in range(5):
        board.observe("m", 4.0)
        clock.now += 0.2
    board.observe("m", 400.0)  # a lone spike: a provider's tail, or a pause in this process
    assert board.live_ttft("m") == pytest.approx(4.0)
    clock.now += 0.2
    board.observe("m", 4.0)
    clock.now += 0.2
    board.observe("m", 400.0)  # two slow of the last three: it is slow now
    assert board.live_ttft("m") is not None and board.live_ttft("m") > 30.0  # type: ignore[operator]


def test_answers_older_than_the_reprobe_interval_leave_the_median(clock: Clock) -> None:
    board = HealthBoard(latency=LiveLatency(smoothing=0.2, reprobe_s=10, half_life_s=5), clock=clock)
    board.observe("m", 4.0)
    board.observe("m", 4.0)
    clock.now += 10  # both fast answers are a re-probe interval old
    board.observe("m", 80.0)  # the re-probe's answer counts as it is, not outvoted by stale ones
    assert board.ttft_ms["m"] == pytest.approx(0.8 * 0.25 * 4.0 + (1 - 0.8 * 0.25) * 80.0)  # as without a median


def test_a_fresher_mark_taken_from_another_replica_supersedes_this_replica_s_older_answers(clock: Clock) -> None:
    """Two slow answers here, then another replica's fresher fast mark (RedisHealth's pull): a fast answer here
    keeps the mark fast. Counting the superseded slow answers in the median made it 47 ms, which this replica
    then pushed to every replica as the freshest mark (over a max_ttft_ms of 30: set aside everywhere)."""
    board = HealthBoard(latency=LiveLatency(smoothing=0.2, reprobe_s=10, half_life_s=5), clock=clock)
    board.observe("m", 200.0)
    clock.now += 0.2
    board.observe("m", 200.0)
    clock.now += 0.5
    board.adopt_mark("m", 3.0, None, 0.0)
    clock.now += 0.2
    board.observe("m", 3.0)
    assert board.live_ttft("m") == pytest.approx(3.0)
    clock.now += 0.2
    board.observe("m", 400.0)  # and the adopted mark still outvotes one spike, as an answer here would
    assert board.live_ttft("m") == pytest.approx(3.0)
    clock.now += 0.2
    board.observe("m", 400.0)  # two slow in a row after it: slow
    assert board.live_ttft("m") > 30.0  # type: ignore[operator]


def test_an_old_average_counts_for_less(clock: Clock) -> None:
    board = HealthBoard(latency=LiveLatency(smoothing=0.2, half_life_s=5), clock=clock)
    board.observe("m", 80.0)
    clock.now += 10  # two half-lives: the old mark keeps 0.8 * 0.25 of its weight
    board.observe("m", 2.0)
    assert board.ttft_ms["m"] == pytest.approx(0.2 * 80.0 + 0.8 * 2.0)


def test_a_stale_mark_is_reprobed_once_per_interval(clock: Clock) -> None:
    board = HealthBoard(latency=LiveLatency(reprobe_s=10), clock=clock)
    assert board.live_ttft("m") is None  # never measured
    board.observe("m", 80.0)
    clock.now += 9.9
    assert board.live_ttft("m") == 80.0  # fresh
    clock.now += 0.1
    assert board.live_ttft("m") is None  # stale: due a re-probe, reads as unmeasured
    board.sent("m")  # the re-probe goes out
    assert board.live_ttft("m") == 80.0  # everyone else still sees the slow mark
    clock.now += 9.9
    assert board.live_ttft("m") == 80.0
    clock.now += 0.1
    assert board.live_ttft("m") is None  # the probe never answered: another after an interval
    board.sent("m")
    board.observe("m", 3.0)  # it answered fast
    assert board.live_ttft("m") is not None and board.live_ttft("m") < 30.0


def test_sending_to_a_fresh_key_is_no_probe(clock: Clock) -> None:
    board = HealthBoard(latency=LiveLatency(reprobe_s=10), clock=clock)
    board.observe("m", 50.0)
    board.sent("m")
    clock.now += 10
    assert board.live_ttft("m") is None
