"""Training from a prior router (the bundled one): models placed by score keep the offset of the public scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from switchman.evaluate import load_data
from switchman.learn import SCORE_CENTER, SCORE_SCALE, AbilityPredictor, TrainSettings, bundled_router, train_router
from switchman.learn._artifact import TrainedRouter
from switchman.learn._scores import ScoreTable
from switchman.learn._train import model_z


@pytest.mark.usefixtures("cache_dir")
def test_a_router_trained_from_the_bundled_one_measures_its_offset_against_public_scores(
        shared_data: Path, tmp_path: Path) -> None:
    prior = bundled_router()
    assert prior.placement is not None
    table = load_data([shared_data / "routerbench"], split="train")
    table = table.subset(np.arange(60))  # a handful of labelled prompts, as a user's feedback would be
    settings = TrainSettings(algorithm="ability", embedder=prior.embedder, window=prior.window)
    trained = train_router(table, settings, prior=prior)
    placement = trained.placement
    assert isinstance(placement, AbilityPredictor) and placement is trained.predictor
    # The fit was tied to the prior's abilities for the models it knows (all 11 here) ...
    known = prior.abilities()
    np.testing.assert_allclose(placement.z, [(known[m] - SCORE_CENTER) / SCORE_SCALE for m in table.models],
                               atol=1e-5)
    # ... but the offset a placed model gets is the median residual against the public scores.
    public = model_z(table.models, ScoreTable.bundled())
    scored = ~np.isnan(public)
    assert scored.sum() >= 8
    expected = float(np.median(placement.ability.theta[scored] - public[scored]))
    against_prior = float(np.median(placement.ability.theta[scored] - placement.z[scored]))
    assert abs(expected - against_prior) > 0.05  # the two differ, so this test tells them apart
    assert placement.score_offset == pytest.approx(expected, abs=1e-5)
    # The summary records the public scores, not the prior's abilities.
    assert trained.summary["public_scores"] == pytest.approx(
        {m: (None if np.isnan(z) else SCORE_CENTER + SCORE_SCALE * z) for m, z in zip(table.models, public,
                                                                                     strict=True)})
    # Saved and loaded, a model placed by score is predicted with that offset.
    loaded = TrainedRouter.load(trained.save(tmp_path / "own.safetensors"))
    assert loaded.placement is not None
    assert loaded.placement.score_offset == pytest.approx(expected, abs=1e-5)
    x = np.zeros((1, placement.ability.w_easy.shape[0]), np.float32)
    quality, _ = loaded.predict_columns(x, [1300.0])
    shifted = placement.ability.predict(x, np.array([(1300.0 - SCORE_CENTER) / SCORE_SCALE + expected], np.float32))
    np.testing.assert_allclose(quality, shifted, rtol=1e-5)
