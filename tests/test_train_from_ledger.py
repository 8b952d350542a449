"""Feedback → retrain: logged requests with feedback become an outcome table, and decisions follow it."""

from __future__ import annotations

import io
import random
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from switchman import ModelSpec, RouteRequest
from switchman._exceptions import DatasetError
from switchman.cli._train import train_command
from switchman._tokens import count_tokens
from switchman.evaluate import ledger_records, outcomes_from_ledger
from switchman.learn import get_embedder, train_settings
from switchman.learn._artifact import TrainedRouter
from switchman.learn._strategy import LearnedStrategy
from switchman.ledger import Ledger, LedgerRecord
from switchman.routing import DecisionContext

CHEAP = ModelSpec("cheap-model", "local", 0.1, 0.2)
STRONG = ModelSpec("strong-model", "local", 10.0, 30.0)
_MATH = ("What is {a} times {b}? Show your working.", "Solve for x: {a}x + {b} = {c}.",
         "Compute the derivative of x^{a} + {b}x and simplify.", "Is {c} a prime number? Prove your answer.")
_GREETINGS = ("Hello! How are you doing today, {n}?", "Hi there, nice to meet you {n}.",
              "Good morning {n}! I hope you slept well.", "Hey {n}, how's it going?")
_NAMES = ("Alice", "Bob", "Carmen", "Deepak", "Elena", "Farid")
UNSEEN_MATH = ["Calculate the square root of 1764 and explain each step.",
               "How many prime numbers are there between 50 and 70?"]
UNSEEN_GREETINGS = ["Hello, good evening to you!", "Good afternoon Maria, hope you are well."]


