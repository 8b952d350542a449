"""The bundled router: small, parameters and aggregates only, with its NOTICE, and able to place any scored model."""

from __future__ import annotations

from importlib import resources

import numpy as np
from safetensors import safe_open

from switchman.learn import AbilityPredictor, bundled_notice, bundled_router, get_embedder


def test_the_bundled_router_ships_parameters_and_aggregates_only() -> None:
    path = resources.files("switchman.learn").joinpath("data/router.safetensors")
    with resources.as_file(path) as file:
        assert file.stat().st_size < 10 * 1024 * 1024
        with safe_open(str(file), framework="numpy") as handle:
            arrays = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 - not a dict
    router = bundled_router()
    assert router.algorithm == "ability" and isinstance(router.predictor, AbilityPredictor)
    assert router.training is not None and router.summary["name"] == "bundled"
    n = router.training.n_prompts
    assert n == 3164 + 805  # every prompt of both datasets (data README)
    assert not any(k.startswith("knn.") for k in arrays)  # no stored training features or labels
    per_prompt = sorted(k for k, v in arrays.items() if n in v.shape)
    assert per_prompt == ["training.id_hashes", "training.text_hashes"]
    evidence = router.predictor.evidence
    assert evidence.sizes.min() >= evidence.min_size >= 5  # every aggregate covers at least 5 prompts
    assert len(evidence.centroids) < n / 5


def test_the_notice_names_the_training_data_and_their_licences() -> None:
    notice = bundled_notice()
    assert "RouterBench" in notice and "none declared" in notice
    assert "AlpacaEval" in notice and "CC BY-NC 4.0" in notice
    assert "LMArena" in notice and "2025-12-11" in notice


def test_it_places_models_by_score_alone() -> None:
    router = bundled_router()
    x = router.features(get_embedder(router.embedder).embed(router.texts(["Prove that 2 is prime."])), [None])
    quality, output = router.predict_columns(x, [1100.0, 1300.0, 1450.0])
    assert quality.shape == (1, 3) and np.all(np.diff(quality[0]) > 0)  # more ability, more quality
    assert np.all(output > 0)


def test_it_was_built_by_the_current_recipe() -> None:
    # The calibration's nested correction is the shrunk one, and the public scores are stored, so a
    # router trained from it (`train --from-ledger`) measures its placement offset against them.
    from switchman.learn import ScoreTable, model_z
    from switchman.learn._train import shrunk_bias

    router = bundled_router()
    cal = router.summary["calibration"]
    assert cal["nested_bias"] == shrunk_bias(cal["nested_miss"], cal["nested_miss_se"])
    assert cal["calibrated_for"] == [f"quality={0.95 - cal['nested_bias']:g}"]
    placement = router.placement
    assert placement is not None and placement.public_z is not None
    np.testing.assert_allclose(placement.public_z, model_z(router.models, ScoreTable.bundled()), atol=1e-5)
    shares = placement.evidence.shares  # each cluster weighted by the prompts it stands for (route calibration)
    assert shares is not None and len(shares) == len(placement.evidence.centroids)
    assert int(shares.sum()) == router.summary["n_prompts"]
