"""Output files named on the command line, checked before the work that fills them."""

from __future__ import annotations

from pathlib import Path

from .._exceptions import ConfigError

__all__ = ["check_outputs"]


def check_outputs(**named: Path | None) -> None:
    """Refuse an output path that cannot be a file, so training or evaluating for minutes does not end
    in a traceback at the write. Keys are the flags' names (`json="--json"` style: `out=Path(...)`)."""
    for flag, path in named.items():
        if path is None:
            continue
        shown = f"--{flag.replace('_', '-')} {path}"
        if path.is_dir():
            raise ConfigError(f"{shown}: is a directory; give a file name")
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise ConfigError(f"{shown}: {folder} is not a folder")
