from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from harness import stats
from harness.errors import UsageError
from harness.stats import curves
from harness.stats.inference import mean_and_variance
from tests.simulation import study


def _scores(effects: dict[tuple[str, int], float], seed: int = 0, **kwargs) -> pd.DataFrame:
    return stats.subject_scores(study(np.random.default_rng(seed), effects, **kwargs))


def test_subject_scores_average_images_within_run_and_subject_under_both_conventions():
    images = pd.DataFrame({
        "strategy": "a", "n": 2, "seed": 0, "subject": ["x", "x", "y"], "labelled_images": 8,
        "lv_inter": [5, 0, 3], "lv_pred": [10, 0, 3], "lv_ref": [10, 0, 3],
        "my_inter": [0, 0, 1], "my_pred": [0, 2, 1], "my_ref": [0, 0, 1]})
    both_one = stats.subject_scores(images, "both-one").set_index("subject")
    assert both_one.loc["x", "dice_lv"] == pytest.approx((0.5 + 1.0) / 2)
    assert both_one.loc["x", "dice_my"] == pytest.approx((1.0 + 0.0) / 2)
    assert both_one.loc["x", "dice3d_lv"] == pytest.approx(2 * 5 / 20)  # summed counts, not mean of Dice
    assert both_one.loc["x", "fold"] == 0  # a table without folds is one fold
    ignore = stats.subject_scores(images, "ignore").set_index("subject")
    assert ignore.loc["x", "dice_lv"] == pytest.approx(0.5)
    assert ignore.loc["x", "dice_my"] == pytest.approx(0.0)


def test_volumes_and_ejection_fraction_from_segmentations():
    # one subject, two slices, ED and ES; 0.1 ml voxels
    images = pd.DataFrame({
        "strategy": "a", "n": 2, "seed": 0, "subject": "x", "labelled_images": 8, "voxel_ml": 0.1,
        "phase": ["ED", "ED", "ES", "ES", None], "lv_inter": [0] * 5, "lv_pred": [600, 400, 300, 100, 5],
        "lv_ref": [500, 500, 200, 100, 5], "my_inter": 0, "my_pred": 0, "my_ref": 0})
    row = stats.subject_scores(images).iloc[0]
    assert row["edv_ref_ml"] == pytest.approx(100.0) and row["esv_ref_ml"] == pytest.approx(30.0)
    assert row["edv_pred_ml"] == pytest.approx(100.0) and row["esv_pred_ml"] == pytest.approx(40.0)
    assert row["ef_ref_pct"] == pytest.approx(70.0) and row["ef_pred_pct"] == pytest.approx(60.0)
    assert row["esv_error_ml"] == pytest.approx(10.0) and row["ef_error_pct"] == pytest.approx(10.0)


def test_crossed_variance_equals_the_paired_t_test_with_one_seed():
    d = np.array([0.01, -0.02, 0.03, 0.015, 0.0, 0.022])
    result = stats.noninferiority(d, 0.02)
    reference = sps.ttest_1samp(d, -0.02, alternative="greater")
    assert result["p"] == pytest.approx(reference.pvalue)
    interval = sps.ttest_1samp(d, 0).confidence_interval(0.90)  # CONSORT: 90% CI beside a one-sided 5% test
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((interval.low, interval.high))
    from statsmodels.stats.weightstats import DescrStatsW

    assert result["p_tost"] == pytest.approx(DescrStatsW(d).ttost_mean(-0.02, 0.02)[0])
    assert stats.paired_test(d, "t")[1] == pytest.approx(sps.ttest_1samp(d, 0).pvalue)


def test_crossed_variance_has_the_textbook_value_on_a_balanced_design():
    rng = np.random.default_rng(3)
    block = rng.normal(size=(8, 3))
    mean, var, df = mean_and_variance([block])
    n, s = block.shape
    rows, cols = block.mean(1), block.mean(0)
    ms_subject = s * rows.var(ddof=1)
    ms_seed = n * cols.var(ddof=1)
    ms_res = ((block - rows[:, None] - cols[None, :] + block.mean()) ** 2).sum() / ((n - 1) * (s - 1))
    expected = (ms_subject + max(ms_seed - ms_res, 0)) / (n * s)
    assert mean == pytest.approx(block.mean()) and var == pytest.approx(expected)


def test_tests_match_scipy_and_reject_a_clear_effect():
    rng = np.random.default_rng(2)
    d = rng.normal(0.01, 0.02, 24)
    assert stats.paired_test(d, "wilcoxon")[1] == pytest.approx(sps.wilcoxon(d).pvalue)
    small = np.array([0.01, 0.02, -0.005, 0.03, 0.012])  # 2^5 sign patterns, all enumerated
    flips = np.array(np.meshgrid(*[[-1, 1]] * 5)).reshape(5, -1).T * small
    exact = np.mean(np.abs(flips.mean(1)) >= abs(small.mean()) - 1e-12)
    assert stats.paired_test(small, "permutation")[1] == pytest.approx(exact)
    assert stats.paired_test(np.zeros(5), "wilcoxon") == (pytest.approx(float("nan"), nan_ok=True), 1.0)
    with pytest.raises(UsageError, match="unknown test 'ttest'; choose one of t, wilcoxon, permutation"):
        stats.paired_test(d, "ttest")


