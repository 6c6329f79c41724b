"""Regression tests: statistics and report prose outside the simulated region (degenerate variances, tiny
designs, planning extremes, exact learning curves), one fixture per case found in real studies."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from harness import stats
from harness.stats.inference import _mean_squares, mean_and_variance
from harness.reports.guideline import guideline
from harness.analysis import Options, analyse_images
from harness.reports.tables import tables


def per_image(values: dict[tuple[str, int], np.ndarray], folds: int = 3, my_offset: float = -0.1) -> pd.DataFrame:
    """A per-image table from subject x seed Dice matrices per configuration (two images per subject and
    run, equal to the value); subjects are split into ``folds`` equal folds."""
    rows = []
    for (strategy, n), matrix in values.items():
        subjects, seeds = matrix.shape
        per = subjects // folds
        for i in range(subjects):
            for s in range(seeds):
                for image in range(2):
                    rows.append({"strategy": strategy, "n": n, "seed": s, "fold": i // per, "subject": f"p{i:02d}",
                                 "image": f"p{i:02d}_{image}", "dice_lv": matrix[i, s],
                                 "dice_my": matrix[i, s] + my_offset, "labelled_images": 8 * n if n else np.nan})
    return pd.DataFrame(rows)


def report_text(images: pd.DataFrame, **options) -> tuple[list[str], str]:
    analysis = analyse_images(images, {"kind": "table"}, Options(**options))
    sentences = guideline(analysis)
    text = "\n".join(sentences) + "\n" + "\n".join(
        " | ".join(row) + " " + t.note for t in tables(analysis) for row in t.rows)
    return sentences, text


def assert_nothing_absurd(text: str) -> None:
    assert "nan" not in text.lower().replace("n/a", ""), text
    assert "inf" not in text.lower().replace("inferior", "").replace("information", ""), text
    for number in re.findall(r"-?\d+\.\d+", text):
        assert abs(float(number)) < 1e4, number


def collapse_fixture(shift: float) -> dict[tuple[str, int], np.ndarray]:
    """Issue 10, case 1: 3 folds x 8 subjects x 2 seeds; one subject whose n=5 - n=10 difference swings
    ±0.15 between seeds; a small run shift in fold 0 that puts MS_seed just above MS_res."""
    rng = np.random.default_rng(3)
    d = np.round(rng.normal(0.0, 0.01, (24, 1)) + rng.normal(0, 0.004, (24, 2)), 4)
    d[0] = [0.15, -0.15]
    d[:8, 0] += shift
    n10 = 0.85 + np.round(rng.normal(0, 0.05, (24, 1)), 3) + np.zeros((24, 2))
    return {("ed_es", 10): n10, ("ed_es", 5): n10 + d}


def test_satterthwaite_collapse_no_longer_prints_astronomical_intervals():
    images = per_image(collapse_fixture(0.002))
    scores = stats.subject_scores(images)
    paired = stats.paired_by_seed(scores, ("ed_es", 5), ("ed_es", 10), "dice_lv")
    blocks = [part.to_numpy(float) for _, part in paired.groupby(level="fold")]
    _, ms, df = _mean_squares(blocks)
    assert ms[2] < ms[1] < 1.2 * ms[2]  # the fixture sits where Satterthwaite's df collapsed (df ~ 0.04)
    _, _, dof = mean_and_variance(blocks)
    assert 3 <= dof <= 21
    row = stats.noninferiority_table(scores, "dice_lv", None).iloc[0]
    assert -0.1 < row["ci_low"] < row["difference"] < row["ci_high"] < 0.1
    _, text = report_text(images)
    assert_nothing_absurd(text)


def test_the_interval_is_continuous_where_the_run_term_crosses_zero():
    """Steps of 0.00025 across the point where MS_seed passes MS_res (between 0.001 and 0.002): the old df
    jumped from 21 to 0.04 there; now each step changes the interval by a few percent."""
    widths = []
    for shift in np.arange(0.001, 0.0026, 0.00025):
        scores = stats.subject_scores(per_image(collapse_fixture(shift)))
        row = stats.noninferiority_table(scores, "dice_lv", None).iloc[0]
        widths.append(row["ci_high"] - row["ci_low"])
    assert all(0.95 < b / a < 1.1 for a, b in zip(widths, widths[1:])), widths


def test_planning_never_returns_nan_or_non_monotone_counts():
    """Issue 10, case 2: statsmodels' power was NaN for large n and effect, and the bisection then printed
    634 subjects at 10 seeds beside 7 at 5."""
    c = stats.Components(between=0.004, run=0.0, residual=0.003)
    powers = [stats.power(0.02, c, n, 2, folds=3) for n in (6, 60, 600, 6000)]
    assert all(p == p for p in powers) and powers[-1] == 1.0
    needs = [stats.subjects_needed(0.02, c, s, folds=3) for s in stats.planning.SEED_CHOICES]
    assert all(n is not None for n in needs) and needs == sorted(needs, reverse=True) and needs[-1] <= 7
    # the shared-run term caps power: no number of subjects reaches 80% at 1 seed, and planning says so
    heavy = stats.Components(between=0.03, run=0.03, residual=0.02)
    assert stats.subjects_needed(0.02, heavy, 1, folds=3) is None
    assert stats.power_limit(0.02, heavy, 1, folds=3) < 0.8 < stats.power_limit(0.02, heavy, 10, folds=3)


def test_planning_with_zero_variance_says_it_cannot_estimate_power():
    same = np.full((24, 2), 0.85)
    images = per_image({("ed_es", 10): same, ("ed_es", 5): same.copy()})
    plan = stats.plan(stats.subject_scores(images), "dice_lv", None)
    assert plan["power"].isna().all() and "no variance" in plan["note"].iloc[0]
    sentences, text = report_text(images)
    assert "nan%" not in text and "adequately" not in text
    assert any("cannot be estimated" in s for s in sentences)


def test_identical_runs_get_a_reason_and_a_guideline_sentence():
    """Issue 10, case 3: zero variance gave 'not tested (sequence stopped)' on the first row and no sentence."""
    rng = np.random.default_rng(0)
    n10 = 0.85 + rng.normal(0, 0.05, (24, 1)) + rng.normal(0, 0.01, (24, 2))
    images = per_image({("ed_es", 10): n10, ("ed_es", 5): n10.copy(), ("ed_es", 2): n10 - 0.05})
    ni = stats.noninferiority_table(stats.subject_scores(images), "dice_lv", None).set_index("n")
    assert ni.loc[5, "reason"].startswith("no variance: every paired difference is +0.000")
    assert ni.loc[2, "reason"] == "not tested: the sequence stopped at n = 5"
    sentences, text = report_text(images)
    ed_es = next(s for s in sentences if s.startswith("**ed_es**"))
    assert "LV could not be tested at n = 5: no variance" in ed_es
    assert "not tested (sequence stopped)" not in text
    assert_nothing_absurd(text)


def test_an_all_nan_strategy_is_not_compared_and_not_called_insignificant():
    rng = np.random.default_rng(1)
    good = 0.85 + rng.normal(0, 0.05, (24, 1)) + rng.normal(0, 0.01, (24, 2))
    images = per_image({("ed_es", 2): good, ("broken", 2): np.full((24, 2), np.nan)})
    sentences, text = report_text(images)
    assert "+nan" not in text and "0/0" not in text
    assert not any("no two strategies differed" in s for s in sentences)
    assert any(s.startswith("At n = 2: nothing could be compared") for s in sentences)


def test_a_metric_missing_at_one_budget_gets_the_right_reason():
    rng = np.random.default_rng(2)
    n10 = 0.85 + rng.normal(0, 0.05, (24, 1)) + rng.normal(0, 0.01, (24, 2))
    images = per_image({("ed_es", 10): n10, ("ed_es", 5): n10 + 0.01})
    images.loc[images["n"] == 5, "dice_my"] = np.nan
    ni = stats.noninferiority_table(stats.subject_scores(images), "dice_my", None)
    assert ni["reason"].iloc[0] == "no test subject has a score on both sides (the metric is missing there)"


def test_two_test_subjects_and_one_seed_give_no_guideline():
    """Issue 10, case 4: 'ed_es at n = 5 is non-inferior … on 2 test subjects'."""
    images = per_image({("ed_es", 10): np.array([[0.85], [0.80]]), ("ed_es", 5): np.array([[0.86], [0.81]])},
                       folds=1)
    sentences, text = report_text(images)
    assert sentences[0].startswith("**No guideline from this study**: it has 2 test subject(s)")
    assert "is non-inferior to" not in text
    assert_nothing_absurd(text)


def _curve_scores(budgets, plateau: float = 0.9, target_gap: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    values = {("s", n): plateau - 0.3 * n ** -0.8 + rng.normal(0, 0.03, (24, 1)) + rng.normal(0, 0.005, (24, 2))
              for n in budgets}
    return stats.subject_scores(per_image(values))


def test_three_budgets_give_no_x_star():
    """Issue 10, case 5: with 3 budgets both curves pass through the means, yet x* got a precise CI."""
    fit = stats.fit_learning_curves(_curve_scores((2, 5, 10)), "dice_lv", {"s": 0.85}, n_boot=50).iloc[0]
    assert fit["x_star_status"] == "not estimated" and fit["x_star"] != fit["x_star"]
    assert "3 budgets" in fit["note"]


def test_a_plateau_below_the_target_is_said_plainly():
    scores = _curve_scores((1, 2, 5, 10))
    fit = stats.fit_learning_curves(scores, "dice_lv", {"s": 0.97}, n_boot=50).iloc[0]
    assert fit["x_star_status"] == "not reached" and "stays below the target 0.970" in fit["note"]


def test_flat_curves_never_print_an_interval_down_to_zero():
    """Issue 10, case 5: with 4 budgets 'x* 7.3 (0.0 to 19.5)': refits already above the target at x = 0."""
    rng = np.random.default_rng(5)
    values = {("s", n): 0.9 + rng.normal(0, 0.02, (24, 1)) + rng.normal(0, 0.01, (24, 2)) for n in (1, 2, 5, 10)}
    images = per_image(values)
    _, text = report_text(images)
    assert "(0.0 to" not in text and " 0.0 (" not in text
    fit = stats.fit_learning_curves(stats.subject_scores(images), "dice_lv", {"s": 0.88}, n_boot=50).iloc[0]
    assert fit["x_star_status"] in ("not estimated", "already met") or fit["x_star_low"] >= 1


def test_a_fit_at_a_parameter_bound_is_named():
    curve = stats.curves.CURVES[0]
    assert curve.at_bound(np.array([0.9, 0.0, 0.5])) == "b = 0"
    assert curve.at_bound(np.array([0.9, 0.2, 5.0])) == "c = 5"
    assert curve.at_bound(np.array([0.9, 0.2, 0.5])) == ""


def test_guideline_never_says_reached_at_not_reached():
    analysis = analyse_images(per_image({("s", n): 0.8 - 0.3 * n ** -0.8 + np.zeros((24, 2)) + np.linspace(0, 0.1, 24)[:, None]
                                         for n in (1, 2, 5, 10)}), {"kind": "table"}, Options())
    text = " ".join(guideline(analysis))
    assert "reached at not reached" not in text and "not reached" not in text.replace("is not reached:", "")


def test_noninferiority_interval_agrees_with_its_test():
    """Issue 10, case 6: a 95% CI beside a one-sided 5% test could cross the margin while p < 0.05. The 90%
    interval's lower end is above -margin exactly when p < 0.05."""
    rng = np.random.default_rng(6)
    for _ in range(200):
        d = rng.normal(rng.uniform(-0.03, 0.02), 0.03, rng.integers(3, 30))
        result = stats.noninferiority(d, 0.02)
        assert (result["ci_low"] > -0.02) == (result["p"] < 0.05)
        assert result["ci_level"] == 0.90


