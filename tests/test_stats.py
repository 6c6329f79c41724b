from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from harness import stats


def _scores(effects: dict[tuple[str, int], float], subjects=6, seeds=3, seed_sd=0.01, seed=0) -> pd.DataFrame:
    """Subject-level Dice with a subject random effect and independent seed noise."""
    rng = np.random.default_rng(seed)
    subject_effect = rng.normal(0, 0.05, subjects)
    rows = []
    for (strategy, n), effect in effects.items():
        for s in range(seeds if strategy != "base" else 1):
            for j in range(subjects):
                value = 0.8 + effect + subject_effect[j] + (rng.normal(0, seed_sd) if strategy != "base" else 0)
                rows.append({"strategy": strategy, "n": n, "seed": s, "subject": f"s{j}",
                             "dice_lv": value, "dice_my": value - 0.1, "labelled_images": 10 * n})
    return pd.DataFrame(rows)


def test_subject_scores_average_images_within_run_and_subject():
    images = pd.DataFrame({
        "strategy": "a", "n": 2, "seed": 0, "subject": ["x", "x", "y"], "labelled_images": 8,
        "lv_inter": [5, 0, 3], "lv_pred": [10, 0, 3], "lv_ref": [10, 0, 3],
        "my_inter": [0, 0, 1], "my_pred": [0, 2, 1], "my_ref": [0, 0, 1]})
    both_one = stats.subject_scores(images, "both-one").set_index("subject")
    assert both_one.loc["x", "dice_lv"] == pytest.approx((0.5 + 1.0) / 2)
    assert both_one.loc["x", "dice_my"] == pytest.approx((1.0 + 0.0) / 2)
    ignore = stats.subject_scores(images, "ignore").set_index("subject")
    assert ignore.loc["x", "dice_lv"] == pytest.approx(0.5)
    assert ignore.loc["x", "dice_my"] == pytest.approx(0.0)


def test_summary_mean_and_seed_sd_have_known_values():
    scores = pd.DataFrame({"strategy": "a", "n": 1, "subject": ["p", "q", "p", "q"], "seed": [0, 0, 1, 1],
                           "dice_lv": [0.7, 0.9, 0.8, 1.0], "labelled_images": 4})
    row = stats.summarise(scores, "dice_lv").iloc[0]
    assert row["mean"] == pytest.approx(0.85)
    assert row["seed_sd"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
    assert row["ci_low"] <= row["mean"] <= row["ci_high"]
    assert row["subjects"] == 2 and row["seeds"] == 2


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_with_many_subjects():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(400):
        low, high = stats.bootstrap_mean_ci(rng.normal(0.8, 0.05, 40), n_boot=1000, rng=rng)
        hits += low <= 0.8 <= high
    assert 0.91 <= hits / 400 <= 0.98


def test_paired_test_matches_scipy_and_holds_its_level_under_the_null():
    rng = np.random.default_rng(2)
    d = rng.normal(0.01, 0.02, 24)
    assert stats.paired_test(d)[1] == pytest.approx(sps.wilcoxon(d).pvalue)
    rejections = np.mean([stats.paired_test(rng.normal(0, 0.02, 24))[1] < 0.05 for _ in range(2000)])
    assert 0.035 <= rejections <= 0.065
    assert stats.paired_test(np.zeros(5)) == (pytest.approx(float("nan"), nan_ok=True), 1.0)


def test_known_gain_is_found_and_no_gain_is_not():
    scores = _scores({("ed_es", 2): 0.0, ("ed_es", 5): 0.05, ("ed_es", 10): 0.05, ("base", 0): -0.2})
    budgets = stats.compare_budgets(scores, "dice_lv").set_index("n_small")
    assert budgets.loc[2, "difference"] == pytest.approx(0.05, abs=0.01)
    assert budgets.loc[2, "p_holm"] < 0.01
    assert budgets.loc[5, "p_holm"] > 0.05
    assert budgets.loc[2, "units"] == 18  # 6 subjects x 3 seeds, paired
    plateau = stats.plateau(budgets.reset_index())
    assert plateau["n_enough"].tolist() == [5]
    versus = stats.compare_to_base(scores, "dice_lv").set_index("n")
    assert versus.loc[2, "difference"] == pytest.approx(0.2, abs=0.01)
    assert versus.loc[2, "better"] == 18


def test_strategies_are_paired_on_the_same_subjects_and_seeds():
    scores = _scores({("a", 2): 0.0, ("b", 2): 0.02}, seed_sd=0.001)
    table = stats.compare_strategies(scores, "dice_lv")
    assert table[["a", "b"]].values.tolist() == [["a", "b"]]
    # the large subject effect cancels in the pairing, so a 0.02 shift is unmistakable
    assert table.loc[0, "difference"] == pytest.approx(-0.02, abs=0.002)
    assert table.loc[0, "p"] < 0.001 and table.loc[0, "better"] == 0


def test_holm_matches_the_textbook_procedure():
    p = pd.Series([0.01, 0.04, 0.03, 0.20])
    # sorted: 0.01*4=0.04, 0.03*3=0.09, 0.04*2=0.08 -> monotone 0.09, 0.20*1=0.20
    assert stats.holm(p).tolist() == pytest.approx([0.04, 0.09, 0.09, 0.20])


def test_plateau_is_the_largest_n_when_the_last_step_still_gains():
    budgets = pd.DataFrame({"strategy": "a", "metric": "dice_lv", "n_small": [2, 5], "n_large": [5, 10],
                            "difference": [0.01, 0.03], "p_holm": [0.5, 0.001]})
    assert stats.plateau(budgets)["n_enough"].tolist() == [10]
