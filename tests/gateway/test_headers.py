"""Header values are ASCII a client can read: symbols spelled out, never a "?"."""

from __future__ import annotations

import pytest
from starlette.responses import Response

from switchman.gateway._rate_headers import rate_headers
from switchman.gateway._dispatcher import Completion
from switchman.gateway._endpoints import completion_response, header_value, route_headers
from switchman.routing import Decision
from switchman.state import Admission


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


def _starlette_answer(completion: Completion) -> Response:
    """The answer as the endpoint built it with Starlette's own header encoding (the contract)."""
    headers = route_headers(completion.model, completion.decision.reason, deployment=completion.deployment,
                            cache=completion.cache) | rate_headers(completion.limits)
    headers["x-switchman-cost-usd"] = f"{completion.cost_usd:.8f}"
    return Response(completion.content, media_type="application/json", headers=headers)


@pytest.mark.parametrize("deployment", [None, "small@east"])
@pytest.mark.parametrize("cache", [None, "miss"])
@pytest.mark.parametrize("limits", [None, Admission(True, limit_requests=10, remaining_requests=9),
                                    Admission(True, limit_requests=10, remaining_requests=3, limit_tokens=1000,
                                              remaining_tokens=12, reset_tokens_s=1.5)])
def test_a_completions_answer_has_the_headers_starlette_would_send(
    deployment: str | None, cache: str | None, limits: Admission | None,
) -> None:
    decision = Decision(model="small", reason="cheapest capable — cost ≤ $0.0004", strategy="cheapest", route="r")
    completion = Completion(b'{"choices":[]}', "small", decision, 0.000123, "req-1", deployment=deployment,
                            cache=cache, limits=limits)
    for _ in range(2):  # the second from the kept encoding
        answer, expected = completion_response(completion), _starlette_answer(completion)
        assert answer.raw_headers == expected.raw_headers
        assert (answer.status_code, answer.body, answer.media_type, answer.background) == (
            expected.status_code, expected.body, expected.media_type, expected.background)
