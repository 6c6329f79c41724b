"""Calibration by simulation (statistics only, no training): 2000 studies per check with the crossed
structure of a real study (24 test subjects in 3 folds, 3 seeds, 12 clustered images per subject), using
the variance components measured on the phantom (see tests/simulation.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness import stats
from tests.simulation import study

STUDIES = 2000
MARGIN = 0.02


def _paired_matrices(effect: float, seed: int, studies: int = STUDIES, **kwargs) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(studies):
        scores = stats.subject_scores(study(rng, {("a", 5): effect, ("b", 5): 0.0}, images=4, **kwargs))
        out.append(stats.paired_by_seed(scores, ("a", 5), ("b", 5), "dice_lv"))
    return out


@pytest.fixture(scope="module")
def null_studies() -> list[pd.DataFrame]:
    return _paired_matrices(0.0, seed=10)


def test_two_sided_test_used_in_verdicts_holds_alpha(null_studies):
    rate = np.mean([stats.paired_test(m, "t")[1] < 0.05 for m in null_studies])
    assert 0.04 <= rate <= 0.06, rate


def test_rank_and_sign_flip_tests_hold_alpha_when_runs_are_not_shared():
    matrices = _paired_matrices(0.0, seed=11, studies=1000, sd_run=0.0)
    for method in ("wilcoxon", "permutation"):
        rate = np.mean([stats.paired_test(m, method)[1] < 0.05 for m in matrices])
        assert 0.035 <= rate <= 0.065, (method, rate)


def test_subject_level_tests_that_ignore_shared_runs_are_anticonservative(null_studies):
    """Why the default test adds run noise: treating subject means as independent inflates the error."""
    rate = np.mean([stats.paired_test(m, "wilcoxon")[1] < 0.05 for m in null_studies])
    assert rate > 0.065


def test_image_level_test_of_clustered_images_is_badly_anticonservative():
    rng = np.random.default_rng(12)
    rejections = []
    for _ in range(300):
        images = study(rng, {("a", 5): 0.0, ("b", 5): 0.0}, seeds=1, folds=1, subjects=3, images=300)
        a, b = (images[images["strategy"] == s]["dice_lv"].to_numpy() for s in ("a", "b"))
        rejections.append(stats.image_level_wilcoxon(a - b)["p"] < 0.05)
    assert np.mean(rejections) > 0.3


def test_noninferiority_and_tost_hold_alpha_at_the_margin():
    at_margin = _paired_matrices(-MARGIN, seed=13)
    results = [stats.noninferiority(m, MARGIN) for m in at_margin]
    rate = np.mean([r["p"] < 0.05 for r in results])
    assert 0.04 <= rate <= 0.06, rate
    # TOST at the lower equivalence bound: its upper one-sided test almost always rejects, so the rate is the
    # lower test's
    rate_tost = np.mean([r["p_tost"] < 0.05 for r in results])
    assert 0.04 <= rate_tost <= 0.06, rate_tost


def test_hierarchical_bootstrap_ci_covers_the_true_mean():
    rng = np.random.default_rng(14)
    hits = 0
    for _ in range(STUDIES):
        scores = stats.subject_scores(study(rng, {("a", 5): 0.0}, images=4))
        _, low, high = stats.mean_ci(stats.by_seed(scores, ("a", 5), "dice_lv"), n_boot=500, rng=rng)
        hits += low <= 0.8 <= high
    assert 0.93 <= hits / STUDIES <= 0.97, hits / STUDIES


def test_power_of_a_true_difference_matches_the_planning_formula():
    """A true difference of 0.03 Dice: the rejection rate of the two-sided test equals the power the
    planning formula predicts from the variance components (±0.1)."""
    matrices = _paired_matrices(0.03, seed=15, sd_preference=0.05)
    empirical = np.mean([stats.paired_test(m, "t")[1] < 0.05 for m in matrices])
    # the formula as a user gets it: variance components estimated from one study, then averaged
    components = np.array([stats.variance_components(m)[:2] for m in matrices[:200]])
    sd_between, sd_within = np.sqrt((components ** 2).mean(axis=0))
    predicted = stats.power(0.03, sd_between, sd_within, subjects=24, seeds=3, alternative="two-sided")
    assert 0.3 < predicted < 0.9
    assert abs(empirical - predicted) <= 0.1, (empirical, predicted)


def test_planning_formula_for_non_inferiority_matches_simulation():
    matrices = _paired_matrices(0.0, seed=16, sd_preference=0.05)
    empirical = np.mean([stats.noninferiority(m, MARGIN)["p"] < 0.05 for m in matrices])
    predicted = stats.power(MARGIN, 0.05, 0.02, subjects=24, seeds=3)
    assert abs(empirical - predicted) <= 0.1, (empirical, predicted)
