"""The metric fast paths lean on prometheus_client internals (`_value`, `_sum`, `_buckets`, `_upper_bounds`):
pinned here, so a release that renames them fails a test instead of silently taking the slower fallback, and
the fast path writes the same series as the library's own `inc` and `observe`."""

from __future__ import annotations

import math
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from switchman.ledger._prometheus import _HistogramUpdate, _inc, _observe

BOUNDS = (0.005, 0.01, 0.1, 1.0, 10.0)
AMOUNTS = [0.0, -1.0, 0.005, 0.0050001, 0.0049999, 0.01, 0.05, 0.1, 1.0, 9.99, 10.0, 10.0001, 1e9,
           math.inf, math.nan, 1e-300]


def _histogram() -> tuple[CollectorRegistry, Any]:
    registry = CollectorRegistry()
    return registry, Histogram("h", "a histogram", ["model"], buckets=BOUNDS, registry=registry).labels("m")


def _exposed(registry: CollectorRegistry) -> list[bytes]:
    """The exposition's lines, less the `_created` timestamps (two metrics made apart differ there)."""
    return [line for line in generate_latest(registry).splitlines() if b"_created" not in line]


def _counter() -> tuple[CollectorRegistry, Any]:
    registry = CollectorRegistry()
    return registry, Counter("c", "a counter", ["model"], registry=registry).labels("m")


def test_the_installed_prometheus_client_takes_the_fast_paths() -> None:
    _, histogram = _histogram()
    _, counter = _counter()
    assert isinstance(_observe(histogram), _HistogramUpdate)
    assert _inc(counter) == counter._value.inc  # the value's own inc, not Counter.inc


@pytest.mark.parametrize("amount", AMOUNTS)
def test_the_histogram_fast_path_writes_what_observe_writes(amount: float) -> None:
    fast_registry, fast = _histogram()
    slow_registry, slow = _histogram()
    update = _observe(fast)
    for value in (amount, 0.05, amount):
        update(value)
        slow.observe(value)
    assert _exposed(fast_registry) == _exposed(slow_registry)


def test_the_counter_fast_path_writes_what_inc_writes() -> None:
    fast_registry, fast = _counter()
    slow_registry, slow = _counter()
    update = _inc(fast)
    for amount in (1.0, 0.25, 1e-9, 3.0):
        update(amount)
        slow.inc(amount)
    assert _exposed(fast_registry) == _exposed(slow_registry)


class _Opaque:
    """A metric whose internals are not the known ones: only the public calls."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []

    def inc(self, amount: float = 1.0) -> None:
        self.seen.append(("inc", amount))

    def observe(self, amount: float) -> None:
        self.seen.append(("observe", amount))


def test_without_the_known_internals_the_public_calls_are_used() -> None:
    metric = _Opaque()
    _inc(metric)(2.0)
    _observe(metric)(0.5)
    assert metric.seen == [("inc", 2.0), ("observe", 0.5)]


def test_the_collector_mirror_thread_outlives_a_failed_copy() -> None:
    """Before, one exception in a copy (a collector's bug, a full disk under the multiprocess files) ended the
    mirror's thread for good: the worker's ledger and Redis metrics froze at their last values."""
    import time
    from collections.abc import Iterator

    from prometheus_client.core import CounterMetricFamily
    from prometheus_client.registry import Collector

    from switchman.ledger._metrics_mirror import CollectorMirror

    class Flaky(Collector):
        def __init__(self) -> None:
            self.calls = 0

        def collect(self) -> Iterator[CounterMetricFamily]:
            self.calls += 1
            if self.calls == 2:  # the first copy from the thread
                raise OSError("no space left on device")
            yield CounterMetricFamily("flaky_rows", "rows", value=float(self.calls))

    registry = CollectorRegistry()
    mirror = CollectorMirror(registry, every_s=0.01)
    flaky = Flaky()
    mirror.add(flaky)
    try:
        deadline = time.monotonic() + 5.0
        while flaky.calls < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert flaky.calls >= 4
        assert (registry.get_sample_value("flaky_rows_total") or 0.0) >= 3.0
    finally:
        mirror.close()
