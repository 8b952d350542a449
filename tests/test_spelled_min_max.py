"""The hot path's min/max spelled as comparisons give what the builtins gave (references below: the code before)."""

from __future__ import annotations

import math
import random
from typing import Any

from switchman._catalog import ModelSpec
from switchman.gateway._context import RequestContext
from switchman.gateway._exchange import Exchange
from switchman.gateway._wire import Usage
from switchman.routing import RouteRequest
from switchman.routing._policy import RESERVE_OUTPUT_TOKENS, worst_case_cost
from switchman.state._health import HealthBoard

_NUMBERS: list[Any] = [0, 1, 7, -3, 0.0, -0.0, 2.5, -2.5, 1e-12, 1e300, math.inf, -math.inf, math.nan, 10**20]


def _same(a: Any, b: Any) -> bool:
    """Equal in value, type and sign (NaN equals NaN; -0.0 differs from 0.0)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b and math.copysign(1, a) == math.copysign(1, b)


def _reference_cost(spec: ModelSpec, i: float, o: float, c: float = 0.0) -> float:
    cached_price = spec.input_price if spec.cached_input_price is None else spec.cached_input_price
    return (max(i - c, 0.0) * spec.input_price + c * cached_price + o * spec.output_price) / 1e6


def test_model_cost() -> None:
    draw = random.Random(5)
    for _ in range(20_000):
        spec = ModelSpec("m", "p", draw.choice(_NUMBERS), draw.choice(_NUMBERS),
                         cached_input_price=draw.choice([None, *_NUMBERS]))
        args = [draw.choice(_NUMBERS) for _ in range(3)]
        assert _same(spec.cost(*args), _reference_cost(spec, *args)), (spec, args)


def test_worst_case_cost() -> None:
    draw = random.Random(6)
    for _ in range(20_000):
        spec = ModelSpec("m", "p", 1.5, 6.0, max_output_tokens=draw.choice([None, 0, 1, 100, 4096, 10**6]))
        request = RouteRequest(input_tokens=draw.choice([0, 5, 900]), max_tokens=draw.choice([None, 0, 1, 64, 10**7]))
        choices = draw.choice([-2, 0, 1, 3])
        bound = draw.choice([None, 0, 10_000])
        limits = [t for t in (request.max_tokens, spec.max_output_tokens) if t is not None]
        out = min(limits) if limits else RESERVE_OUTPUT_TOKENS
        expected = spec.cost(request.input_tokens if bound is None else bound, out * max(choices, 1))
        assert _same(worst_case_cost(spec, request, choices, input_tokens=bound), expected)


def test_baseline_cost_and_input_bound() -> None:
    draw = random.Random(7)
    specs = {f"m{i}": ModelSpec(f"m{i}", "p", draw.choice(_NUMBERS[:12]), draw.choice(_NUMBERS[:12])) for i in range(6)}
    for _ in range(5_000):
        exchange = Exchange(RequestContext(body_bytes=draw.choice([0, 3, 4, 4000, 10**6])), 0.0)
        exchange.request = RouteRequest(input_tokens=draw.choice([0, 1, 999, 10**5])) if draw.random() < 0.8 else None
        counted = exchange.request.input_tokens if exchange.request is not None else 0
        assert _same(exchange.input_bound, max(counted, exchange.context.body_bytes // 4))
        exchange.usage = Usage(draw.choice([0, 10, 10**6]), draw.choice([0, 3, 5000]), draw.choice([0, 5]))
        candidates = tuple(draw.sample(sorted(specs), draw.randint(1, 6)))
        u = exchange.usage
        expected = max(specs[m].cost(u.input_tokens, u.output_tokens, u.cached_input_tokens) for m in candidates)
        assert _same(exchange.baseline_cost(specs, candidates), expected), candidates


def test_health_median_of_three_and_fade() -> None:
    draw = random.Random(8)
    values = [0.0, 1.0, 5.0, 5.0, 12.5, 300.0, math.inf, math.nan]
    now = [100.0]
    for _ in range(3_000):
        now[0] = 100.0
        board, twin = HealthBoard(clock=lambda: now[0]), _ReferenceBoard(clock=lambda: now[0])
        for _ in range(6):
            now[0] += draw.choice([-1.0, 0.0, 0.5, 3.0, 100.0])
            ttft = draw.choice(values)
            board.observe("k", ttft)
            twin.observe("k", ttft)
            assert _same(board.ttft_ms["k"], twin.ttft_ms["k"])


class _ReferenceBoard(HealthBoard):
    """The board with `observe` and `_typical` as they were, with the builtins."""

    def observe(self, key: str, ttft_ms: float, output_tokens: int = 0, stream_s: float = 0.0) -> None:
        now = self._clock()
        previous_at = self._measured_at.get(key)
        weight = 1.0
        if previous_at is not None:
            fade = 0.5 ** (max(now - previous_at, 0.0) / self.latency.half_life_s)
            weight = 1.0 - (1.0 - self.latency.smoothing) * fade
        self._measured_at[key] = now
        typical = self._typical(key, ttft_ms, now)
        previous = self._ttft.get(key)
        self._ttft[key] = typical if previous is None else previous + weight * (typical - previous)

    def _typical(self, key: str, ttft_ms: float, now: float) -> float:
        from collections import deque

        recent = self._recent.setdefault(key, deque(maxlen=3))
        cutoff = now - self.latency.reprobe_s
        while recent and recent[0][0] <= cutoff:
            recent.popleft()
        recent.append((now, ttft_ms))
        if len(recent) == 1:
            return ttft_ms
        a, b = recent[-2][1], ttft_ms
        if len(recent) == 2:
            return min(a, b)
        c = recent[0][1]
        return max(min(a, b), min(max(a, b), c))


def test_health_median_of_every_triple() -> None:
    """`_typical` on every ordered pair and triple, NaN and -0.0 included. (The board test above cannot see a
    median's NaN or zero's sign: its smoothed mark stays NaN once a NaN is folded in, and -0.0 == 0.0.)"""
    values = [-0.0, 0.0, 1.0, 5.0, math.inf, -math.inf, math.nan]
    for x0 in values:
        for x1 in values:
            board = HealthBoard(clock=lambda: 0.0)
            board._typical("k", x0, 0.0)
            assert _same(board._typical("k", x1, 0.001), min(x0, x1)), (x0, x1)
            for x2 in values:
                board = HealthBoard(clock=lambda: 0.0)
                board._typical("k", x0, 0.0)
                board._typical("k", x1, 0.001)
                expected = max(min(x1, x2), min(max(x1, x2), x0))
                assert _same(board._typical("k", x2, 0.002), expected), (x0, x1, x2)
