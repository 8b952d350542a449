"""`python -m switchman ...`: the `switchman` command, for an environment whose scripts folder is not on PATH."""

from switchman.cli import app

if __name__ == "__main__":
    app(prog_name="switchman")
