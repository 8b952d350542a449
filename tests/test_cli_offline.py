"""End to end through the command line: `switchman train`, `switchman eval`, `switchman models`.

Runs on slices of ../shared/data/routerbench (the MBPP task: 299 train / 128 test prompts, 11 models).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from switchman.cli import app
from switchman.evaluate import load_outcomes
from switchman.learn._artifact import TrainedRouter

ROUTERBENCH_MODELS = {
    "gpt-4-1106-preview", "gpt-3.5-turbo-1106", "claude-v1", "claude-v2", "claude-instant-v1",
    "meta/llama-2-70b-chat", "mistralai/mixtral-8x7b-chat", "zero-one-ai/Yi-34B-Chat",
    "meta/code-llama-instruct-34b-chat", "mistralai/mistral-7b-chat", "WizardLM/WizardLM-13B-V1.2",
}  # as listed in ../shared/data/README.md
ROUTER_KEYS = {"quality", "cost_per_1k", "rel_quality", "rel_cost", "aiq", "savings_at_95", "savings_at_100",
               "calibrated", "apgr", "cpt50", "cpt80", "frontier"}
CALIBRATED_KEYS = {"target", "quality", "rel_quality", "rel_cost"}
STRONG, WEAK = "gpt-4-1106-preview", "mistralai/mistral-7b-chat"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def invoke(args: Sequence[str | Path], cache: Path) -> Result:
    # A wide terminal so Rich does not wrap names and messages; a private embedding cache.
    env = {"COLUMNS": "200", "SWITCHMAN_CACHE_DIR": str(cache)}
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def routerbench(shared_data: Path) -> Path:
    return shared_data / "routerbench"


@pytest.fixture(scope="module")
def mbpp_router(routerbench: Path, tmp_path_factory: pytest.TempPathFactory, embedding_cache_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("cli") / "mbpp.safetensors"
    result = ok(invoke(["train", "--data", routerbench, "--task", "mbpp", "--out", out], embedding_cache_dir))
    assert str(out) in flat(result.stdout)
    return out


@pytest.fixture(scope="module")
def mbpp_test_quality(routerbench: Path) -> dict[str, float]:
    """Each model's mean quality on the MBPP test prompts, straight from the data."""
    table = load_outcomes(routerbench).where_task("mbpp").where_split("test").complete()
    return {m: float(table.quality[:, j].mean()) for j, m in enumerate(table.models)}


def test_train_writes_a_router_file(mbpp_router: Path) -> None:
    trained = TrainedRouter.load(mbpp_router)
    assert set(trained.models) == ROUTERBENCH_MODELS
    assert trained.summary["n_prompts"] == 299  # MBPP train prompts, per the data README
    assert trained.summary["tasks"] == ["mbpp"]
    assert trained.summary["calibration"]["targets"] == ["quality=0.95"]  # the documented default target


@pytest.fixture(scope="module")
def report(
    mbpp_router: Path, routerbench: Path, tmp_path_factory: pytest.TempPathFactory, embedding_cache_dir: Path
) -> tuple[dict[str, Any], Path, Result]:
    folder = tmp_path_factory.mktemp("eval")
    json_path, png_path = folder / "out.json", folder / "out.png"
    result = ok(invoke(["eval", "--data", routerbench, "--task", "mbpp", "--router", mbpp_router,
                        "--strategy", "cheapest", "--json", json_path, "--plot", png_path], embedding_cache_dir))
    return json.loads(json_path.read_text()), png_path, result


def test_eval_json_has_every_key_the_issue_lists(report: tuple[dict[str, Any], Path, Result],
                                                 mbpp_test_quality: dict[str, float]) -> None:
    data, _, _ = report
    assert {"n_prompts", "best_model", "routers", "baselines"} <= set(data)
    assert data["n_prompts"] == 128  # MBPP test prompts, per the data README
    assert data["best_model"] == max(mbpp_test_quality, key=mbpp_test_quality.__getitem__)
    assert set(data["routers"]) == {"mbpp", "cheapest"}
    for name, entry in data["routers"].items():
        assert ROUTER_KEYS <= set(entry), name
    calibrated = data["routers"]["mbpp"]["calibrated"]
    assert CALIBRATED_KEYS <= set(calibrated)
    assert calibrated["target"] == "quality=0.95"


