"""Decision: the router's answer for one request, with the evidence behind it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .._slots import slot_init

__all__ = ["CandidateScore", "Decision"]


@slot_init
@dataclass(frozen=True, slots=True)
class CandidateScore:
    """What the strategy predicted for one candidate (None where it does not predict)."""

    model: str
    predicted_quality: float | None = None
    predicted_cost_usd: float | None = None
    predicted_output_tokens: float | None = None


@slot_init
@dataclass(frozen=True, slots=True)
class Decision:
    """The chosen model, why, and the ordered fallbacks to try if it fails.

    `cluster` is the prompt cluster an online strategy placed the request in: feedback on the
    request updates that cluster's counts (the ledger keeps it with the request).
    """

    model: str
    reason: str
    strategy: str
    route: str | None = None
    candidates: tuple[CandidateScore, ...] = ()
    fallbacks: tuple[str, ...] = ()
    excluded: tuple[tuple[str, str], ...] = ()
    cluster: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the body of POST /v1/route)."""
        data = asdict(self)
        data["excluded"] = [{"model": m, "why": why} for m, why in self.excluded]
        return data
