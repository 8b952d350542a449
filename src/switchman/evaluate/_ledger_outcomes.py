"""Outcome tables from one's own traffic: logged requests with feedback become training rows.

Each request is one row with a single filled column, the model that served it: quality is the
feedback score, tokens and cost are what the ledger recorded. Every other model's cell is NaN, so
the table is sparse by construction; the kNN predictor averages only neighbours that have an
outcome for a model, and the factorisation predictor (`--algorithm ensemble` or `mf`) shares
structure across models, so a model with few labels still gets sane predictions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from .._exceptions import ConfigError, DatasetError
from ..ledger import Ledger, LedgerRecord, display_url, parse_since, require_existing, resolve_url, unreadable
from ._datasets import OutcomeTable

__all__ = ["NO_PROMPTS_HINT", "ledger_outcomes", "ledger_records", "outcomes_from_ledger"]

NO_PROMPTS_HINT = (
    "the gateway keeps prompts only when the configuration sets `server: {store_prompts: true}` "
    "(off by default, for privacy); turn it on, send traffic, and post feedback to /v1/feedback"
)


def outcomes_from_ledger(
    records: Iterable[LedgerRecord], scores: Mapping[str, float] | Mapping[tuple[str, str | None], float], *,
    source: str = "ledger", min_per_model: int = 2,
) -> OutcomeTable:
    """The outcome table of answered requests that have a stored prompt and a feedback score.

    `scores`: by request id (as `Ledger.feedback_scores` gives them), or by (request id, key id) as
    `Ledger.feedback_by_key` gives them, so that two keys' requests with the same id each get their own key's score
    (and a row each). A score by request id alone scores every key's request with that id.
    Models with fewer than `min_per_model` labelled requests are left out (their prices cannot be
    learned from so few rows); an error says what was missing when nothing is left.
    """
    logged = list(records)
    by_key = _by_key(scores, logged)
    rows: list[tuple[LedgerRecord, float]] = []
    seen: set[tuple[str, str | None]] = set()
    without_prompt = without_feedback = 0
    for rec in logged:
        name = (rec.request_id, rec.key_id)
        if rec.status != "ok" or rec.model is None or name in seen:
            continue
        score = by_key.get(name)
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
    if not rows and counts:  # labelled requests there are, too few of them per model
        have = ", ".join(f"{m or '?'} {n}" for m, n in sorted(counts.items()))
        raise DatasetError(f"{source}: too few labelled requests to learn from: each model needs at least "
                           f"{min_per_model} labelled requests (a stored prompt and feedback); have: {have}. "
                           "Post feedback to /v1/feedback on more answered requests"
                           + (f" ({without_prompt} with feedback had no stored prompt: {NO_PROMPTS_HINT})"
                              if without_prompt else ""))
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


def _by_key(scores: Mapping[str, float] | Mapping[tuple[str, str | None], float],
            records: list[LedgerRecord]) -> Mapping[tuple[str, str | None], float]:
    """`scores` keyed by (request id, key id): a score by request id alone goes to each key's request with that id."""
    keyed = {name: score for name, score in scores.items() if isinstance(name, tuple)}
    by_id = {name: score for name, score in scores.items() if not isinstance(name, tuple)}
    for rec in records:
        if rec.request_id in by_id:  # a keyed score for the same request, if given, wins
            keyed.setdefault((rec.request_id, rec.key_id), by_id[rec.request_id])
    return keyed


def _prompt_ids(rows: list[LedgerRecord]) -> tuple[str, ...]:
    """The request ids, with the key id added to one that two keys' rows share (a table's prompt ids are unique)."""
    counts: dict[str, int] = {}
    for rec in rows:
        counts[rec.request_id] = counts.get(rec.request_id, 0) + 1
    return tuple(rec.request_id if counts[rec.request_id] == 1 else f"{rec.request_id}@{rec.key_id or '-'}"
                 for rec in rows)


def ledger_records(url: str | None, since: str | None, *, feedback: bool = True,
                   ) -> tuple[list[LedgerRecord], dict[str, float], str]:
    """Records from `since` on (e.g. 7d), the latest feedback score per request id, and the URL to show.

    `feedback=False`: the scores are not read (left empty), for a caller that does not use them (a replay).
    A SQLite file that does not exist is a ConfigError (reading it would create it, empty), as is an unreadable ledger.
    """
    with _reading(url, since) as (ledger, start):
        return ledger.records(since=start), ledger.feedback_scores() if feedback else {}, display_url(ledger.url)


def ledger_outcomes(url: str | None, since: str | None) -> OutcomeTable:
    """The outcome table of logged requests with a stored prompt and feedback (each key's score for its request);
    a SQLite file that does not exist is a ConfigError, as in `ledger_records`."""
    with _reading(url, since) as (ledger, start):
        records, scores, shown = ledger.records(since=start), ledger.feedback_by_key(), display_url(ledger.url)
    return outcomes_from_ledger(records, scores, source=shown)


@contextmanager
def _reading(url: str | None, since: str | None) -> Iterator[tuple[Ledger, datetime | None]]:
    """The ledger at `url` (closed after) and the time `since` names; a bad URL or `since`, or a ledger that cannot
    be read, is a ConfigError in one line naming it (password masked)."""
    try:
        start = parse_since(since) if since else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    try:
        require_existing(resolve_url(url))  # reading a missing SQLite file would create it, empty
        ledger = Ledger.from_url(url)
    except ValueError as exc:  # an unparseable or unsupported URL, a SQLite file that does not exist
        raise ConfigError(str(exc)) from None
    try:
        yield ledger, start
    except SQLAlchemyError as exc:  # unreachable, not a database, ...
        raise ConfigError(unreadable(ledger.url, exc)) from None
    finally:
        ledger.close_sync()
