"""Outcome data as the command line asks for it: read, rename, merge and filter (train, eval, replay).

Prices missing from a table come from the bundled genai-prices catalog, so every command prices the
same data the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .._catalog import lookup_catalog_price
from .._exceptions import ConfigError
from ._datasets import OutcomeTable, concat_tables, load_outcomes

__all__ = ["catalog_price", "load_data", "parse_aliases"]


def catalog_price(model: str) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens from genai-prices, or None for a model it does not know."""
    found = lookup_catalog_price(model)
    return (found.input_price, found.output_price) if found else None


def parse_aliases(pairs: Sequence[str]) -> dict[str, str]:
    """`a=b` pairs → {a: b}."""
    aliases: dict[str, str] = {}
    for pair in pairs:
        left, sep, right = pair.partition("=")
        if not sep or not left.strip() or not right.strip():
            raise ConfigError(f"bad --alias {pair!r}: use name=canonical")
        aliases[left.strip()] = right.strip()
    return aliases


def load_data(
    dirs: Sequence[Path],
    *,
    split: str | None = None,
    task: str | None = None,
    models: Sequence[str] = (),
    aliases: dict[str, str] | None = None,
) -> OutcomeTable:
    """Read, merge and filter outcome tables as the command line asks."""
    if not dirs:
        raise ConfigError("give at least one --data DIR")
    tables = [load_outcomes(d, price_of=catalog_price) for d in dirs]
    if aliases:
        tables = [t.rename_models({a: b for a, b in aliases.items() if a in t.models}) for t in tables]
    table = concat_tables(tables) if len(tables) > 1 else tables[0]
    if task:
        table = table.where_task(task)
    if models:
        table = table.select_models(list(models))
    if split:
        table = table.where_split(split)
    return table
