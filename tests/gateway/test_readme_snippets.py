"""The README's client snippets, run as written against the gateway on loopback (only the address changes)."""

from __future__ import annotations

import contextlib
import gc
import io
import os
import re
import subprocess
import warnings
from pathlib import Path

import pytest

from switchman.gateway import Gateway

README = Path(__file__).resolve().parents[2] / "README.md"


def snippet(name: str) -> str:
    """The python block that follows `<!-- snippet: name -->` in the README."""
    match = re.search(rf"<!-- snippet: {name} -->\n```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert match is not None, f"README has no snippet {name!r}"
    return match.group(1)


def run(name: str, server: str) -> list[str]:
    code = snippet(name).replace("http://127.0.0.1:8080", server)
    out = io.StringIO()
    namespace = {"__name__": "__readme__"}
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"README:{name}", "exec"), namespace)  # noqa: S102 - our own README
    # A script may leave its client for the interpreter's exit to close (the anthropic snippet does):
    # drop it here, where its unclosed socket is expected, not in a later test's garbage collection.
    namespace.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    return out.getvalue().splitlines()


def _apis(gateway: Gateway) -> list[str | None]:
    assert gateway.ledger is not None
    gateway.ledger.flush_sync(timeout=5)
    return [r.api for r in gateway.ledger.records()]


@pytest.mark.parametrize(("name", "printed", "apis"), [
    ("anthropic", ["cheap end_turn Hello from cheap."], ["messages"]),
    ("agents", ["Hello from cheap."], ["responses", "responses"]),
    ("openai", ["cheap Hello from cheap.", "2 8"], ["responses", "embeddings"]),
    # The agent calls the tool (the fake upstream always does on a user turn), then answers.
    ("langchain", ["Hello from cheap."], ["chat.completions", "chat.completions"]),
])
def test_readme_snippet(name: str, printed: list[str], apis: list[str], server: str, gateway: Gateway) -> None:
    before = len(_apis(gateway))
    assert run(name, server) == printed
    assert _apis(gateway)[before:] == apis


#: A Python with `llama-index-llms-openai-like` (its `openai<3` pin cannot share this environment).
LLAMAINDEX_PYTHON_ENV = "SWITCHMAN_LLAMAINDEX_PYTHON"


def test_readme_llamaindex_snippet(server: str, gateway: Gateway) -> None:
    python = os.environ.get(LLAMAINDEX_PYTHON_ENV)
    if not python:
        pytest.skip(f"{LLAMAINDEX_PYTHON_ENV} is not set (.ci/run makes .venv-llamaindex for this test)")
    before = len(_apis(gateway))
    code = snippet("llamaindex").replace("http://127.0.0.1:8080", server)
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["Hello from cheap."]
    assert _apis(gateway)[before:] == ["chat.completions"]
