"""The routing types the hot path builds positionally, pinned field for field.

`RouteRequest`, `Decision`, `CandidateScore` and `DecisionContext` are built with positional arguments on the
decision path (cheaper than keywords), and `Decider.decide` returns the strategy's Decision as is when its
rebuild would copy every field. Adding, removing or reordering a field silently breaks both: this test fails
first, so whoever changes a field also updates the positional constructors (grep the class name) and the
rebuild at the end of `Decider.decide`.
"""

from __future__ import annotations

from dataclasses import fields

from switchman.routing._decision import CandidateScore, Decision
from switchman.routing._request import RouteRequest
from switchman.routing._strategies import DecisionContext


def _names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def test_route_request_fields_are_in_the_order_its_positional_builders_assume() -> None:
    assert _names(RouteRequest) == [
        "messages", "prompt", "input_tokens", "max_tokens", "has_tools", "has_images", "has_code",
        "response_format", "agent", "session", "tags", "task",
    ]


def test_decision_fields_are_the_ones_the_deciders_rebuild_copies() -> None:
    assert _names(Decision) == [
        "model", "reason", "strategy", "route", "candidates", "fallbacks", "excluded", "cluster",
    ]


def test_candidate_score_and_decision_context_fields_are_in_positional_order() -> None:
    assert _names(CandidateScore) == ["model", "predicted_quality", "predicted_cost_usd", "predicted_output_tokens"]
    assert _names(DecisionContext) == ["route", "random_value", "ttft_ms"]
