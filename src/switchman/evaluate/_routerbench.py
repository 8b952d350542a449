"""Reader for RouterBench's native wide CSVs, turned into the tidy long tables.

RouterBench (and copies of it such as RouterDC's ``routerbench_zs`` folder) ships one row per
prompt with, per model ``M``: a 0/1 column ``M``, ``M|model_response`` and ``M|total_cost``.
``prompt`` and ``M|model_response`` are Python ``str()`` of a list of strings. Reading these
directly lets a user evaluate on RouterBench files without a conversion step, and lets the
tests check that the bundled tidy tables were derived correctly.

Rules (the same ones the bundled tidy tables were built with):

* ``prompt_id`` = ``sample_id``; prompt text = the list joined with ``"\\n"``; task = ``eval_name``.
* split = the file name's ``_train`` / ``_test`` suffix (None otherwise).
* A model has a result in a row when its 0/1 column is not empty; its cost and response are
  taken from that same row (RouterBench fills ``|total_cost`` and ``|model_response`` of rows
  that have no result, so those are ignored).
* A ``sample_id`` that occurs in several rows is merged into one prompt: each model's values
  come from the row that has its result (two rows with a result for the same model is an
  error). The prompt text and task come from the row with the most results. The prompt is
  ``train`` if any of its rows is in a train file, so no test prompt was seen in training.
* ``input_tokens`` are counted on the joined prompt of the row the model's result came from,
  ``output_tokens`` on its joined response (cl100k, see ``switchman._tokens``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd

from switchman._exceptions import DatasetError
from switchman._tokens import count_tokens

from ._csv import UNREADABLE, read_csv_cells

__all__ = ["is_routerbench_file", "read_routerbench", "routerbench_files"]

NATIVE_SUFFIXES = (".csv", ".csv.gz")
_COST = "|total_cost"
_RESPONSE = "|model_response"
_KEYS = ("sample_id", "prompt", "eval_name")
_SPLIT_RANK = {"train": 2, "test": 1}
_NOT_UTF8 = "bytes that are not UTF-8 (unknown encoding); save the file as UTF-8"


def is_routerbench_file(path: Path) -> bool:
    """True when the CSV header has RouterBench's key columns and at least one cost column.

    Skipped (False), as another kind of file: one that does not parse as CSV, a CSV without those columns, and an
    empty file (0 bytes, or a .csv.gz holding no text). Refused (DatasetError naming it): a file whose bytes cannot
    be read, e.g. a .csv.gz that is not gzip or is damaged or cut short; passed over, its rows would be missing from
    the data unnoticed (as `read_csv_cells` says)."""
    try:
        header = pd.read_csv(path, nrows=0, encoding="utf-8-sig", encoding_errors="replace")
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return False
    except UNREADABLE as exc:
        raise DatasetError(f"{path}: cannot read: {exc} (fix it, or move it out of the folder)") from exc
    columns = set(header.columns)
    return set(_KEYS) <= columns and any(str(c).endswith(_COST) for c in columns)


def routerbench_files(directory: Path) -> list[Path]:
    """The RouterBench-format CSVs directly in ``directory``, sorted by name."""
    return [
        p
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name.endswith(NATIVE_SUFFIXES) and is_routerbench_file(p)
    ]


def read_routerbench(files: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tidy ``(prompts, outcomes)`` frames from RouterBench native CSVs.

    ``prompts`` has ``prompt_id, prompt, task, split``; ``outcomes`` has
    ``prompt_id, model, quality, input_tokens, output_tokens, cost_usd`` with one row per
    (prompt, model) result. Errors name the file, the 1-based data row and the column.
    """
    if not files:
        raise DatasetError("no RouterBench CSV files given")
    rows, results = [], []
    for path in files:
        frame = _read_native(path)
        rows.append(_row_frame(path, frame))
        results.append(_result_frame(path, frame))
    row_table = pd.concat(rows, ignore_index=True)
    long = pd.concat(results, ignore_index=True)
    _check_unique_results(long)
    row_table["text"] = _parse_lists(row_table, "raw_prompt", "prompt_column")
    prompt_tokens = _token_counts(row_table["text"])
    long = long.merge(
        row_table[["key", "text"]].assign(input_tokens=prompt_tokens), on="key", how="left"
    )
    long["response"] = _parse_lists(long, "raw_response", "response_column")
    prompts = _merge_prompts(row_table)
    outcomes = pd.DataFrame(
        {
            "prompt_id": long["sample_id"].to_numpy(dtype=object),
            "model": long["model"].to_numpy(dtype=object),
            "quality": _numbers(long, "quality", low=0.0, high=1.0),
            "input_tokens": long["input_tokens"].to_numpy(dtype=np.float64),
            "output_tokens": _token_counts(long["response"]),
            "cost_usd": _numbers(long, "cost", low=0.0, high=np.inf),
        }
    )
    return prompts, outcomes


