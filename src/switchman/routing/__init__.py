"""The pure decision core: requests, policy filters, strategies, decisions. No I/O."""

from ._decision import CandidateScore, Decision
from ._policy import PolicyResult, estimated_cost, filter_candidates, prefer_live
from ._request import RouteRequest, message_text
from ._select import SelectionRule, select
from ._sessions import SessionPolicy, SessionState, switch_cost_usd
from ._strategies import (
    CheapestStrategy,
    DecisionContext,
    FixedStrategy,
    RandomStrategy,
    RulesStrategy,
    Strategy,
    expected_ttft_ms,
    rule_matches,
)
from ._tasks import TASKS, detect_task, resolve_task

__all__ = [
    "CandidateScore",
    "CheapestStrategy",
    "Decision",
    "DecisionContext",
    "FixedStrategy",
    "PolicyResult",
    "RandomStrategy",
    "RouteRequest",
    "RulesStrategy",
    "SelectionRule",
    "SessionPolicy",
    "SessionState",
    "Strategy",
    "TASKS",
    "detect_task",
    "estimated_cost",
    "expected_ttft_ms",
    "filter_candidates",
    "message_text",
    "prefer_live",
    "resolve_task",
    "rule_matches",
    "select",
    "switch_cost_usd",
]