def test_guideline_says_where_each_metric_failed_and_how_far_the_other_went():
    """Issue 10, case 7: LV failed at n = 5 while MY was non-inferior down to n = 5 and not at n = 2."""
    rng = np.random.default_rng(7)
    n10 = 0.85 + rng.normal(0, 0.05, (24, 1)) + np.zeros((24, 2))
    noise = lambda: rng.normal(0, 0.004, (24, 2))  # noqa: E731
    lv = {("ed_es", 10): n10, ("ed_es", 5): n10 - 0.03 + noise(), ("ed_es", 2): n10 - 0.08 + noise()}
    images = per_image(lv)
    my = per_image({("ed_es", 10): n10, ("ed_es", 5): n10 + noise(), ("ed_es", 2): n10 - 0.08 + noise()})
    images["dice_my"] = my["dice_lv"].to_numpy()
    sentences, _ = report_text(images)
    ed_es = next(s for s in sentences if s.startswith("**ed_es**"))
    assert ed_es.startswith("**ed_es**: No budget below n = 10 was non-inferior to ed_es at n = 10 on both LV and MY")
    assert "LV was not shown non-inferior at n = 5 (difference -0.031, 90% CI" in ed_es
    assert "MY was non-inferior down to n = 5 (difference" in ed_es and "), not at n = 2 (difference -0.080" in ed_es


