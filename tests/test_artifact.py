"""The trained-router file: one safetensors file + JSON metadata, round-tripped; bad files rejected."""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from switchman import ArtifactError, DatasetError
from switchman.evaluate import OutcomeTable, concat_tables
from switchman.learn import get_embedder
from switchman.learn._artifact import FORMAT_NAME, FORMAT_VERSION, TrainedRouter
from switchman.learn._calibrate import parse_target
from switchman.learn._train import (
    TrainSettings,
    _best_single_model,
    fit_prices,
    train_router,
)

PROBES = [
    "Calculate the square root of 1764.",
    "Hello, good evening to you!",
    "What is 12 plus 30?",
    "Hi Bob, nice to see you.",
]
# safetensors dtypes of plain numbers: nothing else (no object/pickle payloads) may appear in the file.
NUMERIC_DTYPES = {"F16", "BF16", "F32", "F64", "I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64", "BOOL"}


def train(table: OutcomeTable, algorithm: str, **settings: object) -> TrainedRouter:
    return train_router(table, TrainSettings(embedder="hashing", algorithm=algorithm, **settings),  # type: ignore[arg-type]
                        use_cache=False)


def predictions(router: TrainedRouter) -> tuple[np.ndarray, np.ndarray]:
    embeddings = get_embedder(router.embedder).embed(router.texts(PROBES))
    return router.predict(router.features(embeddings, [None] * len(PROBES)))


@pytest.fixture(scope="module")
def routers(make_table: Callable[..., OutcomeTable]) -> dict[str, TrainedRouter]:
    table = make_table()
    return {algorithm: train(table, algorithm) for algorithm in ("ability", "knn", "mf", "ensemble")}


@pytest.mark.parametrize("algorithm", ["ability", "knn", "mf", "ensemble"])
def test_round_trip_keeps_predictions_and_everything_else(
    tmp_path: Path, routers: dict[str, TrainedRouter], algorithm: str
) -> None:
    original = routers[algorithm]
    loaded = TrainedRouter.load(original.save(tmp_path / "r.safetensors"))

    q0, out0 = predictions(original)
    q1, out1 = predictions(loaded)
    assert q0.shape == (len(PROBES), 2)
    # Every array is stored at the precision it was trained with: what eval measures in memory is
    # exactly what a served router file predicts.
    np.testing.assert_array_equal(q1, q0)
    np.testing.assert_array_equal(out1, out0)

    for field in ("embedder", "models", "algorithm", "focus", "task_vocabulary", "task_weight", "rule", "knob",
                  "target", "aliases", "prices", "summary", "window"):
        assert getattr(loaded, field) == getattr(original, field), field
    assert loaded.predictor.params() == original.predictor.params()
    assert loaded.training is not None and original.training is not None
    assert loaded.training.to_json() == original.training.to_json()
    assert np.array_equal(loaded.training.text_hashes, original.training.text_hashes)
    # The ability model that places unseen models survives the file too (its own, or the predictor itself).
    assert loaded.abilities() == original.abilities() and len(loaded.abilities()) == 2
    placed_q0, _ = original.predict_columns(original.features(get_embedder(original.embedder).embed(PROBES),
                                                              [None] * len(PROBES)), [1300.0])
    placed_q1, _ = loaded.predict_columns(loaded.features(get_embedder(loaded.embedder).embed(PROBES),
                                                          [None] * len(PROBES)), [1300.0])
    np.testing.assert_array_equal(placed_q1, placed_q0)

    # From the file on, the round trip is exact.
    again = TrainedRouter.load(loaded.save(tmp_path / "again.safetensors"))
    q2, out2 = predictions(again)
    assert np.array_equal(q2, q1) and np.array_equal(out2, out1)


