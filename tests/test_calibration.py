"""Calibration by simulation (statistics only, no training).

Studies have the crossed structure of a real one: 24 test subjects in 3 folds, each (configuration, fold,
seed) one training run shared by the fold's subjects. Scenarios: 2 and 3 seeds, light run noise (the
phantom's, SD 0.011) and heavy (SD 0.05; a real study's seed SD was 0.076), and one outlier subject whose
difference swings between seeds (SD 0.15). Rates are estimated from 40 000 studies (SE 0.0011 at 0.05), so the
0.04-0.06 band is about ±9 SE; coverage from 2000 studies (SE 0.005). The batched ``t_statistics`` is the code
every verdict's t-test runs (``t_test`` calls it on one study); the first test shows the two agree on whole
simulated per-image studies.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from harness import stats
from harness.stats.inference import mean_ci_blocks, t_statistics
from tests.simulation import difference_blocks, study

STUDIES = 40_000
MARGIN = 0.02
SCENARIOS = {
    "2 seeds, light run noise": dict(seeds=2, sd_run=0.011),
    "3 seeds, light run noise": dict(seeds=3, sd_run=0.011),
    "2 seeds, heavy run noise": dict(seeds=2, sd_run=0.05),
    "3 seeds, heavy run noise": dict(seeds=3, sd_run=0.05),
}
OUTLIER = dict(seeds=2, outlier=0.15)


def _rate(p: np.ndarray) -> float:
    assert np.isfinite(p).all()
    return float(np.mean(p < 0.05))


def test_batched_t_test_is_the_one_a_study_runs():
    """Per-image simulated studies through subject scores, pairing and t_test give the batched p-values."""
    rng = np.random.default_rng(1)
    for _ in range(20):
        scores = stats.subject_scores(study(rng, {("a", 5): 0.0, ("b", 5): 0.0}, seeds=2, images=3))
        paired = stats.paired_by_seed(scores, ("a", 5), ("b", 5), "dice_lv")
        blocks = [part.to_numpy(float) for _, part in paired.groupby(level="fold")]
        result = stats.noninferiority(paired, MARGIN)
        assert result["p"] == pytest.approx(float(t_statistics(blocks, -MARGIN, "greater")["p"]), rel=1e-12)
        assert result["p_tost"] == pytest.approx(max(float(t_statistics(blocks, -MARGIN, "greater")["p"]),
                                                     float(t_statistics(blocks, MARGIN, "less")["p"])), rel=1e-12)
        assert stats.paired_test(paired, "t")[1] == pytest.approx(float(t_statistics(blocks)["p"]), rel=1e-12)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_two_sided_t_test_holds_alpha(scenario):
    rng = np.random.default_rng(10)
    rate = _rate(t_statistics(difference_blocks(rng, STUDIES, 0.0, **SCENARIOS[scenario]))["p"])
    assert 0.04 <= rate <= 0.06, rate


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_noninferiority_holds_alpha_at_the_margin(scenario):
    rng = np.random.default_rng(11)
    blocks = difference_blocks(rng, STUDIES, -MARGIN, **SCENARIOS[scenario])
    rate = _rate(t_statistics(blocks, -MARGIN, "greater")["p"])
    assert 0.04 <= rate <= 0.06, rate


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_tost_upper_test_holds_alpha_at_the_upper_bound(scenario):
    """TOST's upper one-sided test (H0: difference >= +margin) at its boundary: a check that does not follow
    from the non-inferiority one; TOST (the larger p) never rejects more often than it."""
    rng = np.random.default_rng(12)
    blocks = difference_blocks(rng, STUDIES, MARGIN, **SCENARIOS[scenario])
    upper = t_statistics(blocks, MARGIN, "less")["p"]
    rate = _rate(upper)
    assert 0.04 <= rate <= 0.06, rate
    assert _rate(np.maximum(t_statistics(blocks, -MARGIN, "greater")["p"], upper)) <= rate


def test_an_outlier_subject_makes_the_tests_conservative_not_liberal():
    rng = np.random.default_rng(13)
    two = _rate(t_statistics(difference_blocks(rng, STUDIES, 0.0, **OUTLIER))["p"])
    ni = _rate(t_statistics(difference_blocks(rng, STUDIES, -MARGIN, **OUTLIER), -MARGIN, "greater")["p"])
    for rate in (two, ni):
        assert 0.035 <= rate <= 0.06, (two, ni)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_hierarchical_bootstrap_ci_covers_the_true_mean(scenario):
    rng = np.random.default_rng(14)
    blocks = difference_blocks(rng, 2000, 0.8, **SCENARIOS[scenario], sd_preference=0.074)
    hits = 0
    for i in range(2000):
        _, low, high = mean_ci_blocks([b[i] for b in blocks], n_boot=500, rng=rng)
        hits += low <= 0.8 <= high
    assert 0.93 <= hits / 2000 <= 0.97, hits / 2000


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_power_matches_the_planning_formula(scenario):
    """The rejection rates of the non-inferiority test (true difference 0) and the two-sided test (true
    difference 0.03) equal what planning predicts from the components, within 0.03."""
    kwargs = {**SCENARIOS[scenario], "sd_preference": 0.04, "sd_residual": 0.025}
    truth = stats.Components(between=0.04, run=kwargs["sd_run"], residual=0.025)
    rng = np.random.default_rng(15)
    seeds = kwargs["seeds"]
    ni = np.mean(t_statistics(difference_blocks(rng, 20_000, 0.0, **kwargs), -MARGIN, "greater")["p"] < 0.05)
    two = np.mean(t_statistics(difference_blocks(rng, 20_000, 0.03, **kwargs))["p"] < 0.05)
    assert ni == pytest.approx(stats.power(MARGIN, truth, 24, seeds, folds=3), abs=0.03)
    assert two == pytest.approx(stats.power(0.03, truth, 24, seeds, folds=3, alternative="two-sided"), abs=0.03)


def test_planning_estimates_the_components_it_was_simulated_with():
    rng = np.random.default_rng(16)
    blocks = difference_blocks(rng, 400, 0.0, seeds=3, sd_preference=0.04, sd_run=0.03, sd_residual=0.025)
    found = []
    for i in range(400):
        matrix = np.concatenate([b[i] for b in blocks])
        index = pd.MultiIndex.from_arrays([np.repeat([0, 1, 2], 8), np.arange(24)], names=["fold", "subject"])
        found.append(stats.variance_components(pd.DataFrame(matrix, index=index)))
    mean_sq = {k: np.sqrt(np.mean([getattr(c, k) ** 2 for c in found])) for k in ("between", "run", "residual")}
    assert mean_sq["between"] == pytest.approx(0.04, abs=0.004)
    assert mean_sq["run"] == pytest.approx(0.03, abs=0.004)
    assert mean_sq["residual"] == pytest.approx(0.025, abs=0.002)


def test_rank_and_sign_flip_tests_hold_alpha_when_runs_are_not_shared():
    rng = np.random.default_rng(17)
    blocks = difference_blocks(rng, 1000, 0.0, seeds=1, folds=1, subjects=12, sd_run=0.0)  # exact sign flips
    for method in ("wilcoxon", "permutation"):
        rate = np.mean([stats.paired_test(blocks[0][i, :, 0], method)[1] < 0.05 for i in range(1000)])
        assert 0.035 <= rate <= 0.065, (method, rate)


def test_subject_level_tests_that_ignore_shared_runs_are_anticonservative():
    """Why the default test adds run noise: treating subject means as independent inflates the error."""
    rng = np.random.default_rng(18)
    blocks = difference_blocks(rng, 1000, 0.0, seeds=2, sd_run=0.05)
    means = np.concatenate([b.mean(axis=2) for b in blocks], axis=1)
    rate = np.mean([stats.paired_test(m, "wilcoxon")[1] < 0.05 for m in means])
    assert rate > 0.1


def test_image_level_test_of_clustered_images_is_badly_anticonservative():
    rng = np.random.default_rng(12)
    rejections = []
    for _ in range(300):
        images = study(rng, {("a", 5): 0.0, ("b", 5): 0.0}, seeds=1, folds=1, subjects=3, images=300)
        a, b = (images[images["strategy"] == s]["dice_lv"].to_numpy() for s in ("a", "b"))
        rejections.append(stats.image_level_wilcoxon(a - b)["p"] < 0.05)
    assert np.mean(rejections) > 0.3


def test_one_seed_t_test_is_the_paired_t_test():
    rng = np.random.default_rng(19)
    blocks = difference_blocks(rng, 50, 0.0, seeds=1)
    p = t_statistics(blocks)["p"]
    d = np.concatenate([b[..., 0] for b in blocks], axis=1)
    assert p == pytest.approx(sps.ttest_1samp(d, 0, axis=1).pvalue, rel=1e-10)