def test_eval_numbers_are_consistent(report: tuple[dict[str, Any], Path, Result],
                                     mbpp_test_quality: dict[str, float]) -> None:
    data, _, _ = report
    router = data["routers"]["mbpp"]
    best = mbpp_test_quality[data["best_model"]]
    assert router["rel_quality"] == pytest.approx(router["quality"] / best)
    assert 0.0 <= router["quality"] <= 1.0 and router["cost_per_1k"] > 0
    assert 0.0 < router["aiq"] <= 1.0
    frontier = np.array(router["frontier"])
    assert frontier.ndim == 2 and frontier.shape[1] == 2 and len(frontier) >= 2
    assert np.all(np.diff(frontier[:, 0]) >= 0)  # cost ascending along the frontier
    # Eleven models: the two-model metrics do not apply.
    assert (router["apgr"], router["cpt50"], router["cpt80"]) == (None, None, None)

    # `cheapest` always picks mistral-7b ($0.2/$0.2 per 1M, the lowest price on both sides), so it
    # must score exactly that model's single-model baseline.
    cheapest = data["routers"]["cheapest"]
    assert cheapest["quality"] == pytest.approx(mbpp_test_quality[WEAK])
    assert cheapest["quality"] == pytest.approx(data["baselines"][f"model:{WEAK}"]["quality"])
    assert cheapest["aiq"] is None and cheapest["frontier"] == []


def test_eval_baselines(report: tuple[dict[str, Any], Path, Result], mbpp_test_quality: dict[str, float]) -> None:
    baselines = report[0]["baselines"]
    for model in ROUTERBENCH_MODELS:
        assert baselines[f"model:{model}"]["quality"] == pytest.approx(mbpp_test_quality[model])
    assert {"oracle", "random", "single_model_hull"} <= set(baselines)
    # The oracle takes the best answer on every prompt, so it beats every single model.
    assert baselines["oracle"]["quality"] >= max(mbpp_test_quality.values())
    assert min(mbpp_test_quality.values()) <= baselines["random"]["quality"] <= max(mbpp_test_quality.values())


def test_eval_plot_is_a_png(report: tuple[dict[str, Any], Path, Result]) -> None:
    png = report[1]
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert png.stat().st_size > 1_000


def test_eval_prints_a_table(report: tuple[dict[str, Any], Path, Result]) -> None:
    out = report[2].stdout
    assert "128 prompts" in out and "oracle" in out and "cheapest" in out


def test_eval_at_80_columns_and_piped_keeps_every_number(
    mbpp_router: Path, routerbench: Path, tmp_path: Path, embedding_cache_dir: Path
) -> None:
    json_path = tmp_path / "narrow.json"
    env = {"COLUMNS": "80", "SWITCHMAN_CACHE_DIR": str(embedding_cache_dir)}
    result = ok(CliRunner().invoke(app, ["eval", "--data", str(routerbench), "--task", "mbpp", "--router",
                                         str(mbpp_router), "--strategy", "cheapest", "--json", str(json_path)],
                                   env=env))
    out = result.stdout
    assert "…" not in out
    data = json.loads(json_path.read_text())
    for entry in data["routers"].values():
        assert f"{entry['quality']:.4f}" in out and f"{entry['cost_per_1k']:.4f}" in out
    for name, entry in data["baselines"].items():
        if name.startswith("model:"):
            assert f"{entry['quality']:.4f}" in out
    assert "cheapest (=" in out and out.count("mistral-7b-chat") == 1  # one row, not two equal ones
    assert "AIQ:" in out and "saved @95%" in out


def test_two_model_eval_reports_apgr_and_cpt(
    mbpp_router: Path, routerbench: Path, tmp_path: Path, embedding_cache_dir: Path
) -> None:
    json_path = tmp_path / "pair.json"
    ok(invoke(["eval", "--data", routerbench, "--task", "mbpp", "--models", f"{STRONG},{WEAK}",
               "--router", mbpp_router, "--json", json_path], embedding_cache_dir))
    data = json.loads(json_path.read_text())
    entry = data["routers"]["mbpp"]
    for key in ("apgr", "cpt50", "cpt80"):
        assert entry[key] is not None and 0.0 <= entry[key] <= 1.0, key
    # Reaching 80% of the quality gap cannot take fewer strong calls than reaching 50% of it.
    assert entry["cpt80"] >= entry["cpt50"]
    assert {k for k in data["baselines"] if k.startswith("model:")} == {f"model:{STRONG}", f"model:{WEAK}"}


