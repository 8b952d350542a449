"""Output files named on the command line, checked before the work that fills them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .._exceptions import ConfigError

__all__ = ["check_outputs"]


def check_outputs(**named: Path | None) -> None:
    """Refuse an output path that cannot be a file or cannot be written, so training or evaluating for
    minutes does not end in a traceback at the write. Keys are the flags' names (`json="--json"` style:
    `out=Path(...)`)."""
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
        problem = _unwritable(path, folder)
        if problem is not None:
            raise ConfigError(f"{shown}: cannot write there ({problem})")


def _unwritable(path: Path, folder: Path) -> str | None:
    """Why `path` (or, when it does not exist yet, a new file in `folder`, its nearest existing folder)
    cannot be written; None when it can. A real attempt rather than `os.access`, which says yes to root
    on a read-only mount or in /proc. The existing file is opened for appending and left as it was."""
    try:
        if path.exists():
            with path.open("ab"):
                pass
        else:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".switchman-probe-"):
                pass
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else type(exc).__name__
    return None