def test_summary_and_prices_describe_the_training(routers: dict[str, TrainedRouter], make_table: Callable[..., OutcomeTable]) -> None:
    table = make_table()
    router = routers["knn"]
    assert router.models == ("cheap-model", "strong-model")
    assert router.summary["n_prompts"] == len(table)
    assert router.summary["best_model"] == "strong-model"  # quality 1.0 everywhere vs 0.5 on average
    assert router.summary["prompts_per_model"] == {"cheap-model": len(table), "strong-model": len(table)}
    assert router.target == "quality=0.95"
    # The synthetic costs were made from exact prices, so least squares recovers them.
    for name, (p_in, p_out) in {"cheap-model": (0.1, 0.2), "strong-model": (10.0, 30.0)}.items():
        assert router.prices[name] == pytest.approx((p_in, p_out), rel=1e-6)
    assert fit_prices(table) == router.prices


def test_the_trained_router_routes_by_cluster(routers: dict[str, TrainedRouter]) -> None:
    for algorithm, router in routers.items():
        quality, _ = predictions(router)
        cheap, strong = quality[:, 0], quality[:, 1]
        # math probes (0, 2): the cheap model fails; greeting probes (1, 3): it succeeds.
        assert cheap[0] < 0.5 and cheap[2] < 0.5, algorithm
        assert cheap[1] > 0.5 and cheap[3] > 0.5, algorithm
        assert np.all(strong > 0.5), algorithm


def test_task_features_round_trip(tmp_path: Path, make_table: Callable[..., OutcomeTable]) -> None:
    router = train(make_table(), "knn", use_task=True, task_weight=0.5)
    assert router.task_vocabulary == ("greeting", "math") and router.task_weight == 0.5
    loaded = TrainedRouter.load(router.save(tmp_path / "task.safetensors"))
    assert (loaded.task_vocabulary, loaded.task_weight) == (router.task_vocabulary, router.task_weight)
    embeddings = get_embedder("hashing").embed(PROBES)
    tasks = ["math", "greeting", "math", None]
    features = loaded.features(embeddings, tasks)
    assert features.shape == (len(PROBES), embeddings.shape[1] + 2)
    assert features[:, -2:].tolist() == [[0, 0.5], [0.5, 0], [0, 0.5], [0, 0]]
    np.testing.assert_array_equal(loaded.predict(features)[0], router.predict(features)[0])


def test_with_aliases_renames_models_and_survives_the_file(tmp_path: Path, routers: dict[str, TrainedRouter]) -> None:
    router = routers["knn"].with_aliases({"cheap-model": "budget"})
    assert router.models == ("cheap-model", "strong-model")  # trained names are kept
    assert router.model_names == ("budget", "strong-model")
    assert routers["knn"].model_names == ("cheap-model", "strong-model")  # the original is unchanged
    loaded = TrainedRouter.load(router.save(tmp_path / "aliased.safetensors"))
    assert loaded.model_names == ("budget", "strong-model")
    both = loaded.with_aliases({"strong-model": "premium"})
    assert both.model_names == ("budget", "premium")


def test_alias_for_an_unknown_model(routers: dict[str, TrainedRouter]) -> None:
    with pytest.raises(ArtifactError, match="gpt-99"):
        routers["knn"].with_aliases({"gpt-99": "budget"})


def test_too_few_prompts_to_train(make_table: Callable[..., OutcomeTable]) -> None:
    with pytest.raises(DatasetError, match="too few prompts"):
        train(make_table(pairs=2), "knn")


def test_best_single_model_is_taken_within_each_group_of_prompts() -> None:
    nan = np.nan
    quality = np.array([
        [1.0, 1.0, nan],  # group A (models 0 and 1): model 0 averages 1/3, model 1 averages 1
        [0.0, 1.0, nan],
        [0.0, 1.0, nan],
        [nan, nan, 0.5],  # group B (model 2 only): 0.4
        [nan, nan, 0.3],
    ])
    reference, column = _best_single_model(quality)
    assert reference == pytest.approx((3 * 1.0 + 2 * 0.4) / 5)
    assert column == 1  # the best model of the largest group
    complete = quality[:3, :2]
    reference, column = _best_single_model(complete)
    assert (reference, column) == (1.0, 1)


