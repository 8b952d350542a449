"""The values the ledger stores and reports: one row per request, one row per spend group."""

from __future__ import annotations

import time as _time
import uuid
from dataclasses import dataclass, field
from typing import Literal

from .._slots import slot_init

__all__ = [
    "RECORD_STATUSES",
    "CandidateEstimate",
    "LedgerRecord",
    "LedgerStats",
    "RecordStatus",
    "Saving",
    "SpendBy",
    "SpendRow",
]

RecordStatus = Literal["ok", "error", "stream_error", "client_disconnected", "rejected_budget", "bad_request",
                       "rejected_rate_limit"]
RECORD_STATUSES: tuple[RecordStatus, ...] = (
    "ok",
    "error",
    "stream_error",
    "client_disconnected",
    "rejected_budget",
    "bad_request",
    "rejected_rate_limit",
)

#: (model, predicted quality, predicted cost in USD) of one candidate in a decision; None where not predicted.
CandidateEstimate = tuple[str, float | None, float | None]

#: What `Ledger.query_spend` can group by.
SpendBy = Literal["agent", "model", "key", "route"]


def _new_request_id() -> str:
    return uuid.uuid4().hex


@slot_init
@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerRecord:
    """One request as the ledger keeps it; every field has a default so partial records are easy.

    `cost_usd` is what the request cost on the model that answered; `baseline_cost_usd` is what the
    same tokens would have cost on the route's most expensive candidate (the gateway fills it), so
    `switchman spend` can report the saving. `tokens_estimated` marks token counts that the
    upstream did not report and were counted locally. `prompt` (the routed prompt: the last user
    message) is kept only when `server.store_prompts` is on, because retraining from the ledger needs
    it and privacy says not to keep it by default. `shadow_*` is what a route's shadow router would
    have chosen, with its predicted quality and cost, for comparison before switching it on.
    `cluster` is the prompt cluster an online route decided in (where its feedback counts). `api` is
    the API the client spoke (chat.completions, messages, responses, embeddings). `deployment` is the
    id of the deployment that answered (the model's name when it has one deployment, else
    `<model>@<name>`). `cache` is "hit" (answered from the response cache: `cost_usd` is 0, the
    tokens are the cached answer's) or "miss" when the request was cacheable, else None.
    `scores` is the decision's evidence, one (model, predicted quality, predicted cost) per candidate
    the strategy scored, and `excluded` the (model, why) pairs policy set aside; `task` is the task
    type the request was routed as; `escalated` marks a session turn moved to a better model.
    """

    time: float = field(default_factory=_time.time)
    request_id: str = field(default_factory=_new_request_id)
    agent: str | None = None
    session: str | None = None
    key_id: str | None = None
    route: str | None = None
    model: str | None = None
    reason: str | None = None
    strategy: str | None = None
    candidates: tuple[str, ...] = ()
    input_tokens: int = 0
    output_tokens: int = 0
    tokens_estimated: bool = False
    cost_usd: float = 0.0
    baseline_cost_usd: float | None = None
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    status: str = "ok"
    error: str | None = None
    fallback_chain: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    prompt: str | None = None
    shadow_model: str | None = None
    shadow_quality: float | None = None
    shadow_cost_usd: float | None = None
    cluster: int | None = None
    api: str | None = None
    deployment: str | None = None
    cache: str | None = None
    task: str | None = None
    scores: tuple[CandidateEstimate, ...] = ()
    excluded: tuple[tuple[str, str], ...] = ()
    escalated: bool = False


class Saving:
    """What routing saved against each request's baseline model (its route's dearest, or configured): the same two
    numbers for a spend report's row, a window's totals and a timeline's step."""

    __slots__ = ()
    cost_usd: float
    baseline_cost_usd: float

    @property
    def saving_usd(self) -> float:
        """The cost the baseline would have had, less what routing paid."""
        return self.baseline_cost_usd - self.cost_usd

    @property
    def saving_pct(self) -> float | None:
        """The saving as a percentage of the baseline cost; None when there is no baseline cost."""
        if self.baseline_cost_usd <= 0:
            return None
        return 100.0 * self.saving_usd / self.baseline_cost_usd


@dataclass(frozen=True, slots=True)
class SpendRow(Saving):
    """Spend of one group (an agent, model, key or route) over a time window."""

    group: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    baseline_cost_usd: float


@dataclass(frozen=True, slots=True)
class LedgerStats:
    """Counters of the ledger's writer, for metrics and tests.

    `dropped` counts records refused because the in-memory queue was full (or the ledger closed);
    `discarded` counts records the database refused as invalid (written one by one, logged); `spilled` the
    rows a close could not write and put in a spill file (written at the next start); `replayed` the spilled
    rows this ledger wrote at its start (counted in `written` too).
    """

    queued: int
    written: int
    dropped: int
    discarded: int
    write_errors: int
    spilled: int = 0
    replayed: int = 0
