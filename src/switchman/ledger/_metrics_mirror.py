"""Copies per-process collectors into prometheus_client's multiprocess files, so every worker's values add up.

A custom collector (the ledger writer's counters, the Redis link's state) is read only in the
process being scraped. In multiprocess mode (`serve --workers N`) a `CollectorMirror` reads each
one from a daemon thread once a second (and before each scrape) and writes its samples into real
metrics: counters as increments, so /metrics sums them over every worker; gauges in the
multiprocess mode the collector was registered with (`livesum`, `liveall` with a pid label, ...).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.registry import Collector

from .._streaks import FailureStreak

__all__ = ["CollectorMirror"]

logger = logging.getLogger("switchman.metrics")

_Labels = tuple[tuple[str, str], ...]


@dataclass
class _Source:
    collector: Collector
    gauge_mode: str
    seen: dict[tuple[str, _Labels], float] = field(default_factory=dict)


class CollectorMirror:
    """Collectors read every `every_s` into metrics of `registry` (whose values live in the multiprocess files)."""

    def __init__(self, registry: CollectorRegistry, *, every_s: float = 1.0) -> None:
        self._registry = registry
        self._sources: list[_Source] = []
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._every_s = every_s
        self._thread: threading.Thread | None = None

    def add(self, collector: Collector, *, gauge_mode: str = "liveall") -> None:
        """Mirror `collector`; its gauges combine across workers by `gauge_mode` (prometheus_client's names)."""
        with self._lock:
            self._sources.append(_Source(collector, gauge_mode))
        self._sync_source(self._sources[-1])
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="switchman-metrics-mirror", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        streak = FailureStreak(logger, "metrics mirror: copying the collectors failed; trying again every %g s")
        while not self._stop.wait(self._every_s):
            try:  # one failed copy (a collector's bug, a full disk under the files) must not end the mirror
                self.sync()
            except Exception:  # noqa: BLE001 (logged by the streak)
                streak.failed(self._every_s)
            else:
                streak.succeeded()

    def sync(self) -> None:
        """Copy what every collector reports now."""
        for source in list(self._sources):
            self._sync_source(source)

    def _sync_source(self, source: _Source) -> None:
        with self._lock:
            for family in source.collector.collect():
                for sample in family.samples:
                    labels = tuple(sorted(sample.labels.items()))
                    if family.type == "counter" and sample.name.endswith("_total"):
                        before = source.seen.get((sample.name, labels), 0.0)
                        source.seen[(sample.name, labels)] = sample.value
                        counter = self._counter(family.name, family.documentation, labels)
                        (counter.labels(**dict(labels)) if labels else counter).inc(max(sample.value - before, 0.0))
                    elif family.type == "gauge":
                        gauge = self._gauge(family.name, family.documentation, labels, source.gauge_mode)
                        (gauge.labels(**dict(labels)) if labels else gauge).set(sample.value)

    def _counter(self, name: str, doc: str, labels: _Labels) -> Counter:
        if name not in self._counters:
            self._counters[name] = Counter(name, doc, [k for k, _ in labels], registry=self._registry)
        return self._counters[name]

    def _gauge(self, name: str, doc: str, labels: _Labels, mode: str) -> Gauge:
        if name not in self._gauges:
            self._gauges[name] = Gauge(name, doc, [k for k, _ in labels], multiprocess_mode=mode,  # type: ignore[arg-type]
                                       registry=self._registry)
        return self._gauges[name]

    def close(self) -> None:
        """Stop the thread (the values stay in the files)."""
        self._stop.set()

