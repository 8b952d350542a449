"""The ability model and the centroid evidence, on synthetic outcomes whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest

from switchman.learn import AbilityModel, AbilityPredictor
from switchman.learn._centroids import CentroidEvidence


def _synthetic(seed: int = 0, n: int = 1200, d: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prompts with an easiness that depends on their features; five models of abilities −1.5 … +1.5."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    easy = 3.0 * x[:, 0]  # the first feature says how easy a prompt is
    theta = np.array([-1.5, -0.5, 0.0, 0.5, 1.5])
    p = 1 / (1 + np.exp(-(easy[:, None] + 1.2 * theta[None, :])))
    return x, (rng.random(p.shape) < p).astype(float), theta


def test_abilities_tied_to_scores_are_recovered_and_an_unseen_model_is_placed_between_its_neighbours() -> None:
    x, quality, theta = _synthetic()
    z = theta.copy()
    z[2] = np.nan  # the middle model has no public score: its ability comes from its outcomes
    model = AbilityModel().fit(x, quality, z)
    assert np.all(np.diff(model.theta) > 0)  # the order of the true abilities
    assert -0.5 < model.theta[2] < 0.5  # the unscored model lands where its outcomes put it
    easy, slope = model.heads(x)
    assert np.corrcoef(easy, x[:, 0])[0, 1] > 0.9 and slope.mean() > 0
    # A model never seen, of ability 1.0: predicted between the trained models of abilities 0.5 and 1.5,
    # prompt by prompt, and with a mean close to what the generating model gives it.
    unseen = model.predict(x, np.array([1.0], np.float32))[:, 0]
    trained = model.predict(x, model.theta)
    assert np.all(trained[:, 3] <= unseen + 1e-6) and np.all(unseen <= trained[:, 4] + 1e-6)
    truth = 1 / (1 + np.exp(-(3.0 * x[:, 0] + 1.2)))
    assert abs(float(unseen.mean()) - float(truth.mean())) < 0.05


def test_an_odd_model_does_not_bend_the_scale_for_the_others() -> None:
    # Model 3 is scored as strong but fails everything (a model refusing the benchmark's format): its
    # penalised residual absorbs it, so an unseen strong model is still predicted strong.
    x, quality, theta = _synthetic(seed=1)
    quality[:, 3] = 0.0
    model = AbilityModel().fit(x, quality, theta)
    assert model.theta[3] < model.theta[1]  # the odd model's own ability follows its outcomes
    strong = model.predict(x, np.array([1.5], np.float32))[:, 0].mean()
    assert strong > quality[:, 4].mean() - 0.1


def test_fixed_heads_fit_only_the_abilities() -> None:
    x, quality, theta = _synthetic(seed=2)
    prior = AbilityModel().fit(x, quality, theta)
    few = AbilityModel(w_easy=prior.w_easy.copy(), w_slope=prior.w_slope.copy(), bias=prior.bias.copy())
    few.fit(x[:80], quality[:80, [0, 4]], np.array([np.nan, np.nan]), fixed_heads=True)
    np.testing.assert_array_equal(few.w_easy, prior.w_easy)
    np.testing.assert_array_equal(few.w_slope, prior.w_slope)
    assert few.theta[1] > few.theta[0] + 1.0  # 80 labelled prompts place the two models far apart


def test_centroid_evidence_holds_aggregates_of_at_least_min_size_prompts() -> None:
    x, quality, _ = _synthetic(seed=3, n=300)
    output = np.tile(np.arange(5, dtype=float) * 10 + 10, (len(x), 1))
    quality[:, 4] = np.nan  # a model with no outcomes at all
    evidence = CentroidEvidence(clusters=64, min_size=5).fit(x, quality, output)
    assert evidence.sizes.min() >= 5 and len(evidence.centroids) <= 60
    assert np.all(evidence.counts[:, 4] == 0)
    prior_q = np.full((len(x), 5), 0.42)
    prior_out = np.full((len(x), 5), 7.0)
    q, out = evidence.predict(x, prior_q, prior_out)
    np.testing.assert_allclose(q[:, 4], 0.42)  # no evidence: exactly the prior
    np.testing.assert_allclose(out[:, 4], 7.0)
    # Evidence outweighs a weak prior: model 0's outputs are always 10 tokens.
    assert np.all(np.abs(out[:, 0] - 10.0) < 1.0)
    assert np.corrcoef(q[:, 0], x[:, 0])[0, 1] > 0.5  # easy prompts' neighbourhoods score higher


def test_the_ability_predictor_places_models_it_never_saw() -> None:
    x, quality, theta = _synthetic(seed=4, n=600)
    output = np.tile([20.0, 40.0, 60.0, 80.0, 100.0], (len(x), 1))
    predictor = AbilityPredictor().fit(x, quality, output, z=theta)
    q_known, out_known = predictor.predict_with_lengths(x)
    assert q_known.shape == (len(x), 5) and np.all((q_known >= 0) & (q_known <= 1))
    q_new, out_new = predictor.predict_placed(x, [1.4])
    assert float(q_new.mean()) > float(q_known[:, 2].mean())
    # Its output length is that of the trained model nearest in ability (1.5: 100 tokens).
    assert out_new[:, 0].mean() == pytest.approx(100.0, rel=0.05)


def test_a_placed_model_is_shifted_by_the_median_residual_of_the_scored_ones() -> None:
    x, quality, theta = _synthetic(seed=5, n=600)
    output = np.tile([20.0, 40.0, 60.0, 80.0, 100.0], (len(x), 1))
    z = theta.copy()
    z[4] = 0.5  # the best model's public score undersells it by a whole unit
    z[0] = np.nan  # an unscored model does not count toward the offset
    predictor = AbilityPredictor().fit(x, quality, output, z=z)
    scored = ~np.isnan(z)
    residuals = predictor.ability.theta[scored] - z[scored]
    assert predictor.score_offset == pytest.approx(float(np.median(residuals)), abs=1e-6)
    q_new, _ = predictor.predict_placed(x, [0.7])
    expected = predictor.ability.predict(x, np.array([0.7 + predictor.score_offset], np.float32))
    np.testing.assert_allclose(q_new, expected, rtol=1e-5)
    unscored = AbilityPredictor().fit(x, quality, output)  # no public scores: nothing to shift by
    assert unscored.score_offset == 0.0


def test_the_offset_is_measured_against_public_scores_when_the_fit_is_tied_to_a_prior() -> None:
    # Training from a prior router ties each model to the prior's fitted ability (`z`), which sits a
    # whole unit above the public score here; the placement offset must be the residual against the
    # public score (≈ +1), not against what the fit was tied to (≈ 0).
    x, quality, theta = _synthetic(seed=6, n=600)
    output = np.tile([20.0, 40.0, 60.0, 80.0, 100.0], (len(x), 1))
    public = theta - 1.0
    public[0] = np.nan  # a model without a public score does not count toward the offset
    predictor = AbilityPredictor().fit(x, quality, output, z=theta, public_z=public)
    scored = ~np.isnan(public)
    expected = float(np.median(predictor.ability.theta[scored] - public[scored]))
    assert expected > 0.7  # the fit stays near the prior's abilities, a unit above the public scores
    assert predictor.score_offset == pytest.approx(expected, abs=1e-6)
    assert abs(float(np.median(predictor.ability.theta - theta))) < 0.3  # what the offset was before (wrong)
    # Stored and read back, the router keeps the public scores and so the offset.
    arrays = {k: v.copy() for k, v in predictor.arrays().items()}
    loaded = AbilityPredictor.from_arrays(arrays, predictor.params())
    assert loaded.score_offset == pytest.approx(expected, abs=1e-6)
    # A file written before the public scores were stored: the offset falls back on `z`, as it was.
    del arrays["ability.public_z"]
    old = AbilityPredictor.from_arrays(arrays, predictor.params())
    assert old.public_z is None
    assert old.score_offset == pytest.approx(float(np.median(predictor.ability.theta - theta)), abs=1e-6)
    with pytest.raises(ValueError, match="public_z"):
        AbilityPredictor().fit(x, quality, output, z=theta, public_z=public[:3])
