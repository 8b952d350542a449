"""The `switchman` command line: Typer commands and their Rich output (the only place that prints tables).

    switchman serve | init | models | route | train | eval | replay | spend | keys ... | local install

Each command is a thin wrapper: parse options, call the library (gateway, evaluate, learn, ledger),
print the result. Library packages never import Rich.
"""

from ._app import app, main

__all__ = ["app", "main"]