def test_cross_validated_learned_strategy(routerbench: Path, tmp_path: Path, embedding_cache_dir: Path) -> None:
    json_path = tmp_path / "cv.json"
    ok(invoke(["eval", "--data", routerbench, "--task", "mbpp", "--cv", "3", "--strategy", "learned",
               "--json", json_path], embedding_cache_dir))
    data = json.loads(json_path.read_text())
    assert data["n_prompts"] == 299 + 128  # with --cv every split of the task takes part
    entry = data["routers"]["learned-cv3"]
    assert ROUTER_KEYS <= set(entry)
    assert 0.0 < entry["quality"] <= 1.0
    assert entry["calibrated"]["target"] == "quality=0.95"


def test_models_command_prints_the_catalog(tmp_path: Path, embedding_cache_dir: Path) -> None:
    config = tmp_path / "switchman.yaml"
    config.write_text(
        "models:\n"
        "  gpt-4o-mini: {provider: openai}\n"
        "  house-model: {provider: local, input_price: 0.05, output_price: 0.1, context_window: 8192}\n"
    )
    out = ok(invoke(["models", "--config", config], embedding_cache_dir)).stdout
    assert "gpt-4o-mini" in out and "house-model" in out
    assert "8,192" in out and "128,000" in out  # context windows: configured, and from genai-prices


# --------------------------------------------------------------------------- bad inputs → exit code 2


def test_missing_data_folder(tmp_path: Path, embedding_cache_dir: Path) -> None:
    missing = tmp_path / "no-such-data"
    result = invoke(["train", "--data", missing, "--out", tmp_path / "r.safetensors"], embedding_cache_dir)
    assert result.exit_code == 2
    assert str(missing) in flat(result.stderr) and "no such directory" in result.stderr
    assert not (tmp_path / "r.safetensors").exists()


def test_nonsense_target(tmp_path: Path, embedding_cache_dir: Path) -> None:
    # Targets are checked before any data is read, so no data folder is needed.
    result = invoke(["train", "--data", tmp_path, "--target", "nonsense", "--out", tmp_path / "r.safetensors"],
                    embedding_cache_dir)
    assert result.exit_code == 2
    assert "bad target 'nonsense'" in flat(result.stderr)


def test_unknown_model(routerbench: Path, embedding_cache_dir: Path) -> None:
    result = invoke(["eval", "--data", routerbench, "--models", "unknown", "--strategy", "cheapest"],
                    embedding_cache_dir)
    assert result.exit_code == 2
    message = flat(result.stderr)
    assert "unknown model(s) 'unknown'" in message and STRONG in message  # names what is there


def test_eval_needs_a_router_or_a_strategy(routerbench: Path, embedding_cache_dir: Path) -> None:
    result = invoke(["eval", "--data", routerbench], embedding_cache_dir)
    assert result.exit_code == 2
    assert "--router" in result.stderr and "--strategy" in result.stderr


def test_bad_config_for_models(tmp_path: Path, embedding_cache_dir: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("models:\n  mystery-llm: {provider: local}\n")
    result = invoke(["models", "--config", config], embedding_cache_dir)
    assert result.exit_code == 2
    assert "mystery-llm" in flat(result.stderr)


# --------------------------------------------------------------------------- both datasets, one router


def test_one_router_trained_on_both_datasets(shared_data: Path, tmp_path: Path, embedding_cache_dir: Path) -> None:
    routerbench, alpaca = shared_data / "routerbench", shared_data / "alpacaeval2"
    if not (alpaca / "outcomes.csv.gz").is_file():
        pytest.skip(f"AlpacaEval 2 outcome data not found at {alpaca}")
    out = tmp_path / "both.safetensors"
    ok(invoke(["train", "--data", routerbench, "--data", alpaca, "--out", out], embedding_cache_dir))
    trained = TrainedRouter.load(out)
    assert ROUTERBENCH_MODELS <= set(trained.models)
    assert "FuseChat-Gemma-2-9B-Instruct" in trained.models
    assert trained.summary["n_prompts"] == 2218 + 563  # train splits, per the data README
    calibration = trained.summary["calibration"]
    # No prompt has an outcome for every one of the models (each dataset has its own), and the
    # calibration must still score real numbers, not NaN.
    assert np.isfinite([calibration["quality"], calibration["rel_quality"], calibration["cost_per_1k"]]).all()
    assert calibration["met"] is True and calibration["rel_quality"] >= 0.95

    for data, name in ((routerbench, "routerbench"), (alpaca, "alpaca")):
        json_path = tmp_path / f"{name}.json"
        ok(invoke(["eval", "--data", data, "--router", out, "--json", json_path], embedding_cache_dir))
        entry = json.loads(json_path.read_text())["routers"]["both"]
        assert 0.0 < entry["quality"] <= 1.0 and entry["cost_per_1k"] > 0
