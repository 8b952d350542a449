"""Model profiles: every model a learned route may use, on one ability scale, with where its ability came from.

The ability of a configured model, first source that has one:

1. **outcome data** — the route's router was trained on it (its fitted ability; its own predictions);
2. **config score** — `models: {name: {score: 1250}}`: the user's explicit number beats a lookup;
3. **public score** — the score table (LMArena, style-controlled) via `score_name`, the model's
   name, or its upstream name, matched by `ScoreTable.find`'s documented normaliser and aliases;
4. none — the model cannot be learn-routed, and `require_placed` says so at startup, naming the
   model and the three ways to fix it. A learned route never silently treats it as "cheapest".
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .._exceptions import ConfigError
from ._artifact import TrainedRouter
from ._scores import ScoreTable, normalise_model_name

__all__ = ["AbilitySource", "ModelProfile", "model_profile", "profiles_for", "require_placed"]

AbilitySource = Literal["outcome data", "config score", "public score", "none"]


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """One model's ability (on the public-score scale) and its provenance."""

    name: str
    ability: float | None
    source: AbilitySource
    detail: str = ""
    column: int | None = None  # the router's column, when the ability comes from its outcome data

    @property
    def placed(self) -> bool:
        return self.column is not None or self.ability is not None

    @property
    def key(self) -> int | float:
        """What `TrainedRouter.predict_columns` takes for this model."""
        if self.column is not None:
            return self.column
        assert self.ability is not None, f"{self.name} has no ability"
        return self.ability


def model_profile(
    name: str,
    *,
    router: TrainedRouter | None,
    table: ScoreTable,
    config_score: float | None = None,
    score_name: str | None = None,
    upstream: str | None = None,
) -> ModelProfile:
    """The profile of the configured model `name` (the module docstring's order)."""
    if router is not None and name in router.model_names:
        column = router.model_names.index(name)
        prompts = router.summary.get("prompts_per_model", {}).get(router.models[column])
        ability = router.abilities().get(name)
        detail = f"{prompts} prompts" if prompts is not None else "trained"
        return ModelProfile(name, ability, "outcome data", detail, column)
    if config_score is not None:
        return ModelProfile(name, float(config_score), "config score", f"models.{name}.score")
    for candidate in (score_name, name, upstream):
        if candidate is None:
            continue
        found = table.find(candidate)
        if found is not None:
            return ModelProfile(name, found.score, "public score", f"{found.key} ({found.date or table.origin})")
    return ModelProfile(name, None, "none")


def _close_names(name: str, table: ScoreTable) -> list[str]:
    """Table names that look like `name` (compared without dates), for the error's hint."""
    stems: dict[str, str] = {}
    for key in table.rows:
        stems.setdefault(re.sub(r"-(20\d{2}-?\d{2}-?\d{2})$", "", normalise_model_name(key)), key)
    return [stems[s] for s in difflib.get_close_matches(normalise_model_name(name), list(stems), n=3, cutoff=0.75)]


def require_placed(profiles: Sequence[ModelProfile], *, where: str, table: ScoreTable,
                   trained: Sequence[str] = ()) -> None:
    """Raise ConfigError naming every model without an ability, and the three ways to give it one."""
    missing = [p for p in profiles if not p.placed]
    if not missing:
        return
    lines = [f"{where}: a learned route needs an ability for every candidate, and these have none: "
             f"{', '.join(p.name for p in missing)}. For each, one of:"]
    for p in missing:
        close = _close_names(p.name, table)
        hint = f" (close names in the table: {', '.join(close)})" if close else ""
        lines.append(
            f"  {p.name}: (1) outcome data — train a router that includes it (`switchman train --data DIR` or "
            f"`--from-ledger`) and set the route's `router:`{' (trained: ' + ', '.join(trained) + ')' if trained else ''}; "
            f"(2) a public score — `models: {{{p.name}: {{score_name: <its LMArena name>}}}}`{hint}; "
            f"(3) your own number — `models: {{{p.name}: {{score: 1250}}}}` on the LMArena style-controlled scale "
            f"(gpt-4o-mini 1317, gpt-4o 1336, claude-sonnet-4-5 1445)"
        )
    raise ConfigError("\n".join(lines))


def profiles_for(names: Sequence[str], *, router: TrainedRouter | None, table: ScoreTable,
                 config_scores: Mapping[str, float | None], score_names: Mapping[str, str | None],
                 upstream: Mapping[str, str | None]) -> list[ModelProfile]:
    """`model_profile` of each name."""
    return [model_profile(n, router=router, table=table, config_score=config_scores.get(n),
                          score_name=score_names.get(n), upstream=upstream.get(n)) for n in names]
