"""Prometheus metrics for the gateway, in a registry of their own (not the process-global one).

Series (label values are model and route names from the configuration, statuses, fallback reasons
and budget scopes; never a key, key id, key name, secret or prompt text)::

    switchman_requests_total{model,route,status}
    switchman_input_tokens_total{model}              switchman_output_tokens_total{model}
    switchman_cost_usd_total{model,route}
    switchman_request_latency_seconds{model}         histogram
    switchman_ttft_seconds{model}                    histogram, streamed requests
    switchman_fallbacks_total{from_model,to_model,reason}
    switchman_budget_rejections_total{scope}
    switchman_cache_requests_total{result}           hit or miss, cacheable requests only
    switchman_deployment_requests_total{deployment,status}   requests a deployment answered or failed last
    switchman_decision_seconds                       histogram, policy + strategy
    switchman_ledger_queued_rows, switchman_ledger_{written,dropped,discarded,spilled,replayed}_rows_total,
    switchman_ledger_write_errors_total              when a Ledger is attached

One process keeps its series in memory. Several worker processes (`switchman serve --workers N`)
use prometheus_client's multiprocess mode: `serve` sets PROMETHEUS_MULTIPROC_DIR to a fresh
directory before the workers start, each worker writes its values to memory-mapped files there, and
/metrics on any worker sums every worker's files, so successive scrapes agree whichever worker
answers. Collectors of one process's values (`Metrics.register`: the ledger writer's counters,
the Redis link's state) are copied into those files by each worker once a second and at each scrape. Replicas on several machines are separate targets: scrape each
and sum in Prometheus (`sum without (instance)`).
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ._ledger import Ledger
from ._metrics_mirror import CollectorMirror
from ._record import LedgerRecord

__all__ = ["Metrics"]

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DECISION_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
_NONE = "none"


class _LedgerCollector(Collector):
    """Reads the ledger writer's counters at scrape time."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def collect(self) -> Iterator[Metric]:
        stats = self._ledger.stats
        yield GaugeMetricFamily("switchman_ledger_queued_rows", "Ledger rows waiting in memory", value=stats.queued)
        for name, value, doc in (
            ("written_rows", stats.written, "Ledger rows written"),
            ("dropped_rows", stats.dropped, "Ledger rows dropped because the in-memory queue was full"),
            ("discarded_rows", stats.discarded, "Ledger rows the database refused as invalid"),
            ("spilled_rows", stats.spilled, "Ledger rows a close could not write, put in a spill file"),
            ("replayed_rows", stats.replayed, "Ledger rows written from an earlier close's spill file"),
            ("write_errors", stats.write_errors, "Failed ledger writes (retried)"),
        ):
            yield CounterMetricFamily(f"switchman_ledger_{name}", doc, value=value)


class _RequestSeries:
    """The series a finished request of one (model, route, status, cache, deployment) updates, as bound methods.

    Looked up once per combination rather than six label lookups per request. The series counted
    only when non-zero (tokens, cost, latency, TTFT) are looked up on first use, so they appear
    when they would with `labels()`, not before.
    """

    __slots__ = ("_labels", "_metrics", "cached", "cost", "input_tokens", "latency", "output_tokens", "request",
                 "served", "ttft")

    def __init__(self, metrics: Metrics, model: str | None, route: str | None, status: str, cache: str | None,
                 deployment: str | None) -> None:
        model, route = model or _NONE, route or _NONE
        child = metrics._child
        self._metrics = metrics
        self._labels = (model, route)
        self.request: Callable[[float], None] = _inc(child(metrics._requests, model, route, status))
        self.cached: Callable[[float], None] | None = _inc(child(metrics._cache, cache)) if cache is not None else None
        self.served: Callable[[float], None] | None = (
            _inc(child(metrics._deployments, deployment, status)) if deployment is not None else None)
        self.input_tokens: Callable[[float], None] | None = None
        self.output_tokens: Callable[[float], None] | None = None
        self.cost: Callable[[float], None] | None = None
        self.latency: Callable[[float], None] | None = None
        self.ttft: Callable[[float], None] | None = None

    def child(self, name: str) -> Callable[[float], None]:
        """The named series' update (inc or observe), looked up now and kept."""
        metrics, (model, route) = self._metrics, self._labels
        update: Callable[[float], None]
        if name == "input_tokens":
            update = _inc(metrics._child(metrics._input_tokens, model))
        elif name == "output_tokens":
            update = _inc(metrics._child(metrics._output_tokens, model))
        elif name == "cost":
            update = _inc(metrics._child(metrics._cost, model, route))
        elif name == "latency":
            update = _observe(metrics._child(metrics._latency, model))
        else:
            update = _observe(metrics._child(metrics._ttft, model))
        setattr(self, name, update)
        return update


def _inc(counter: Any) -> Callable[[float], None]:
    """A labelled counter's increment by a positive amount: its value's own `inc`, past `Counter.inc`'s checks
    (a child is always observable; amounts here are never negative) — two calls fewer per update."""
    update: Callable[[float], None] | None = getattr(getattr(counter, "_value", None), "inc", None)
    return update if callable(update) else counter.inc


class _HistogramUpdate:
    """A labelled histogram's `observe` without exemplars: the sum, then the first bucket whose bound is not
    below the amount (as `Histogram.observe` does, found by bisection instead of a loop)."""

    __slots__ = ("_bounds", "_buckets", "_last", "_sum")

    def __init__(self, histogram: Any) -> None:
        self._sum = histogram._sum.inc
        self._buckets = [bucket.inc for bucket in histogram._buckets]
        self._bounds = list(histogram._upper_bounds)
        self._last = len(self._bounds)

    def __call__(self, amount: float) -> None:
        self._sum(amount)
        i = bisect_left(self._bounds, amount)
        if i < self._last and amount <= self._bounds[i]:  # (NaN: in no bucket, as there)
            self._buckets[i](1)