def _read_native(path: Path) -> pd.DataFrame:
    """The file as text cells ("" when empty), undecodable bytes kept as surrogates."""
    frame = read_csv_cells(path)
    if frame.empty:
        raise DatasetError(f"{path}: no data rows")
    for column in frame.columns:
        bad = frame[column].str.contains("[\udc80-\udcff]", regex=True).to_numpy()
        if bad.any():
            row = int(np.argmax(bad)) + 1
            raise DatasetError(f"{path}, row {row}, column {column!r}: {_NOT_UTF8}")
    return frame


def _models(path: Path, frame: pd.DataFrame) -> list[str]:
    """Model names from the ``M|total_cost`` columns, checking their sibling columns exist."""
    models = [c[: -len(_COST)] for c in frame.columns if c.endswith(_COST)]
    for model in models:
        for column in (model, model + _RESPONSE):
            if column not in frame.columns:
                raise DatasetError(f"{path}, header: missing column {column!r} (model {model!r} has a cost column)")
    return models


def _split_of(path: Path) -> str | None:
    """``train`` / ``test`` from a ``*_train.csv(.gz)`` / ``*_test.csv(.gz)`` file name."""
    stem = path.name.removesuffix(".gz").removesuffix(".csv")
    for split in _SPLIT_RANK:
        if stem.endswith("_" + split):
            return split
    return None