def test_holm_matches_the_textbook_procedure():
    p = pd.Series([0.01, 0.04, 0.03, 0.20])
    # sorted: 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08 -> monotone 0.09, 0.20*1=0.20
    assert stats.holm(p).tolist() == pytest.approx([0.04, 0.09, 0.09, 0.20])


def test_friedman_equals_scipy_on_subject_means_and_needs_three_strategies():
    scores = _scores({("a", 5): 0.0, ("b", 5): 0.0, ("c", 5): 0.03})
    table = stats.friedman(scores, "dice_lv")
    wide = scores.groupby(["subject", "strategy"])["dice_lv"].mean().unstack()
    expected = sps.friedmanchisquare(wide["a"], wide["b"], wide["c"])
    assert table.loc[0, "p"] == pytest.approx(expected.pvalue) and table.loc[0, "subjects"] == 24
    assert stats.friedman(scores[scores["strategy"] != "c"], "dice_lv").empty


def test_known_gain_is_found_and_no_gain_is_not():
    scores = _scores({("ed_es", 2): 0.0, ("ed_es", 5): 0.05, ("ed_es", 10): 0.05})
    budgets = stats.compare_budgets(scores, "dice_lv").set_index("n_small")
    assert budgets.loc[2, "difference"] == pytest.approx(0.05, abs=0.015)
    assert budgets.loc[2, "ci_low"] < budgets.loc[2, "difference"] < budgets.loc[2, "ci_high"]
    assert budgets.loc[2, "p_holm"] < 0.001 and budgets.loc[5, "p_holm"] > 0.05
    assert budgets.loc[2, "subjects"] == 24


def test_base_model_pairs_with_every_seed_of_its_subject():
    images = study(np.random.default_rng(4), {("ed_es", 2): 0.1}, seeds=3)
    base = study(np.random.default_rng(4), {("base", 0): 0.0}, seeds=1)
    scores = stats.subject_scores(pd.concat([images, base]))
    versus = stats.compare_to_base(scores, "dice_lv")
    assert versus.loc[0, "subjects"] == 24 and versus.loc[0, "p"] < 0.001
    assert versus.loc[0, "difference"] == pytest.approx(0.1, abs=0.03)


def test_noninferiority_fixed_sequence_stops_at_the_first_failure():
    scores = _scores({("all_frames", 10): 0.0, ("ed_es", 10): 0.0, ("ed_es", 5): -0.1, ("ed_es", 2): 0.0})
    reference = stats.parse_reference(None, scores)
    assert reference == ("all_frames", 10)
    table = stats.noninferiority_table(scores, "dice_lv", reference).set_index(["strategy", "n"])
    assert table.loc[("ed_es", 10), "non_inferior"]
    assert not table.loc[("ed_es", 5), "non_inferior"] and table.loc[("ed_es", 5), "tested"]
    # n = 2 is as good as the reference, but the sequence stopped at 5: no claim, so no inflation
    assert not table.loc[("ed_es", 2), "tested"] and not table.loc[("ed_es", 2), "non_inferior"]
    assert ("all_frames", 10) not in table.index
    both = pd.concat([table.reset_index(), table.reset_index().assign(metric="dice_my")])
    assert stats.enough(both).set_index("strategy").loc["ed_es", "n_enough"] == 10


def test_reference_parsing_names_what_exists():
    scores = _scores({("ed_es", 2): 0.0, ("ed_es", 5): 0.0})
    assert stats.parse_reference(None, scores) is None  # no all_frames: each strategy's own largest n
    assert stats.parse_reference("ed_es", scores) == ("ed_es", 5)
    assert stats.parse_reference("ed_es@2", scores) == ("ed_es", 2)
    with pytest.raises(UsageError, match="ed_es was run at n = 2, 5, not 7"):
        stats.parse_reference("ed_es@7", scores)
    with pytest.raises(UsageError, match="strategy 'all_frames' is not in this study"):
        stats.parse_reference("all_frames@5", scores)