def _observe(histogram: Any) -> Callable[[float], None]:
    """A labelled histogram's observe: `_HistogramUpdate` where its internals are the known ones, else its own."""
    if all(hasattr(histogram, name) for name in ("_sum", "_buckets", "_upper_bounds")):
        return _HistogramUpdate(histogram)
    update: Callable[[float], None] = histogram.observe
    return update


class Metrics:
    """The gateway's counters and histograms; `render()` gives the /metrics body and content type.

    `multiprocess_dir`: prometheus_client's PROMETHEUS_MULTIPROC_DIR, set in the environment before
    prometheus_client was imported; `render()` then sums every process's series found there.
    """

    def __init__(self, *, ledger: Ledger | None = None, multiprocess_dir: str | None = None) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        self._mirror = CollectorMirror(self.registry) if multiprocess_dir is not None else None
        r = self.registry
        self._requests = Counter(
            "switchman_requests", "Requests, by model, route and status", ["model", "route", "status"], registry=r
        )
        self._input_tokens = Counter("switchman_input_tokens", "Prompt tokens, by model", ["model"], registry=r)
        self._output_tokens = Counter("switchman_output_tokens", "Completion tokens, by model", ["model"], registry=r)
        self._cost = Counter("switchman_cost_usd", "Cost in USD, by model and route", ["model", "route"], registry=r)
        self._latency = Histogram(
            "switchman_request_latency_seconds",
            "Request latency, by model",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._ttft = Histogram(
            "switchman_ttft_seconds", "Time to first token, by model", ["model"], buckets=TTFT_BUCKETS, registry=r
        )
        self._fallbacks = Counter(
            "switchman_fallbacks", "Moves to a fallback model", ["from_model", "to_model", "reason"], registry=r
        )
        self._budget_rejections = Counter(
            "switchman_budget_rejections", "Requests refused by a budget, by scope", ["scope"], registry=r
        )
        self._cache = Counter("switchman_cache_requests", "Response cache lookups, by result (hit or miss)",
                              ["result"], registry=r)
        self._deployments = Counter("switchman_deployment_requests", "Requests, by the deployment that served them",
                                    ["deployment", "status"], registry=r)
        self._decision = Histogram(
            "switchman_decision_seconds", "Time to choose a model", buckets=DECISION_BUCKETS, registry=r
        )
        #: Labelled series already looked up, by (id of their metric, label values).
        self._children: dict[tuple[object, ...], Any] = {}
        #: What `observe_request` updates for each (model, route, status, cache, deployment) of a record.
        self._series: dict[tuple[str | None, ...], _RequestSeries] = {}
        if ledger is not None:
            self.register(_LedgerCollector(ledger), gauge_mode="livesum")

    def register(self, collector: Collector, *, gauge_mode: str = "liveall") -> None:
        """Add a collector of this process's own values (in multiprocess mode, mirrored into the shared files;
        its gauges combined across workers by `gauge_mode`: livesum, liveall (a pid label), livemin, livemax)."""
        if self._mirror is None:
            self.registry.register(collector)
        else:
            self._mirror.add(collector, gauge_mode=gauge_mode)

    def observe_request(self, rec: LedgerRecord) -> None:
        """Count one finished request from its ledger record (its key id is not used)."""
        key = (rec.model, rec.route, rec.status, rec.cache, rec.deployment)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _RequestSeries(self, *key)
        series.request(1)
        if series.cached is not None:
            series.cached(1)
        if series.served is not None:
            series.served(1)
        if rec.input_tokens > 0:
            (series.input_tokens or series.child("input_tokens"))(rec.input_tokens)
        if rec.output_tokens > 0:
            (series.output_tokens or series.child("output_tokens"))(rec.output_tokens)
        if rec.cost_usd > 0:
            (series.cost or series.child("cost"))(rec.cost_usd)
        if rec.model is not None:
            (series.latency or series.child("latency"))(rec.latency_ms / 1000.0)
            if rec.ttft_ms is not None:
                (series.ttft or series.child("ttft"))(rec.ttft_ms / 1000.0)

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once (`labels()` takes a lock and checks its values on every call).

        A series appears on first use, as with `labels()`.
        """
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_decision(self, seconds: float) -> None:
        """Time spent in policy + strategy for one request."""
        self._decision.observe(seconds)

    def observe_fallback(self, from_model: str, to_model: str, reason: str) -> None:
        """One move from a failing model to the next candidate."""
        self._fallbacks.labels(from_model, to_model, reason).inc()

    def observe_budget_rejection(self, scope: str) -> None:
        """One request refused by a budget of this scope (agent, key or route)."""
        self._budget_rejections.labels(scope).inc()

    def close(self) -> None:
        """In multiprocess mode: stop mirroring and drop this process's live gauges (its counters stay summed)."""
        if self._mirror is None or self.multiprocess_dir is None:
            return
        from prometheus_client.multiprocess import mark_process_dead

        self._mirror.sync()
        self._mirror.close()
        mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type (every worker's, in multiprocess mode)."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client.multiprocess import MultiProcessCollector

        if self._mirror is not None:
            self._mirror.sync()
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged), CONTENT_TYPE_LATEST
