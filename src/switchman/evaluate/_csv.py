"""A CSV file (plain or gzipped) as text cells: the one reader for outcome CSVs and RouterBench's native files, so
both refuse a bad file with the same DatasetError naming it (never a parser's or gzip's own exception)."""

from __future__ import annotations

import zlib
from pathlib import Path

import pandas as pd

from .._exceptions import DatasetError

__all__ = ["UNREADABLE", "read_csv_cells"]

#: What reading a (gzipped) file raises when its bytes cannot be read: the OS's errors and gzip's bad header
#: (BadGzipFile is an OSError), a file cut short (EOFError), and deflate data damaged in the middle (zlib.error).
UNREADABLE = (OSError, EOFError, zlib.error)


def read_csv_cells(file: Path) -> pd.DataFrame:
    """The file's cells as strings ("" when empty); undecodable bytes become lone surrogates, so the caller can name
    their row and column."""
    try:
        return pd.read_csv(
            file, dtype=object, keep_default_na=False, encoding="utf-8-sig", encoding_errors="surrogateescape"
        )
    except pd.errors.EmptyDataError as exc:
        raise DatasetError(f"{file}: file is empty (no header row)") from exc
    except pd.errors.ParserError as exc:
        raise DatasetError(f"{file}: not a valid CSV file: {exc}") from exc
    except UnicodeEncodeError as exc:  # undecodable bytes in the header: pandas cannot make column names of them
        raise DatasetError(f"{file}, header row: bytes that are not UTF-8; save the file as UTF-8") from exc
    except UNREADABLE as exc:  # e.g. a truncated, damaged or non-gzip .gz file
        raise DatasetError(f"{file}: cannot read: {exc}") from exc