def _logged_traffic(url: str, *, cheap_good_on: str, pairs: int = 40) -> None:
    """Both models serve both kinds; the strong one always gets 1, the cheap one only on one kind."""
    rng = random.Random(1)
    ledger = Ledger(url)
    scores: list[tuple[str, float]] = []
    now = time.time()
    for i in range(pairs * 2):
        kind = "math" if i % 2 == 0 else "greeting"
        prompt = (rng.choice(_MATH).format(a=rng.randint(2, 99), b=rng.randint(2, 99), c=rng.randint(100, 999))
                  if kind == "math" else rng.choice(_GREETINGS).format(n=rng.choice(_NAMES)))
        model = CHEAP if (i // 2) % 2 == 0 else STRONG
        tokens_in, tokens_out = 2 * len(prompt.split()), 50 if model is CHEAP else 80
        ledger.record(LedgerRecord(time=now, request_id=f"r{i}", model=model.name, prompt=prompt,
                                   input_tokens=tokens_in, output_tokens=tokens_out,
                                   cost_usd=model.cost(tokens_in, tokens_out)))
        good = model is STRONG or kind == cheap_good_on
        scores.append((f"r{i}", 1.0 if good else 0.0))
    ledger.record(LedgerRecord(time=now, request_id="unrated", model="cheap-model", prompt="Hi"))
    ledger.flush_sync()
    for request_id, score in scores:
        ledger.add_feedback(request_id, score)
    ledger.close_sync()


def _retrain(tmp_path: Path, cheap_good_on: str) -> LearnedStrategy:
    url = f"sqlite:///{tmp_path / cheap_good_on / 'ledger.sqlite3'}"
    _logged_traffic(url, cheap_good_on=cheap_good_on)
    trained = train_command(data=[], from_ledger=url, since="1d", out=tmp_path / cheap_good_on / "r.safetensors",
                            settings=train_settings(algorithm="knn", params=["k=10"]), console=Console(file=io.StringIO()))
    assert trained.summary["n_prompts"] == 80  # the unrated request is not a training row
    return LearnedStrategy(TrainedRouter.load(tmp_path / cheap_good_on / "r.safetensors"),
                           get_embedder(trained.embedder))


def _route(strategy: LearnedStrategy, prompt: str) -> str:
    request = RouteRequest.from_prompt(prompt, count_tokens=count_tokens)
    return strategy.decide(request, [CHEAP, STRONG], DecisionContext(route="default")).model


@pytest.mark.usefixtures("cache_dir")
def test_feedback_decides_where_the_cheap_model_is_used(tmp_path: Path) -> None:
    greetings_cheap = _retrain(tmp_path, cheap_good_on="greeting")
    math_cheap = _retrain(tmp_path, cheap_good_on="math")
    for prompt in UNSEEN_GREETINGS:
        assert _route(greetings_cheap, prompt) == "cheap-model"
        assert _route(math_cheap, prompt) == "strong-model"
    for prompt in UNSEEN_MATH:
        assert _route(greetings_cheap, prompt) == "strong-model"
        assert _route(math_cheap, prompt) == "cheap-model"


def _by_key(scores: dict[str, float]) -> dict[tuple[str, str | None], float]:
    """Scores as `Ledger.feedback_by_key` gives them, for requests made without a key."""
    return {(request_id, None): score for request_id, score in scores.items()}


def test_scores_by_request_id_alone_make_the_table_keyed_scores_make() -> None:
    """Both documented shapes: by request id (`Ledger.feedback_scores`) and by (request id, key id)."""
    records = [LedgerRecord(request_id="a", model="m1", prompt="x"), LedgerRecord(request_id="b", model="m1",
                                                                                   prompt="y", key_id="k")]
    by_id = outcomes_from_ledger(records, {"a": 1.0, "b": 0.5}, min_per_model=1)
    keyed = outcomes_from_ledger(records, {("a", None): 1.0, ("b", "k"): 0.5}, min_per_model=1)
    assert by_id.prompt_ids == keyed.prompt_ids == ("a", "b")
    assert by_id.quality.tolist() == keyed.quality.tolist() == [[1.0], [0.5]]


def test_a_score_by_request_id_alone_scores_each_keys_request_with_that_id() -> None:
    records = [LedgerRecord(request_id="job", model="m1", prompt="x", key_id="A"),
               LedgerRecord(request_id="job", model="m1", prompt="y", key_id="B")]
    table = outcomes_from_ledger(records, {"job": 0.25}, min_per_model=1)
    assert table.prompt_ids == ("job@A", "job@B") and table.quality.tolist() == [[0.25], [0.25]]


def test_ledger_records_gives_the_records_the_scores_by_request_id_and_the_url(tmp_path: Path) -> None:
    """`switchman.evaluate.ledger_records` keeps its three values; feedback=False leaves the scores unread."""
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    ledger = Ledger(url)
    ledger.record(LedgerRecord(time=time.time(), request_id="r1", model="m1", prompt="x"))
    ledger.flush_sync()
    ledger.add_feedback("r1", 0.75)
    ledger.close_sync()
    records, scores, shown = ledger_records(url, "1d")
    assert [rec.request_id for rec in records] == ["r1"] and scores == {"r1": 0.75} and shown.endswith("ledger.sqlite3")
    assert ledger_records(url, "1d", feedback=False)[1] == {}


def test_the_table_has_one_outcome_per_request() -> None:
    records = [
        LedgerRecord(request_id="a", model="m1", prompt="x", input_tokens=3, output_tokens=4, cost_usd=0.5),
        LedgerRecord(request_id="b", model="m1", prompt="y", input_tokens=5, output_tokens=6, cost_usd=0.7),
        LedgerRecord(request_id="c", model="m2", prompt="z"),  # one label only: m2 is left out
        LedgerRecord(request_id="d", model="m1", prompt="w", status="error"),
    ]
    table = outcomes_from_ledger(records, _by_key({"a": 0.9, "b": 1.5, "c": 1.0, "d": 1.0}))
    assert table.models == ("m1",) and table.prompt_ids == ("a", "b")
    assert table.quality[:, 0].tolist() == [0.9, 1.0]  # clipped to [0, 1]
    assert table.cost_usd[:, 0].tolist() == [0.5, 0.7]
    assert table.input_tokens[:, 0].tolist() == [3, 5]


def test_no_prompts_means_an_error_that_names_the_setting() -> None:
    records = [LedgerRecord(request_id="a", model="m1")]
    with pytest.raises(DatasetError, match="store_prompts: true"):
        outcomes_from_ledger(records, _by_key({"a": 1.0}))


def test_a_cascaded_requests_cost_is_not_taken_as_the_serving_models_price() -> None:
    records = [
        LedgerRecord(request_id="a", model="m1", prompt="x", input_tokens=3, output_tokens=4, cost_usd=0.5),
        # cost includes a rejected answer from a cheaper rung: not m1's price for these tokens
        LedgerRecord(request_id="b", model="m1", prompt="y", input_tokens=5, output_tokens=6, cost_usd=0.9,
                     strategy="cascade", fallback_chain=("m0", "m1")),
        LedgerRecord(request_id="c", model="m1", prompt="z", input_tokens=2, output_tokens=2, cost_usd=0.2,
                     strategy="cascade", fallback_chain=("m1",)),  # accepted on the first rung: its own price
    ]
    table = outcomes_from_ledger(records, _by_key({"a": 1.0, "b": 1.0, "c": 1.0}))
    cost = table.cost_usd[:, 0]
    assert cost[0] == 0.5 and np.isnan(cost[1]) and cost[2] == 0.2
    assert table.quality[:, 0].tolist() == [1.0, 1.0, 1.0]  # the outcome itself still counts


@pytest.mark.usefixtures("cache_dir")
def test_training_from_the_ledger_starts_from_the_bundled_router(tmp_path: Path) -> None:
    from switchman.learn import bundled_router

    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    _logged_traffic(url, cheap_good_on="greeting")
    out = tmp_path / "own.safetensors"
    # The command line's default for --from-ledger is the `ability` predictor, started from the bundled router.
    from typer.testing import CliRunner

    from switchman.cli import app

    result = CliRunner().invoke(app, ["train", "--from-ledger", url, "--since", "1d", "--out", str(out)])
    assert result.exit_code == 0, result.output
    trained = TrainedRouter.load(out)
    bundled = bundled_router()
    assert trained.algorithm == "ability" and trained.summary["started_from"] == "bundled"
    assert (trained.embedder, trained.window) == (bundled.embedder, bundled.window)
    # The prompt-difficulty heads (and so the ability scale) are the bundled router's; only the logged
    # models' abilities and the evidence of the logged prompts are new.
    assert trained.placement is not None and bundled.placement is not None
    np.testing.assert_array_equal(trained.placement.ability.w_easy, bundled.placement.ability.w_easy)
    np.testing.assert_array_equal(trained.placement.ability.w_slope, bundled.placement.ability.w_slope)
    abilities = trained.abilities()
    assert abilities["strong-model"] > abilities["cheap-model"]  # the feedback ranks them
    strategy = LearnedStrategy(TrainedRouter.load(out), get_embedder(trained.embedder))
    for prompt in UNSEEN_MATH:
        assert _route(strategy, prompt) == "strong-model"


def test_too_few_labels_per_model_is_said_as_such_not_as_no_labelled_request() -> None:
    """One labelled request with its prompt was reported as "no logged request has both a stored prompt and feedback"
    (and "0 with feedback but no prompt"): the user then looked for a missing setting instead of sending more."""
    records = [LedgerRecord(request_id="a", model="m1", prompt="x"), LedgerRecord(request_id="b", model="m2", prompt="y"),
               LedgerRecord(request_id="c", model="m1", prompt="z")]
    with pytest.raises(DatasetError) as info:
        outcomes_from_ledger(records, _by_key({"a": 1.0, "b": 0.0}))
    message = str(info.value)
    assert "no logged request has both" not in message and "store_prompts" not in message
    assert "2 labelled requests" in message and "m1 1" in message and "m2 1" in message, message


def test_too_few_labels_keeps_the_store_prompts_hint_when_feedback_lacks_prompts() -> None:
    """Some requests had feedback but no stored prompt: the "too few" message must still say how to keep prompts."""
    records = [LedgerRecord(request_id="a", model="m1", prompt="x"), LedgerRecord(request_id="b", model="m1"),
               LedgerRecord(request_id="c", model="m1")]
    with pytest.raises(DatasetError) as info:
        outcomes_from_ledger(records, _by_key({"a": 1.0, "b": 0.0, "c": 1.0}))
    message = str(info.value)
    assert "too few labelled requests" in message and "store_prompts" in message, message
    assert "2 with feedback had no stored prompt" in message, message