def test_training_on_tables_with_different_models(make_table: Callable[..., OutcomeTable]) -> None:
    a = make_table(seed=0)
    b = make_table(seed=1).rename_models({"cheap-model": "cheap-b", "strong-model": "strong-b"})
    b = dataclasses.replace(b, prompt_ids=tuple(f"b-{pid}" for pid in b.prompt_ids), source="other")
    both = concat_tables([a, b])
    assert not (~np.isnan(both.quality)).all(axis=1).any()  # no prompt has an outcome for every model
    router = train(both, "knn")
    calibration = router.summary["calibration"]
    # Each table's strong model scores 1.0 on all its prompts, so the reference quality is 1.0 and
    # "95% of it" is reachable by sending math to the strong models and greetings to the cheap ones.
    assert calibration["met"] is True
    # Calibrated for 0.95 minus the miss nested cross-validation measured on prompts left out.
    corrected = float(calibration["calibrated_for"][0].partition("=")[2])
    assert corrected == pytest.approx(0.95 - calibration["nested_bias"])
    assert calibration["quality"] >= corrected - 1e-6  # the recorded target has 6 significant digits
    assert calibration["rel_quality"] == pytest.approx(calibration["quality"])
    assert 0 < calibration["cost_per_1k"] < _always_strong_cost_per_1k(both)


def _always_strong_cost_per_1k(table: OutcomeTable) -> float:
    strong = [table.models.index(m) for m in ("strong-model", "strong-b")]
    return float(np.nanmax(table.cost_usd[:, strong], axis=1).mean() * 1000)


def test_calibration_target_is_recorded(make_table: Callable[..., OutcomeTable]) -> None:
    router = train(make_table(), "knn", targets=(parse_target("cost=0.05"),))
    assert router.target == "cost=0.05"
    assert router.summary["calibration"]["targets"] == ["cost=0.05"]
    assert router.summary["calibration"]["cost_per_1k"] <= 0.05


# --------------------------------------------------------------------------- the file format


def test_file_is_one_safetensors_file_with_versioned_json_metadata(
    tmp_path: Path, routers: dict[str, TrainedRouter]
) -> None:
    path = routers["ensemble"].save(tmp_path / "sub" / "r.safetensors")
    assert [p.name for p in path.parent.iterdir()] == ["r.safetensors"]  # one file, nothing beside it

    with safe_open(str(path), framework="numpy") as handle:
        metadata = handle.metadata()
        keys = set(handle.keys())
    meta = json.loads(metadata["switchman"])
    assert (meta["format"], meta["version"]) == (FORMAT_NAME, FORMAT_VERSION) == ("switchman-router", 2)
    assert meta["models"] == ["cheap-model", "strong-model"] and meta["algorithm"] == "ensemble"
    assert {"knn.x", "knn.quality", "knn.output_tokens", "mf.w", "mf.v", "mf.b"} <= keys

    # Read the layout by the safetensors spec: an 8-byte little-endian header size, a JSON header,
    # then raw tensor bytes. Every tensor is a plain numeric array and together they fill the file.
    raw = path.read_bytes()
    (header_size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_size])
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert set(tensors) == keys
    assert {t["dtype"] for t in tensors.values()} <= NUMERIC_DTYPES
    assert max(t["data_offsets"][1] for t in tensors.values()) == len(raw) - 8 - header_size


def test_an_ability_router_file_holds_no_per_prompt_text_label_or_embedding(
    tmp_path: Path, routers: dict[str, TrainedRouter], make_table: Callable[..., OutcomeTable]
) -> None:
    n_prompts = len(make_table())
    path = routers["ability"].save(tmp_path / "shippable.safetensors")
    with safe_open(str(path), framework="numpy") as handle:
        arrays = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 - not a dict
        meta = handle.metadata()["switchman"]
    # Only the two hash arrays (8 bytes per prompt, for eval's overlap check) have a row per prompt.
    per_prompt = sorted(k for k, v in arrays.items() if n_prompts in v.shape)
    assert per_prompt == ["training.id_hashes", "training.text_hashes"]
    assert all(arrays[k].dtype == np.uint64 for k in per_prompt)
    # Every cluster aggregates at least min_size prompts; no prompt text is in the metadata.
    evidence = routers["ability"].placement
    assert evidence is not None and evidence.evidence.sizes.min() >= evidence.evidence.min_size
    assert all(p not in meta for p in make_table().prompts)