def test_margin_justification_only_for_the_default_margin():
    rng = np.random.default_rng(8)
    n10 = 0.85 + rng.normal(0, 0.05, (24, 1)) + rng.normal(0, 0.01, (24, 2))
    images = per_image({("ed_es", 10): n10, ("ed_es", 5): n10 - 0.01})
    _, default = report_text(images)
    _, custom = report_text(images, margin=0.05)
    assert "about a third of the gap" in default
    assert "about a third of the gap" not in custom and "0.05 Dice was set with --margin" in custom


def test_every_table_says_which_family_its_correction_covers():
    rng = np.random.default_rng(9)
    n10 = 0.85 + rng.normal(0, 0.05, (24, 1)) + rng.normal(0, 0.01, (24, 2))
    images = per_image({("ed_es", 10): n10, ("ed_es", 5): n10 - 0.01, ("all_frames", 5): n10,
                        ("all_frames", 10): n10 + 0.01, ("base", 0): n10[:, :1] - 0.1})
    analysis = analyse_images(images, {"kind": "table"}, Options())
    notes = {t.title: t.note for t in tables(analysis)}
    assert "Holm over every strategy × n of this table" in notes["Fine-tuned vs source-only base model"]
    assert "Holm over every strategy's adjacent budget pairs" in notes["Budgets: each n against the next smaller n"]
    assert "Holm over every pair of strategies at every n" in notes["Strategies at equal n"]
    assert "fixed sequence" in notes["Non-inferiority to the reference (margin 0.02)"]


