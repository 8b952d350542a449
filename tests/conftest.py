"""Shared fixtures: the real outcome data, a private embedding cache, and a small trained router.

The synthetic "math vs greeting" outcome table is built so the right routing is known by
construction: only the expensive model solves math prompts, both models answer greetings.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from switchman.evaluate import OutcomeTable
from switchman.learn._artifact import TrainedRouter
from switchman.learn._train import TrainSettings, train_router

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Set by .ci/run: CI has the data, PostgreSQL and the local model, so a skip there hides a failure.
STRICT_SKIPS_ENV = "SWITCHMAN_STRICT_SKIPS"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under SWITCHMAN_STRICT_SKIPS=1 a skipped test fails, naming why it would have skipped."""
    report = yield
    if os.environ.get(STRICT_SKIPS_ENV) == "1" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under {STRICT_SKIPS_ENV}=1 (CI has every part this test needs): {reason}"
    return report


@pytest.fixture(scope="session", autouse=True)
def private_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """HOME and XDG_STATE_HOME in a temporary folder for the whole run, set before any module or session fixture
    builds a gateway: one given an `env` without XDG_STATE_HOME spills its ledger under Path.home() (which follows
    $HOME), and a module's gateway closes after each test's own folder (`private_state_home`) is put back."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        patch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
        yield home


CHEAP, STRONG = "cheap-model", "strong-model"
#: (input, output) USD per 1M tokens of the synthetic models.
SYNTHETIC_PRICES = {CHEAP: (0.1, 0.2), STRONG: (10.0, 30.0)}
_MATH = (
    "What is {a} times {b}? Show your working.",
    "Solve for x: {a}x + {b} = {c}.",
    "Compute the derivative of x^{a} + {b}x and simplify.",
    "Find the integral of {a}x^2 from 0 to {b}.",
    "Is {c} a prime number? Prove your answer.",
    "What is the remainder when {c} is divided by {a}?",
)
_GREETINGS = (
    "Hello! How are you doing today, {n}?",
    "Hi there, nice to meet you {n}.",
    "Good morning {n}! I hope you slept well.",
    "Hey {n}, how's it going?",
    "Greetings, my friend {n}! Have a lovely day.",
    "Good evening {n}, lovely to see you again.",
)
_NAMES = ("Alice", "Bob", "Carmen", "Deepak", "Elena", "Farid", "Grace", "Hiro")


def _math_greeting_table(pairs: int = 30, seed: int = 0) -> OutcomeTable:
    rng = random.Random(seed)
    prompts: list[str] = []
    tasks: list[str] = []
    quality: list[list[float]] = []
    for _ in range(pairs):
        prompts.append(rng.choice(_MATH).format(a=rng.randint(2, 99), b=rng.randint(2, 99), c=rng.randint(100, 999)))
        tasks.append("math")
        quality.append([0.0, 1.0])  # [cheap, strong]: only the strong model solves math
        prompts.append(rng.choice(_GREETINGS).format(n=rng.choice(_NAMES)))
        tasks.append("greeting")
        quality.append([1.0, 1.0])  # both answer a greeting well
    models = (CHEAP, STRONG)
    n = len(prompts)
    input_tokens = np.array([[2.0 * len(p.split())] * 2 for p in prompts])
    output_tokens = np.tile([[50.0, 80.0]], (n, 1))
    prices = np.array([SYNTHETIC_PRICES[m] for m in models])
    cost = (input_tokens * prices[:, 0] + output_tokens * prices[:, 1]) / 1e6
    return OutcomeTable(
        prompt_ids=tuple(f"p{i}" for i in range(n)), prompts=tuple(prompts), tasks=tuple(tasks),
        splits=("train",) * n, models=models,
        quality=np.array(quality), input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost,
        source="synthetic",
    )


@pytest.fixture(autouse=True)
def private_state_home(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """XDG_STATE_HOME and HOME in temporary folders of each test's own (inside `private_home`'s for the run): an SDK
    router or gateway that spills its ledger at shutdown (a test's database taken away) never replays another test's
    rows. HOME too, because a gateway reads the `env` it is given, and one given no XDG_STATE_HOME falls back on
    Path.home() (which follows $HOME)."""
    state = tmp_path_factory.mktemp("xdg-state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    return state


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (RouterBench and AlpacaEval 2 outcome tables), or skip."""
    if not (DATA_DIR / "routerbench" / "outcomes.csv.gz").is_file():
        pytest.skip(f"real outcome data not found at {DATA_DIR} (the repository's sibling ../shared/data)")
    return DATA_DIR


@pytest.fixture(scope="session")
def embedding_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A per-session temporary folder for SWITCHMAN_CACHE_DIR (the user's cache is never touched)."""
    return tmp_path_factory.mktemp("embedding-cache")


@pytest.fixture
def cache_dir(monkeypatch: pytest.MonkeyPatch, embedding_cache_dir: Path) -> Path:
    """SWITCHMAN_CACHE_DIR set to the session's temporary cache for this test."""
    monkeypatch.setenv("SWITCHMAN_CACHE_DIR", str(embedding_cache_dir))
    return embedding_cache_dir


@pytest.fixture(scope="session")
def math_greeting_table() -> OutcomeTable:
    """60 prompts: 30 math (only the strong model solves them), 30 greetings (both do)."""
    return _math_greeting_table()


@pytest.fixture(scope="session")
def make_table() -> Callable[..., OutcomeTable]:
    """Builder of synthetic math/greeting tables: make_table(pairs=30, seed=0)."""
    return _math_greeting_table


@pytest.fixture(scope="session")
def math_greeting_router(math_greeting_table: OutcomeTable) -> TrainedRouter:
    """A kNN router (wordllama-256) trained on the synthetic table, without the embedding cache."""
    settings = TrainSettings(embedder="wordllama-256", algorithm="knn", params={"k": 10})
    return train_router(math_greeting_table, settings, use_cache=False)