def test_a_version_1_file_still_loads(tmp_path: Path, good_file: Path) -> None:
    def as_v1(meta: dict[str, Any]) -> None:
        meta.update(version=1, knob=0.5)
        for key in ("window", "placement", "training"):
            meta.pop(key)

    loaded = TrainedRouter.load(rewrite(good_file, tmp_path / "v1.safetensors", edit_meta=as_v1))
    assert loaded.knob.value == 0.5 and loaded.knob.alternate is None
    assert (loaded.window, loaded.placement, loaded.training) == (None, None, None)
    with pytest.raises(ArtifactError, match="no ability model"):
        loaded.predict_columns(np.zeros((1, 512), np.float32), [1300.0])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        TrainedRouter.load(tmp_path / "absent.safetensors")


@pytest.mark.parametrize("content", [b"", b"this is not a router file" * 10])
def test_garbage_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(content)
    with pytest.raises(ArtifactError, match="not a switchman router file"):
        TrainedRouter.load(path)


def test_truncated_file(tmp_path: Path, routers: dict[str, TrainedRouter]) -> None:
    path = routers["knn"].save(tmp_path / "r.safetensors")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ArtifactError, match="not a switchman router file"):
        TrainedRouter.load(path)


def test_safetensors_file_from_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    save_file({"layer.weight": np.zeros((2, 2), dtype=np.float32)}, str(path), metadata={"format": "pt"})
    with pytest.raises(ArtifactError, match="without switchman metadata"):
        TrainedRouter.load(path)


def rewrite(source: Path, target: Path, edit_meta: Callable[[dict[str, Any]], object] | None = None,
            raw_meta: str | None = None, drop: str | None = None) -> Path:
    """Copy a router file with its metadata or arrays changed."""
    with safe_open(str(source), framework="numpy") as handle:
        meta = json.loads(handle.metadata()["switchman"])
        arrays = {k: handle.get_tensor(k) for k in handle.keys() if k != drop}  # noqa: SIM118 - not a dict
    if edit_meta is not None:
        edit_meta(meta)
    save_file(arrays, str(target), metadata={"switchman": raw_meta if raw_meta is not None else json.dumps(meta)})
    return target


@pytest.fixture
def good_file(tmp_path: Path, routers: dict[str, TrainedRouter]) -> Path:
    return routers["knn"].save(tmp_path / "good.safetensors")


def test_unsupported_version(tmp_path: Path, good_file: Path) -> None:
    path = rewrite(good_file, tmp_path / "v99.safetensors", edit_meta=lambda m: m.update(version=99))
    with pytest.raises(ArtifactError, match="version 99 is not supported") as info:
        TrainedRouter.load(path)
    assert str(path) in str(info.value) and "retrain" in str(info.value)


def test_other_format_name(tmp_path: Path, good_file: Path) -> None:
    path = rewrite(good_file, tmp_path / "fmt.safetensors", edit_meta=lambda m: m.update(format="other-router"))
    with pytest.raises(ArtifactError, match="other-router"):
        TrainedRouter.load(path)


def test_missing_array(tmp_path: Path, good_file: Path) -> None:
    path = rewrite(good_file, tmp_path / "noarray.safetensors", drop="knn.quality")
    with pytest.raises(ArtifactError, match="missing 'knn.quality'"):
        TrainedRouter.load(path)


@pytest.mark.parametrize(
    ("raw_meta", "edit", "message"),
    [
        ('{"format": "switchman-router", "vers', None, "not valid JSON"),
        ("[1, 2, 3]", None, "not a JSON object"),
        (None, lambda m: m.pop("embedder"), "missing 'embedder'"),
        (None, lambda m: m.update(knob="fast"), "malformed"),
        (None, lambda m: m.update(algorithm="forest"), "unknown algorithm 'forest'"),
    ],
)
def test_corrupted_metadata(tmp_path: Path, good_file: Path, raw_meta: str | None, edit: Callable[[dict[str, Any]], object] | None, message: str) -> None:
    path = rewrite(good_file, tmp_path / "bad.safetensors", edit_meta=edit, raw_meta=raw_meta)
    with pytest.raises(ArtifactError, match=message) as info:
        TrainedRouter.load(path)
    assert str(path) in str(info.value)
