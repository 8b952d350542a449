"""Outcome tables from one's own traffic: logged requests with feedback become training rows.

Each request is one row with a single filled column, the model that served it: quality is the
feedback score, tokens and cost are what the ledger recorded. Every other model's cell is NaN, so
the table is sparse by construction; the kNN predictor averages only neighbours that have an
outcome for a model, and the factorisation predictor (`--algorithm ensemble` or `mf`) shares
structure across models, so a model with few labels still gets sane predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from .._exceptions import ConfigError, DatasetError
from ..ledger import Ledger, LedgerRecord, display_url, parse_since, unreadable
from ._datasets import OutcomeTable

__all__ = ["NO_PROMPTS_HINT", "ledger_outcomes", "ledger_records", "outcomes_from_ledger"]

_Scores = TypeVar("_Scores")

NO_PROMPTS_HINT = (
    "the gateway keeps prompts only when the configuration sets `server: {store_prompts: true}` "
    "(off by default, for privacy); turn it on, send traffic, and post feedback to /v1/feedback"
)


def outcomes_from_ledger(
    records: Iterable[LedgerRecord], scores: Mapping[tuple[str, str | None], float], *,
    source: str = "ledger", min_per_model: int = 2,
) -> OutcomeTable:
    """The outcome table of answered requests that have a stored prompt and a feedback score.

    `scores`: by (request id, key id), as `Ledger.feedback_by_key` gives them, so that two keys' requests with the
    same id each get their own key's score (and a row each). A score keyed by request id alone is refused (a
    TypeError): it cannot say which key's request it scores.
    Models with fewer than `min_per_model` labelled requests are left out (their prices cannot be
    learned from so few rows); an error says what was missing when nothing is left.
    """
    unkeyed = next((name for name in scores if not isinstance(name, tuple)), None)
    if unkeyed is not None:
        raise TypeError(f"scores are keyed by (request id, key id) as Ledger.feedback_by_key gives them, "
                         f"not by request id alone ({unkeyed!r})")
    rows: list[tuple[LedgerRecord, float]] = []
    seen: set[tuple[str, str | None]] = set()
    without_prompt = without_feedback = 0
    for rec in records:
        name = (rec.request_id, rec.key_id)
        if rec.status != "ok" or rec.model is None or name in seen:
            continue
        score = scores.get(name)
        if score is None:
            without_feedback += 1
            continue
        if not rec.prompt:
            without_prompt += 1
            continue
        seen.add(name)
        rows.append((rec, float(score)))
    counts: dict[str, int] = {}
    for rec, _ in rows:
        counts[rec.model or ""] = counts.get(rec.model or "", 0) + 1
    models = tuple(sorted(m for m, n in counts.items() if n >= min_per_model))
    rows = [(rec, score) for rec, score in rows if rec.model in models]
    if not rows:
        detail = f"{without_feedback} answered requests without feedback, {without_prompt} with feedback but no prompt"
        hint = f"; {NO_PROMPTS_HINT}" if without_prompt or not counts else ""
        raise DatasetError(f"{source}: no logged request has both a stored prompt and feedback ({detail}){hint}")
    column = {m: j for j, m in enumerate(models)}
    shape = (len(rows), len(models))
    quality, input_tokens, output_tokens, cost = (np.full(shape, np.nan) for _ in range(4))
    for i, (rec, score) in enumerate(rows):
        j = column[rec.model or ""]
        quality[i, j] = min(max(score, 0.0), 1.0)
        input_tokens[i, j] = rec.input_tokens
        output_tokens[i, j] = rec.output_tokens
        # A cascade's row also paid for the answers it rejected on cheaper models: that total is not
        # this model's price for these tokens, so leave the cell to be priced from the tokens.
        cascaded = rec.strategy == "cascade" and len(rec.fallback_chain) > 1
        cost[i, j] = np.nan if cascaded else rec.cost_usd
    return OutcomeTable(
        prompt_ids=_prompt_ids([rec for rec, _ in rows]), prompts=tuple(rec.prompt or "" for rec, _ in rows),
        tasks=(None,) * len(rows), splits=("train",) * len(rows), models=models, quality=quality,
        input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost, source=source,
    )


def _prompt_ids(rows: list[LedgerRecord]) -> tuple[str, ...]:
    """The request ids, with the key id added to one that two keys' rows share (a table's prompt ids are unique)."""
    counts: dict[str, int] = {}
    for rec in rows:
        counts[rec.request_id] = counts.get(rec.request_id, 0) + 1
    return tuple(rec.request_id if counts[rec.request_id] == 1 else f"{rec.request_id}@{rec.key_id or '-'}"
                 for rec in rows)


def ledger_records(url: str | None, since: str | None) -> tuple[list[LedgerRecord], str]:
    """Records from `since` on (e.g. 7d) and the URL to show (password masked)."""
    records, _, shown = _ledger_rows(url, since, lambda ledger: None)
    return records, shown


def _ledger_rows(url: str | None, since: str | None, read_scores: Callable[[Ledger], _Scores],
                 ) -> tuple[list[LedgerRecord], _Scores, str]:
    """The records from `since` on, what `read_scores` reads in the same session, and the URL to show."""
    try:
        start = parse_since(since) if since else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    try:
        ledger = Ledger.from_url(url)
    except ValueError as exc:  # an unparseable or unsupported URL
        raise ConfigError(str(exc)) from None
    try:
        return ledger.records(since=start), read_scores(ledger), display_url(ledger.url)
    except SQLAlchemyError as exc:  # unreachable, not a database, ...: one line naming it (password masked)
        raise ConfigError(unreadable(ledger.url, exc)) from None
    finally:
        ledger.close_sync()


def ledger_outcomes(url: str | None, since: str | None) -> OutcomeTable:
    """The outcome table of logged requests with a stored prompt and feedback (each key's score for its request)."""
    records, scores, shown = _ledger_rows(url, since, lambda ledger: ledger.feedback_by_key())
    return outcomes_from_ledger(records, scores, source=shown)
