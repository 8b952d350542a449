"""Outcome tables: for each prompt and model, the quality and cost of that model's answer.

Evaluating a router needs, for the same prompts, what every candidate model would have
scored and cost. ``OutcomeTable`` holds that as dense (prompts x models) matrices, so
metrics are plain numpy indexing, and ``load_outcomes`` reads it from a directory of tidy
long tables (or RouterBench's native CSVs), checking every cell on the way in so a bad file
fails loudly with its file, row and column instead of skewing a result.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from switchman._exceptions import DatasetError

from ._csv import UNREADABLE, read_csv_cells
from ._routerbench import read_routerbench, routerbench_files

__all__ = ["OutcomeTable", "PriceLookup", "concat_tables", "load_outcomes"]

PriceLookup = Callable[[str], tuple[float, float] | None]
"""``model -> (input USD per 1M tokens, output USD per 1M tokens)``, None when unknown."""

_SUFFIXES = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".parquet")
_SURROGATE = "[\udc80-\udcff]"  # what undecodable bytes become under "surrogateescape"
_MATRICES = ("quality", "input_tokens", "output_tokens", "cost_usd")
_NOT_UTF8 = "bytes that are not UTF-8 (unknown encoding); save the file as UTF-8"


@dataclass(frozen=True, eq=False, repr=False)
class OutcomeTable:
    """Per-prompt, per-model outcomes; row i is ``prompt_ids[i]``, column j is ``models[j]``.

    The four matrices are float64 of shape ``(len(prompt_ids), len(models))`` with NaN where
    that model has no result for that prompt. ``cost_usd`` is the cost of one call in USD.
    Arrays are stored read-only so a table can be shared safely; every method returns a new
    table.
    """

    prompt_ids: tuple[str, ...]
    prompts: tuple[str, ...]
    tasks: tuple[str | None, ...]
    splits: tuple[str | None, ...]
    models: tuple[str, ...]
    quality: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    cost_usd: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("prompt_ids", "prompts", "tasks", "splits", "models"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        n, m = len(self.prompt_ids), len(self.models)
        for name in ("prompts", "tasks", "splits"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"OutcomeTable.{name} has {len(getattr(self, name))} items, expected {n}")
        for name in _MATRICES:
            array = np.array(getattr(self, name), dtype=np.float64)
            if array.shape != (n, m):
                raise ValueError(f"OutcomeTable.{name} has shape {array.shape}, expected {(n, m)}")
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        _require_unique(self.prompt_ids, "prompt id")
        _require_unique(self.models, "model")

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def __repr__(self) -> str:
        return f"OutcomeTable({len(self)} prompts x {len(self.models)} models, source={self.source!r})"

    def subset(self, mask_or_indices: Sequence[bool] | Sequence[int] | np.ndarray) -> OutcomeTable:
        """The rows picked by a boolean mask of length n or by integer indices (in that order)."""
        index = np.asarray(mask_or_indices)
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise ValueError(f"mask has shape {index.shape}, expected ({len(self)},)")
            index = np.flatnonzero(index)
        elif index.size == 0:
            index = index.astype(np.intp)
        elif not np.issubdtype(index.dtype, np.integer):
            raise TypeError(f"expected a boolean mask or integer indices, got dtype {index.dtype}")
        return dataclasses.replace(
            self,
            prompt_ids=tuple(self.prompt_ids[i] for i in index),
            prompts=tuple(self.prompts[i] for i in index),
            tasks=tuple(self.tasks[i] for i in index),
            splits=tuple(self.splits[i] for i in index),
            **{name: getattr(self, name)[index] for name in _MATRICES},
        )

    def where_split(self, split: str) -> OutcomeTable:
        """The prompts in ``split``; an error names the splits present when none match."""
        return self._where("split", self.splits, split)

    def where_task(self, task: str) -> OutcomeTable:
        """The prompts of ``task``; an error names the tasks present when none match."""
        return self._where("task", self.tasks, task)

    def _where(self, kind: str, labels: tuple[str | None, ...], wanted: str) -> OutcomeTable:
        mask = np.array([label == wanted for label in labels], dtype=bool)
        if not mask.any():
            present = sorted({label for label in labels if label is not None})
            raise DatasetError(
                f"{self.source or 'outcome table'}: no prompt has {kind} {wanted!r}; "
                f"{kind}s present: {', '.join(map(repr, present)) or 'none'}"
            )
        return self.subset(mask)

    def select_models(self, names: Sequence[str]) -> OutcomeTable:
        """Only the columns ``names``, in that order; an error names unknown models."""
        names = list(names)
        unknown = [name for name in names if name not in self.models]
        if unknown:
            raise DatasetError(
                f"{self.source or 'outcome table'}: unknown model(s) {', '.join(map(repr, unknown))}; "
                f"models present: {', '.join(map(repr, self.models))}"
            )
        _require_unique(names, "model")
        columns = [self.models.index(name) for name in names]
        return dataclasses.replace(
            self, models=tuple(names), **{name: getattr(self, name)[:, columns] for name in _MATRICES}
        )

    def rename_models(self, aliases: Mapping[str, str]) -> OutcomeTable:
        """Models renamed by ``aliases`` (old -> new); names not in ``aliases`` are kept.

        Aliases for models the table does not have are ignored, so one alias map can serve
        several datasets. Two models ending up with the same name is an error.
        """
        renamed = tuple(aliases.get(model, model) for model in self.models)
        _require_unique(renamed, "model (after renaming)")
        return dataclasses.replace(self, models=renamed)

    def complete(self) -> OutcomeTable:
        """Only the prompts every model answered, so per-model means compare like with like."""
        return self.subset(~np.isnan(self.quality).any(axis=1))

    def prompt_input_tokens(self) -> np.ndarray:
        """Prompt length in tokens per prompt: the max over models (NaN if no model answered)."""
        if not self.models:
            return np.full(len(self), np.nan)
        return np.asarray(np.fmax.reduce(self.input_tokens, axis=1))


def concat_tables(tables: Sequence[OutcomeTable]) -> OutcomeTable:
    """All prompts of ``tables`` stacked; models are the union (NaN where a table lacks one).

    Prompt ids must be unique across tables, so the same prompt is never counted twice.
    """
    if not tables:
        raise ValueError("concat_tables needs at least one table")
    models = list(dict.fromkeys(model for table in tables for model in table.models))
    seen: dict[str, str] = {}
    for table in tables:
        clashes = [pid for pid in table.prompt_ids if pid in seen]
        if clashes:
            raise DatasetError(
                f"prompt id(s) {', '.join(map(repr, clashes[:5]))} occur in both {seen[clashes[0]]!r} "
                f"and {table.source!r}; prompt ids must not repeat across tables"
            )
        seen.update(dict.fromkeys(table.prompt_ids, table.source or "a table"))
    matrices = {}
    for name in _MATRICES:
        blocks = []
        for table in tables:
            block = np.full((len(table), len(models)), np.nan)
            block[:, [models.index(model) for model in table.models]] = getattr(table, name)
            blocks.append(block)
        matrices[name] = np.vstack(blocks)
    return OutcomeTable(
        prompt_ids=sum((t.prompt_ids for t in tables), ()),
        prompts=sum((t.prompts for t in tables), ()),
        tasks=sum((t.tasks for t in tables), ()),
        splits=sum((t.splits for t in tables), ()),
        models=tuple(models),
        source=" + ".join(t.source for t in tables),
        **matrices,
    )


def load_outcomes(path: str | Path, *, price_of: PriceLookup | None = None) -> OutcomeTable:
    """Read the outcome table stored in directory ``path``.

    Tidy format: ``prompts.<ext>`` (``prompt_id``, ``prompt``, optional ``task`` and ``split``)
    and ``outcomes.<ext>`` (``prompt_id``, ``model``, ``quality`` in [0, 1], ``input_tokens``,
    ``output_tokens``, optional ``cost_usd``), ``<ext>`` one of csv, csv.gz, jsonl, jsonl.gz,
    parquet; other columns are ignored. A missing or empty ``cost_usd`` is computed as
    ``(input_tokens * in + output_tokens * out) / 1e6`` with ``price_of(model) -> (in, out)``
    in USD per 1M tokens. A directory without these tables but with RouterBench native CSVs
    is read with the RouterBench reader. Errors name the file, data row (1-based) and column.
    """
    directory = Path(path)
    if not directory.exists():
        raise DatasetError(f"{directory}: no such directory")
    if not directory.is_dir():
        raise DatasetError(f"{directory}: not a directory (expected a folder holding prompts and outcomes tables)")
    prompts_file = _find_table(directory, "prompts")
    outcomes_file = _find_table(directory, "outcomes")
    if prompts_file is None and outcomes_file is None:
        native = routerbench_files(directory)
        if native:
            prompts, outcomes = read_routerbench(native)
            return _assemble(prompts, outcomes, source=str(directory))
        raise DatasetError(
            f"{directory}: no outcome data found; expected prompts.<ext> and outcomes.<ext> "
            f"(<ext> one of {', '.join(s.lstrip('.') for s in _SUFFIXES)}) or RouterBench native CSV files"
        )
    if prompts_file is None or outcomes_file is None:
        missing = "prompts" if prompts_file is None else "outcomes"
        found = prompts_file or outcomes_file
        assert found is not None  # at least one was found, or the RouterBench branch returned above
        raise DatasetError(f"{directory}: found {found.name} but no {missing} table")
    prompts = _read_prompts(prompts_file)
    outcomes = _read_outcomes(outcomes_file, prompts, prompts_file, price_of)
    return _assemble(prompts, outcomes, source=str(directory))


def _require_unique(names: Sequence[str], what: str) -> None:
    duplicated = pd.Index(list(names)).duplicated()
    if duplicated.any():
        raise DatasetError(f"duplicate {what} {names[int(np.argmax(duplicated))]!r}")


def _assemble(prompts: pd.DataFrame, outcomes: pd.DataFrame, *, source: str) -> OutcomeTable:
    """Dense matrices from checked tidy frames (ids known, pairs unique, numbers valid)."""
    prompt_ids = prompts["prompt_id"].to_numpy(dtype=object)
    rows = pd.Index(prompt_ids).get_indexer(outcomes["prompt_id"].to_numpy(dtype=object))
    columns, models = pd.factorize(outcomes["model"].to_numpy(dtype=object))
    matrices = {}
    for name in _MATRICES:
        matrix = np.full((len(prompt_ids), len(models)), np.nan)
        matrix[rows, columns] = outcomes[name].to_numpy(dtype=np.float64)
        matrices[name] = matrix
    return OutcomeTable(
        prompt_ids=tuple(prompt_ids),
        prompts=tuple(prompts["prompt"].to_numpy(dtype=object)),
        tasks=tuple(prompts["task"].to_numpy(dtype=object)),
        splits=tuple(prompts["split"].to_numpy(dtype=object)),
        models=tuple(models),
        source=source,
        **matrices,
    )


def _find_table(directory: Path, stem: str) -> Path | None:
    """``directory/stem.<ext>``; two formats of the same table is ambiguous, so an error."""
    found = [directory / (stem + suffix) for suffix in _SUFFIXES if (directory / (stem + suffix)).is_file()]
    if len(found) > 1:
        raise DatasetError(f"{directory}: several {stem} tables ({', '.join(p.name for p in found)}); keep one")
    return found[0] if found else None


def _read_prompts(file: Path) -> pd.DataFrame:
    frame = _read_frame(file)
    _require_columns(file, frame, ("prompt_id", "prompt"))
    prompt_ids = _text(file, frame, "prompt_id", required=True)
    duplicated = pd.Index(prompt_ids).duplicated()
    if duplicated.any():
        row = int(np.argmax(duplicated))
        first = int(np.argmax(prompt_ids == prompt_ids[row]))
        message = f"duplicate prompt_id {prompt_ids[row]!r} (first in row {first + 1})"
        raise _cell_error(file, row, "prompt_id", message)
    prompts = _text(file, frame, "prompt", required=False)
    prompts[pd.isna(prompts)] = ""  # an empty prompt is allowed (e.g. prompts kept private)
    return pd.DataFrame(
        {
            "prompt_id": prompt_ids,
            "prompt": prompts,
            "task": _optional_text(file, frame, "task"),
            "split": _optional_text(file, frame, "split"),
        }
    )


def _read_outcomes(
    file: Path, prompts: pd.DataFrame, prompts_file: Path, price_of: PriceLookup | None
) -> pd.DataFrame:
    frame = _read_frame(file)
    _require_columns(file, frame, ("prompt_id", "model", "quality", "input_tokens", "output_tokens"))
    prompt_ids = _text(file, frame, "prompt_id", required=True)
    models = _text(file, frame, "model", required=True)
    unknown = pd.Index(prompts["prompt_id"]).get_indexer(prompt_ids) < 0
    if unknown.any():
        row = int(np.argmax(unknown))
        raise _cell_error(file, row, "prompt_id", f"prompt_id {prompt_ids[row]!r} is not in {prompts_file.name}")
    duplicated = pd.DataFrame({"p": prompt_ids, "m": models}).duplicated().to_numpy()
    if duplicated.any():
        row = int(np.argmax(duplicated))
        first = int(np.argmax((prompt_ids == prompt_ids[row]) & (models == models[row])))
        pair = f"({prompt_ids[row]!r}, {models[row]!r})"
        raise _cell_error(file, row, "model", f"duplicate (prompt_id, model) pair {pair} (first in row {first + 1})")
    quality = _numbers(file, frame, "quality", low=0.0, high=1.0, required=True)
    input_tokens = _numbers(file, frame, "input_tokens", low=0.0, high=np.inf, required=True)
    output_tokens = _numbers(file, frame, "output_tokens", low=0.0, high=np.inf, required=True)
    if "cost_usd" in frame.columns:
        cost = _numbers(file, frame, "cost_usd", low=0.0, high=np.inf, required=False)
    else:
        cost = np.full(len(frame), np.nan)
    missing = np.isnan(cost)
    if missing.any():
        cost[missing] = _priced(file, models[missing], input_tokens[missing], output_tokens[missing], price_of)
    return pd.DataFrame(
        {
            "prompt_id": prompt_ids,
            "model": models,
            "quality": quality,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd": cost,
        }
    )


def _priced(
    file: Path, models: np.ndarray, input_tokens: np.ndarray, output_tokens: np.ndarray, price_of: PriceLookup | None
) -> np.ndarray:
    """Cost in USD of calls whose cost is not in the file, from per-1M-token prices."""
    names = list(pd.unique(models))
    prices = {name: price_of(name) if price_of is not None else None for name in names}
    unpriced = [name for name, price in prices.items() if price is None]
    if unpriced:
        raise DatasetError(
            f"{file}: column 'cost_usd' is absent or empty for model(s) {', '.join(map(repr, unpriced))} "
            "and no price is known for them; add cost_usd or pass price_of"
        )
    known = {name: price for name, price in prices.items() if price is not None}
    for name, price in known.items():
        if not (price[0] >= 0 and price[1] >= 0):
            raise DatasetError(f"price for model {name!r} must be two numbers >= 0, got {price}")
    per_in = pd.Series(models).map({n: p[0] for n, p in known.items()}).to_numpy(dtype=np.float64)
    per_out = pd.Series(models).map({n: p[1] for n, p in known.items()}).to_numpy(dtype=np.float64)
    return np.asarray((input_tokens * per_in + output_tokens * per_out) / 1e6)


def _cell_error(file: Path, row_index: int, column: str, message: str) -> DatasetError:
    return DatasetError(f"{file}, row {row_index + 1}, column {column!r}: {message}")


def _require_columns(file: Path, frame: pd.DataFrame, required: Sequence[str]) -> None:
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise DatasetError(
            f"{file}, header row: missing column(s) {', '.join(map(repr, missing))}; "
            f"columns present: {', '.join(map(repr, map(str, frame.columns)))}"
        )
    if frame.empty:
        raise DatasetError(f"{file}: no data rows (the table is empty)")


def _missing(values: pd.Series) -> np.ndarray:
    """Empty cells: NaN/None (JSON null, parquet null) or the empty string (CSV)."""
    as_object = values.astype(object)
    return (as_object.isna() | (as_object == "")).to_numpy()


def _text(file: Path, frame: pd.DataFrame, column: str, *, required: bool) -> np.ndarray:
    """A column as an object array of str, None where empty (an error if ``required``)."""
    values = frame[column].astype(object)
    missing = _missing(values)
    if required and missing.any():
        raise _cell_error(file, int(np.argmax(missing)), column, "empty value")
    present = values[~missing]
    if pd.api.types.infer_dtype(present, skipna=False) != "string":
        present = present.astype(str).astype(object)  # e.g. numeric ids in JSON or parquet
    # object dtype on purpose: pandas' arrow strings reject the surrogates checked for here
    undecodable = present.str.contains(_SURROGATE, regex=True).to_numpy(dtype=bool)
    if undecodable.any():
        row = int(np.flatnonzero(~missing)[np.argmax(undecodable)])
        raise _cell_error(file, row, column, _NOT_UTF8)
    result = np.full(len(values), None, dtype=object)
    result[~missing] = present.to_numpy(dtype=object)
    return result


def _optional_text(file: Path, frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame.columns:
        return np.full(len(frame), None, dtype=object)
    return _text(file, frame, column, required=False)


def _numbers(
    file: Path, frame: pd.DataFrame, column: str, *, low: float, high: float, required: bool
) -> np.ndarray:
    """A column as float64 in [low, high], NaN where empty (an error if ``required``)."""
    raw = frame[column]
    missing = _missing(raw)
    if required and missing.any():
        raise _cell_error(file, int(np.argmax(missing)), column, "empty value")
    if raw.dtype == bool:
        values = raw.to_numpy(dtype=np.float64, copy=True)
    else:
        parsed = pd.to_numeric(raw.astype(object).where(~missing, None), errors="coerce")
        values = parsed.to_numpy(dtype=np.float64, copy=True)
    bad = ~missing & ~((values >= low) & (values <= high))
    if bad.any():
        row = int(np.argmax(bad))
        kind = "not a number" if np.isnan(values[row]) else f"outside [{low:g}, {high:g}]"
        raise _cell_error(file, row, column, f"{str(raw.iloc[row])[:40]!r} is {kind}")
    values[missing] = np.nan
    return values


def _read_frame(file: Path) -> pd.DataFrame:
    """The table in ``file`` with its cells as read (strings for CSV, typed for JSONL/parquet)."""
    name = file.name
    if name.endswith((".csv", ".csv.gz")):
        return read_csv_cells(file)
    if name.endswith((".jsonl", ".jsonl.gz")):
        return _read_jsonl(file)
    return _read_parquet(file)


def _read_jsonl(file: Path) -> pd.DataFrame:
    try:
        raw = gzip.decompress(file.read_bytes()) if file.name.endswith(".gz") else file.read_bytes()
    except UNREADABLE as exc:
        raise DatasetError(f"{file}: cannot read: {exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _jsonl_decode_error(file, raw, exc) from exc
    if not text.strip():
        raise DatasetError(f"{file}: file is empty")
    try:
        frame = pd.read_json(io.StringIO(text), lines=True, dtype=False)
    except ValueError as exc:
        raise _jsonl_syntax_error(file, text) from exc
    if not all(isinstance(c, str) for c in frame.columns):
        raise _jsonl_syntax_error(file, text)
    return frame


def _jsonl_decode_error(file: Path, raw: bytes, exc: UnicodeDecodeError) -> DatasetError:
    """Name the line and, when the line still parses as JSON, the key holding the bad bytes."""
    line_no = raw.count(b"\n", 0, exc.start) + 1
    line = raw.split(b"\n")[line_no - 1].decode("utf-8", "surrogateescape")
    column = "?"
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if isinstance(record, dict):
        column = next((str(k) for k, v in record.items() if any("\udc80" <= ch <= "\udcff" for ch in str(v))), "?")
    return DatasetError(f"{file}, row {line_no}, column {column!r}: {_NOT_UTF8}")


def _jsonl_syntax_error(file: Path, text: str) -> DatasetError:
    """Find the first line that is not a JSON object (only runs when parsing failed)."""
    row = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        row += 1
        try:
            record = json.loads(line)
        except ValueError as exc:
            return DatasetError(f"{file}, row {row}: not valid JSON ({exc})")
        if not isinstance(record, dict):
            return DatasetError(f"{file}, row {row}: expected a JSON object, got {type(record).__name__}")
    return DatasetError(f"{file}: not a valid JSON-lines file")


def _read_parquet(file: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(file)
    except (ValueError, OSError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise DatasetError(f"{file}: cannot read parquet file: {exc}") from exc
