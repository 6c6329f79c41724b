"""Planning: how many test subjects and seeds would resolve the margin, from the study's own variances.

A subject-level paired difference averages S seeds: Var(d_i) = s_b^2 + s_w^2 / S, where s_w is the
seed-to-seed SD of a subject's paired difference (within subject) and s_b the between-subject SD of its
true difference. Power of the one-sided paired t-test of non-inferiority (true difference 0, margin δ) or of
a two-sided paired test of a true difference Δ then follows from the noncentral t (statsmodels).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from harness.stats.tables import fine_tuned, paired_by_seed

SEED_CHOICES = (1, 2, 3, 5, 10)
MAX_SUBJECTS = 10_000


def variance_components(paired: pd.DataFrame) -> tuple[float, float, int]:
    """(s_b, s_w, seeds) from a subjects x seeds matrix of paired differences."""
    m = paired.dropna(how="all")
    seeds = int(m.notna().sum(axis=1).median()) if len(m) else 0
    subject_means = m.mean(axis=1)
    within = float(np.nanmean(m.var(axis=1, ddof=1))) if seeds > 1 else 0.0
    total = float(subject_means.var(ddof=1)) if len(m) > 1 else float("nan")
    between = max(total - within / max(seeds, 1), 0.0)
    return float(np.sqrt(between)), float(np.sqrt(within)), seeds


def power(effect: float, sd_between: float, sd_within: float, subjects: int, seeds: int,
          alpha: float = 0.05, alternative: str = "larger") -> float:
    """Power of the paired t-test on subject means; ``effect`` is the distance from H0 in Dice
    (the margin for non-inferiority at a true difference of 0; the true difference for two-sided)."""
    from statsmodels.stats.power import TTestPower

    sd = np.sqrt(sd_between ** 2 + sd_within ** 2 / seeds)
    if subjects < 2 or not sd > 0:
        return float("nan")
    return float(TTestPower().power(effect_size=effect / sd, nobs=subjects, alpha=alpha, alternative=alternative))


def subjects_needed(effect: float, sd_between: float, sd_within: float, seeds: int, target: float = 0.8,
                    alpha: float = 0.05, alternative: str = "larger") -> int | None:
    """Smallest number of test subjects giving `target` power; None if beyond MAX_SUBJECTS."""
    low, high = 2, MAX_SUBJECTS
    if power(effect, sd_between, sd_within, high, seeds, alpha, alternative) < target:
        return None
    while low < high:  # power rises with subjects: bisect on whole numbers
        middle = (low + high) // 2
        if power(effect, sd_between, sd_within, middle, seeds, alpha, alternative) >= target:
            high = middle
        else:
            low = middle + 1
    return low


def plan(scores: pd.DataFrame, metric: str, reference: tuple[str, int] | None, margin: float = 0.02,
         alpha: float = 0.05, target: float = 0.8) -> pd.DataFrame:
    """Per strategy: pooled variance components of its non-inferiority comparisons, the power this study
    had for the margin, and the test subjects needed for 80% power at several seed counts."""
    rows = []
    tuned = fine_tuned(scores)
    for strategy, group in tuned.groupby("strategy", sort=True):
        ns = sorted((int(n) for n in group["n"].unique()), reverse=True)
        ref = reference or (strategy, ns[0])
        parts = [paired_by_seed(scores, (strategy, n), ref, metric) for n in ns if (strategy, n) != ref]
        parts = [p for p in parts if len(p.dropna(how="all")) > 1]
        if not parts:
            continue
        components = [variance_components(p) for p in parts]
        between = float(np.sqrt(np.mean([c[0] ** 2 for c in components])))
        within = float(np.sqrt(np.mean([c[1] ** 2 for c in components])))
        seeds = components[0][2]
        subjects = int(np.median([len(p.dropna(how="all")) for p in parts]))
        row = {"strategy": strategy, "metric": metric, "reference": f"{ref[0]}@{ref[1]}", "margin": margin,
               "sd_between": between, "sd_within": within, "subjects": subjects, "seeds": seeds,
               "power": power(margin, between, within, subjects, seeds, alpha)}
        for s in SEED_CHOICES:
            row[f"subjects_at_{s}_seeds"] = subjects_needed(margin, between, within, s, target, alpha)
        rows.append(row)
    return pd.DataFrame(rows)