def test_learning_curve_recovers_a_known_power_law_and_its_target_budget():
    a, b, c = 0.9, 0.3, 0.8
    ns = np.array([1, 2, 4, 8, 16])
    rng = np.random.default_rng(0)
    rows = [{"strategy": "s", "n": n, "seed": 0, "fold": 0, "subject": f"v{i}", "labelled_images": 20 * n,
             "dice_lv": curves.power_law(n, a, b, c) + offset}
            for i, offset in enumerate(rng.normal(0, 0.01, 12)) for n in ns]
    scores = pd.DataFrame(rows)
    scores["dice_lv"] -= scores.groupby("n")["dice_lv"].transform("mean") - curves.power_law(scores["n"], a, b, c)
    fit = stats.fit_learning_curves(scores, "dice_lv", {"s": 0.85}, n_boot=200).iloc[0]
    assert fit["curve"] == "power_law"
    assert (fit["a"], fit["b"], fit["c"]) == pytest.approx((a, b, c), abs=1e-3)
    expected = (b / (a - 0.85)) ** (1 / c)
    assert fit["x_star"] == pytest.approx(expected, rel=1e-3)
    assert fit["x_star_low"] <= expected <= fit["x_star_high"] and not fit["extrapolated"]
    images = stats.fit_learning_curves(scores, "dice_lv", {"s": 0.85}, axis="images", n_boot=50).iloc[0]
    assert images["x_star"] == pytest.approx(20 * expected, rel=1e-2)
    beyond = stats.fit_learning_curves(scores, "dice_lv", {"s": 0.895}, n_boot=50).iloc[0]
    assert beyond["extrapolated"] and beyond["x_star"] > 16


def test_learning_curve_prefers_the_exponential_plateau_for_exponential_data():
    ns = np.array([1, 2, 3, 5, 8, 13])
    rows = [{"strategy": "s", "n": n, "seed": 0, "fold": 0, "subject": f"v{i}", "labelled_images": n,
             "dice_lv": curves.exp_plateau(n, 0.9, 0.4, 0.5) + offset}
            for i, offset in enumerate(np.linspace(-0.02, 0.02, 8)) for n in ns]
    fit = stats.fit_learning_curves(pd.DataFrame(rows), "dice_lv", {"s": 0.8}, n_boot=20).iloc[0]
    assert fit["curve"] == "exp_plateau" and fit["aic_exp_plateau"] < fit["aic_power_law"] - 10
    assert fit["x_star"] == pytest.approx(np.log(0.4 / 0.1) / 0.5, rel=1e-3)


def test_mixed_model_recovers_the_slope_and_the_crossed_variance_components():
    effects = {("s", n): 0.05 * np.log(n) for n in (2, 5, 10)}
    scores = _scores(effects, subjects=30, folds=3, seeds=4, sd_subject=0.05, sd_run=0.06)
    fit = stats.fit_mixed(scores, "dice_lv")
    slope = fit.fixed.set_index("term").loc["log_n"]
    assert fit.converged and slope["ci_low"] < 0.05 < slope["ci_high"]
    # the simulation's levels: subject SD 0.05 (+ preference), run SD 0.06 / sqrt(2) shared by a fold's subjects
    assert np.sqrt(fit.variances["subject"]) == pytest.approx(np.hypot(0.05, 0.03 / np.sqrt(2)), abs=0.015)
    assert np.sqrt(fit.variances["training run"]) == pytest.approx(0.06 / np.sqrt(2), abs=0.015)
    assert fit.observations == 30 * 4 * 3
    assert not any("boundary" in w for w in fit.warnings)  # statsmodels' absolute < 0.01 rule is not ours
    # no run noise at all: the run component is negligible, and the fit says so
    quiet = stats.fit_mixed(_scores(effects, subjects=30, folds=3, seeds=4, sd_run=0.0, sd_subject_run=0.0),
                            "dice_lv")
    assert quiet.variances["training run"] < 0.01 * sum(quiet.variances.values())
    assert any(w.startswith("the training run variance is negligible") for w in quiet.warnings)


def test_mixed_model_that_did_not_converge_shows_no_estimates(monkeypatch):
    # no run-level noise but subject x run noise: REML's optimisers fail on this simulated study (seed 0) with
    # statsmodels 0.15; older releases' optimisers converge on it, so non-convergence is made certain here
    from statsmodels.regression.mixed_linear_model import MixedLM

    real_fit = MixedLM.fit

    def not_converged(self, *args, **kwargs):
        result = real_fit(self, *args, **kwargs)
        result.converged = False
        return result

    monkeypatch.setattr(MixedLM, "fit", not_converged)
    effects = {("s", n): 0.05 * np.log(n) for n in (2, 5, 10)}
    fit = stats.fit_mixed(_scores(effects, subjects=30, folds=3, seeds=4, sd_run=0.0), "dice_lv")
    assert not fit.converged and fit.fixed.empty
    assert "the fit did not converge: its estimates are not shown" in fit.warnings


def test_planning_power_and_subjects_needed_are_consistent():
    c = stats.Components(between=0.03, run=0.0, residual=0.02)
    needed = stats.subjects_needed(0.02, c, seeds=3)
    assert stats.power(0.02, c, needed, 3) >= 0.8 > stats.power(0.02, c, needed - 1, 3)
    # more seeds only shrink the residual part
    assert stats.subjects_needed(0.02, c, seeds=10) <= needed
    from statsmodels.stats.power import TTestPower

    # one seed, no run noise: the paired t-test's power exactly
    assert stats.power(0.02, stats.Components(0.03, 0.0, 0.0), 20, 1) == pytest.approx(
        TTestPower().power(effect_size=0.02 / 0.03, nobs=20, alpha=0.05, alternative="larger"))


