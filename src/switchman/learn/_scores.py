"""Public ability scores (LMArena text leaderboard) and the name normaliser that finds a model in them.

The table ships inside the package (`learn/data/lmarena_text.csv`: model, score, source, date, note),
as the price catalog does; `ScoreTable.from_csv(path)` reads a newer file of the same shape (or one
of LMArena's own CSV exports: `model` and `score` columns are all it needs), and a configuration
points at one with `scores: FILE`.

How a catalog name is matched (`ScoreTable.find`), first hit wins:

1. an explicit alias (the configuration's, then `BUNDLED_ALIASES`), then the name itself;
2. the normalised name: lower case; a vendor or provider prefix dropped (`openai/gpt-4o` → `gpt-4o`,
   `meta-llama/Llama-3.3-70B-Instruct-Turbo` → `llama-3.3-70b-instruct-turbo`,
   `anthropic.claude-3-5-sonnet-20241022-v2:0` → `claude-3-5-sonnet-20241022`); `_` and spaces as `-`;
   a `-latest` suffix and a `:tag` or `@version` suffix dropped; Together's `-instruct-turbo` read as
   `-instruct`;
3. the normalised name without a date (`-20241022`, `-2024-10-22`) against the table's dated names
   without theirs: an undated name means the newest dated snapshot (`claude-3-5-haiku-latest` →
   `claude-3-5-haiku-20241022`, `gpt-4o` → `gpt-4o-2024-08-06`).

Nothing fuzzier: a name that matches none of these is not placed, and the caller says how to fix it.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from .._exceptions import ConfigError

__all__ = ["BUNDLED_ALIASES", "PublicScore", "ScoreTable", "normalise_model_name"]

#: Catalog and dataset names whose LMArena key differs by more than the normaliser's rules.
BUNDLED_ALIASES: dict[str, str] = {
    # RouterBench (RouterDC copy) model names
    "claude-v1": "claude-1",
    "claude-v2": "claude-2.0",
    "claude-instant-v1": "claude-instant-1",
    "mistralai/mixtral-8x7b-chat": "mixtral-8x7b-instruct-v0.1",
    "mistralai/mistral-7b-chat": "mistral-7b-instruct",
    "meta/code-llama-instruct-34b-chat": "codellama-34b-instruct",
    "WizardLM/WizardLM-13B-V1.2": "wizardlm-13b-v1.2",
    # AlpacaEval 2 model names
    "claude": "claude-1",
    "claude-2": "claude-2.0",
    "claude-instant-1.2": "claude-instant-1",
    "oasst-sft-pythia-12b": "oasst-pythia-12b",
    # provider model ids
    "deepseek-chat": "deepseek-v3.2",
    "deepseek-reasoner": "deepseek-v3.2-thinking",
    "llama-3.1-8b-instant": "llama-3.1-8b-instruct",
}

_VENDOR_DOT = re.compile(r"^(anthropic|meta|mistral|amazon|cohere|ai21|google|openai)\.")
_BEDROCK_VERSION = re.compile(r"-v\d+$")
_DATE = re.compile(r"-(20\d{2}-?\d{2}-?\d{2})$")


def normalise_model_name(name: str) -> str:
    """The spelling-independent form of a model name (rule 2 of the module docstring)."""
    out = name.strip().lower().rsplit("/", 1)[-1]
    bedrock = _VENDOR_DOT.match(out) is not None
    out = re.split(r"[:@]", _VENDOR_DOT.sub("", out), maxsplit=1)[0]
    if bedrock:  # anthropic.claude-3-5-sonnet-20241022-v2:0
        out = _BEDROCK_VERSION.sub("", out)
    out = re.sub(r"[_\s]+", "-", out)
    out = out.removesuffix("-latest")
    if out.endswith("-instruct-turbo"):
        out = out.removesuffix("-turbo")
    return out


def _undated(name: str) -> tuple[str, str]:
    """(name without a trailing date, the date as digits or '')."""
    match = _DATE.search(name)
    if match is None:
        return name, ""
    return name[: match.start()], match.group(1).replace("-", "")


@dataclass(frozen=True, slots=True)
class PublicScore:
    """One model's public score and where it came from."""

    key: str  # the model's name in the table
    score: float
    source: str
    date: str
    note: str = ""


class ScoreTable:
    """Scores by LMArena key, with the indexes the normaliser looks names up in."""

    def __init__(self, rows: Iterable[PublicScore], *, origin: str = "") -> None:
        self.rows: dict[str, PublicScore] = {}
        for row in rows:
            self.rows.setdefault(row.key, row)
        self.origin = origin
        self._normal: dict[str, str] = {}
        newest: dict[str, tuple[str, str]] = {}
        for key in self.rows:
            normal = normalise_model_name(key)
            self._normal.setdefault(normal, key)
            stem, date = _undated(normal)
            if date and (stem not in newest or date > newest[stem][0]):
                newest[stem] = (date, key)
        self._undated = {stem: key for stem, (_, key) in newest.items()}

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    @cache
    def bundled(cls) -> ScoreTable:
        """The table shipped with switchman."""
        text = resources.files("switchman.learn").joinpath("data/lmarena_text.csv").read_text(encoding="utf-8")
        return cls(_parse(text.splitlines(), "<bundled>"), origin="bundled lmarena_text.csv")

    @classmethod
    def from_csv(cls, path: str | Path) -> ScoreTable:
        """A newer score file: columns `model` and `score`, optionally `source`, `date`, `note`."""
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the score file ({exc})") from None
        return cls(_parse(lines, str(path)), origin=str(path))

    def find(self, name: str, aliases: Mapping[str, str] | None = None) -> PublicScore | None:
        """The score of the catalog model `name`, or None when no rule matches it."""
        for candidate in (*(a[name] for a in (aliases or {}, BUNDLED_ALIASES) if name in a), name):
            if candidate in self.rows:
                return self.rows[candidate]
            normal = normalise_model_name(candidate)
            key = self._normal.get(normal) or self._undated.get(_undated(normal)[0])
            if key is not None:
                return self.rows[key]
        return None


def _parse(lines: list[str], where: str) -> list[PublicScore]:
    reader = csv.DictReader(lines)
    if reader.fieldnames is None or not {"model", "score"} <= set(reader.fieldnames):
        raise ConfigError(f"{where}: a score file needs the columns 'model' and 'score'")
    rows = []
    for line, record in enumerate(reader, start=2):
        try:
            score = float(record["score"])
        except (TypeError, ValueError):
            raise ConfigError(f"{where}, line {line}: score {record['score']!r} is not a number") from None
        rows.append(PublicScore(key=str(record["model"]).strip(), score=score, source=record.get("source") or where,
                                date=record.get("date") or "", note=record.get("note") or ""))
    return rows