def test_one_seed_comparisons_carry_their_caveat_in_the_sentence():
    """Issue 10, case 10: with one seed the guideline said 'ed_es vs slice_stratified … p < 0.001' bare."""
    rng = np.random.default_rng(10)
    a = 0.85 + rng.normal(0, 0.05, (24, 1))
    images = per_image({("ed_es", 2): a + 0.08 + rng.normal(0, 0.01, (24, 1)), ("slice_stratified", 2): a})
    sentences, _ = report_text(images)
    at_two = next(s for s in sentences if s.startswith("At n = 2"))
    assert "ed_es vs slice_stratified (LV): +0.08" in at_two
    assert "Caveat: one seed per configuration" in at_two


def test_identical_selections_train_identically(tmp_path, cache, monkeypatch):
    """Issue 10, case 10: the same images selected in another row order gave another training result."""
    from harness import registry
    from harness.cli import main
    from tests.conftest import TINY_RUN

    real = registry.discover()
    fake = registry.StrategyEntry("ed_es_reversed", "tests", "tests.fake_strategies:ReversedEdEsStrategy")
    monkeypatch.setattr(registry, "discover", lambda: {**real, "ed_es_reversed": fake})
    out = tmp_path / "crn"
    args = ["run", "--strategy", "ed_es,ed_es_reversed", "--n", "2", "--out", str(out), "--cache-dir", str(cache),
            *TINY_RUN[:-4], "--seeds", "1", "--folds", "1"]
    assert main(args) == 0
    dice = {}
    for folder in (out / "runs").iterdir():
        spec = json.loads((folder / "spec.json").read_text())
        if spec["strategy"] != "base":
            dice[spec["strategy"]] = pd.read_csv(folder / "images.csv").sort_values(
                ["subject", "slice", "frame"])[["lv_inter", "lv_pred", "my_inter", "my_pred"]]
    assert set(dice) == {"ed_es", "ed_es_reversed"}
    pd.testing.assert_frame_equal(dice["ed_es"].reset_index(drop=True), dice["ed_es_reversed"].reset_index(drop=True))


def test_a_budget_shown_enough_is_named_with_where_smaller_ones_stopped():
    rng = np.random.default_rng(7)
    n10 = 0.85 + rng.normal(0, 0.05, (24, 1)) + np.zeros((24, 2))
    noise = lambda: rng.normal(0, 0.004, (24, 2))  # noqa: E731
    images = per_image({("ed_es", 10): n10, ("ed_es", 5): n10 - 0.005 + noise(), ("ed_es", 2): n10 - 0.08 + noise()})
    sentences, _ = report_text(images)
    assert sentences[0].startswith("**ed_es at n = 5** (40 labelled images) is non-inferior to ed_es at n = 10 on "
                                   "both LV and MY (LV difference -0.006, 90% CI")
    assert "on 24 test subjects and 2 seed(s), fixed sequence from the largest n)." in sentences[0]
    assert sentences[0].endswith("Smaller budgets: LV not at n = 2 (difference -0.080, 90% CI -0.081 to -0.079, "
                                 "p = 1.000); MY not at n = 2 (difference -0.080, 90% CI -0.081 to -0.079, p = 1.000).")


def test_a_huge_standardised_effect_is_capped_in_the_report():
    """Found by the fuzz test in CI: two subjects whose differences agree to 2e-5 gave d_z = 10824."""
    from harness.reports.tables import dz_cell

    assert dz_cell(10824.06) == "> 100" and dz_cell(-250.0) == "< −100"
    assert dz_cell(1.234) == "1.23" and dz_cell(float("nan")) == "n/a"
