"""Header values are ASCII a client can read: symbols spelled out, never a "?"."""

from __future__ import annotations

import pytest

from switchman.gateway._endpoints import header_value, route_headers


@pytest.mark.parametrize(("reason", "sent"), [
    ("predicted quality ≥ 0.93 of the best, cost ≤ $0.0004", "predicted quality >= 0.93 of the best, cost <= $0.0004"),
    ("budget downgrade from gpt-4o → gpt-4o-mini", "budget downgrade from gpt-4o -> gpt-4o-mini"),
    ("knob λ=0.3 × 2 — about… “fine”", 'knob lambda=0.3 x 2 - about... "fine"'),
    ("model café-ñ", "model cafe-n"),
    ("agent 名前", "agent \\u540d\\u524d"),
    ("two\nlines\r\n", "two lines  "),
])
def test_header_values_spell_symbols_in_ascii(reason: str, sent: str) -> None:
    assert header_value(reason) == sent
    assert route_headers("m", reason)["x-switchman-route-reason"].isascii()


def test_header_values_are_bounded() -> None:
    assert len(header_value("≤" * 1000)) == 300