def _row_frame(path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per native row: where it is, its key columns and how many results it holds."""
    missing = [c for c in _KEYS if c not in frame.columns]
    if missing:
        raise DatasetError(f"{path}, header: missing column(s) {', '.join(map(repr, missing))}")
    models = _models(path, frame)
    empty_id = (frame["sample_id"] == "").to_numpy()
    if empty_id.any():
        raise DatasetError(f"{path}, row {int(np.argmax(empty_id)) + 1}, column 'sample_id': empty")
    row = np.arange(1, len(frame) + 1)
    return pd.DataFrame(
        {
            "key": [f"{path.name}#{r}" for r in row],
            "file": str(path),
            "row": row,
            "sample_id": frame["sample_id"].to_numpy(dtype=object),
            "raw_prompt": frame["prompt"].to_numpy(dtype=object),
            "prompt_column": "prompt",
            "eval_name": frame["eval_name"].to_numpy(dtype=object),
            "split": _split_of(path),
            "results": (frame[models] != "").sum(axis=1).to_numpy() if models else 0,
        }
    )


def _result_frame(path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (native row, model) that has a result, with its raw cells."""
    parts = []
    for model in _models(path, frame):
        present = (frame[model] != "").to_numpy()
        index = np.flatnonzero(present)
        parts.append(
            pd.DataFrame(
                {
                    "key": [f"{path.name}#{i + 1}" for i in index],
                    "file": str(path),
                    "row": index + 1,
                    "sample_id": frame["sample_id"].to_numpy(dtype=object)[index],
                    "model": model,
                    "quality": frame[model].to_numpy(dtype=object)[index],
                    "quality_column": model,
                    "cost": frame[model + _COST].to_numpy(dtype=object)[index],
                    "cost_column": model + _COST,
                    "raw_response": frame[model + _RESPONSE].to_numpy(dtype=object)[index],
                    "response_column": model + _RESPONSE,
                }
            )
        )
    if not parts:
        raise DatasetError(f"{path}: no model columns")
    return pd.concat(parts, ignore_index=True)


def _check_unique_results(long: pd.DataFrame) -> None:
    """Two rows with a result for the same (sample_id, model) cannot be merged."""
    dup = long.duplicated(["sample_id", "model"], keep=False).to_numpy()
    if dup.any():
        first = long.iloc[int(np.argmax(dup))]
        same = long[(long["sample_id"] == first["sample_id"]) & (long["model"] == first["model"])]
        where = "; ".join(f"{f}, row {r}" for f, r in zip(same["file"], same["row"], strict=True))
        raise DatasetError(
            f"sample_id {first['sample_id']!r} has results for model {first['model']!r} in more than one row "
            f"({where}, column {first['model']!r}); cannot merge them"
        )


def _parse_lists(frame: pd.DataFrame, raw: str, column_of: str) -> pd.Series:
    """Each cell of ``frame[raw]`` (``str()`` of a list of strings) joined with newlines.

    ``frame[column_of]`` holds each cell's source column name, for error messages.
    """
    values = frame[raw]
    unique = pd.unique(values)
    parsed: dict[str, str] = {}
    for cell in unique:
        text = _join_list(cell)
        if text is None:
            i = int(np.argmax((values == cell).to_numpy()))
            column = frame[column_of].iloc[i]
            raise DatasetError(
                f"{frame['file'].iloc[i]}, row {frame['row'].iloc[i]}, column {column!r}: "
                f"expected the str() of a list of strings, got {str(cell)[:60]!r}"
            )
        parsed[cell] = text
    return values.map(parsed)


def _join_list(cell: str) -> str | None:
    """The joined list, or None when the cell is not a Python list literal of strings."""
    try:
        value = ast.literal_eval(cell)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return "\n".join(value)


def _token_counts(texts: pd.Series) -> np.ndarray:
    """Token count per text, counting each distinct text once (many responses repeat)."""
    counts = {text: count_tokens(text) for text in pd.unique(texts)}
    return np.asarray(texts.map(counts).to_numpy(dtype=np.float64))


def _numbers(long: pd.DataFrame, column: str, *, low: float, high: float) -> np.ndarray:
    """``long[column]`` as floats in [low, high]; an error names the first bad cell."""
    values = pd.to_numeric(long[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~((values >= low) & (values <= high))
    if bad.any():
        i = int(np.argmax(bad))
        cell = long.iloc[i]
        raise DatasetError(
            f"{cell['file']}, row {cell['row']}, column {cell[column + '_column']!r}: "
            f"expected a number in [{low:g}, {high:g}], got {str(cell[column])[:40]!r}"
        )
    return values


def _merge_prompts(row_table: pd.DataFrame) -> pd.DataFrame:
    """One prompt per sample_id, in order of first appearance (see the module rules)."""
    tasks = row_table.groupby("sample_id", sort=False)["eval_name"].nunique()
    if (tasks > 1).any():
        sample = tasks.index[int(np.argmax((tasks > 1).to_numpy()))]
        rows = row_table[row_table["sample_id"] == sample]
        where = "; ".join(f"{f}, row {r}" for f, r in zip(rows["file"], rows["row"], strict=True))
        raise DatasetError(f"sample_id {sample!r} has different eval_name values ({where}, column 'eval_name')")
    ranked = row_table.assign(order=np.arange(len(row_table)))
    best = ranked.sort_values(["results", "order"], ascending=[False, True], kind="stable")
    best = best.drop_duplicates("sample_id").sort_values("order")
    first_seen = ranked.drop_duplicates("sample_id")["sample_id"]
    best = best.set_index("sample_id").loc[first_seen.to_numpy()]
    split_rank = row_table["split"].map(_SPLIT_RANK).fillna(0).groupby(row_table["sample_id"]).max()
    by_rank = {rank: split for split, rank in _SPLIT_RANK.items()}
    splits = [by_rank.get(int(r)) for r in split_rank.loc[best.index].to_numpy()]
    return pd.DataFrame(
        {
            "prompt_id": best.index.to_numpy(dtype=object),
            "prompt": best["text"].to_numpy(dtype=object),
            "task": best["eval_name"].replace("", None).to_numpy(dtype=object),
            "split": np.array(splits, dtype=object),
        }
    )
