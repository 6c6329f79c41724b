"""Planning: how many test subjects and seeds would resolve the margin, from the study's own variances.

The paired difference of test subject i at seed s in fold f is d_is = Δ + b_i + v_fs + e_is: b the subject's
own preference (SD s_b), v the training run's shift, shared by every test subject of its fold (SD s_v), e the
rest (SD s_e). With N subjects in F equal folds and S seeds the mean difference has variance

    s_b^2 / N + s_v^2 / (F S) + s_e^2 / (N S)

which is what the study's t-tests estimate (`inference.mean_and_variance`). The run term does not shrink with
more subjects: where it dominates, only more seeds (or folds) buy power, and the table says so. Power is that
of the t-test the study uses (noncentral t, with the study's df rule at the expected mean squares), for non-inferiority at a true difference of 0 (effect = margin) or a two-sided test of a true
difference Δ.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from harness.stats.inference import _blocks, _mean_squares, share_weighted_df
from harness.stats.tables import fine_tuned, paired_by_seed

SEED_CHOICES = (1, 2, 3, 5, 10)
MAX_SUBJECTS = 10_000


@dataclass(frozen=True)
class Components:
    """SDs of a paired difference: between subjects, training run (shared by a fold), residual."""

    between: float
    run: float
    residual: float
    separable: bool = True  # False with one seed: run and residual cannot be told from between

    @property
    def total(self) -> float:
        return float(np.sqrt(self.between ** 2 + self.run ** 2 + self.residual ** 2))


def variance_components(paired: pd.DataFrame) -> Components:
    """Components from a (fold, subject) x seeds matrix of paired differences (pooled within-fold ANOVA,
    negative estimates set to 0). With one seed everything is folded into ``between``."""
    blocks = _blocks(paired)
    seeds = min((b.shape[1] for b in blocks), default=0)
    units = sum(b.shape[0] for b in blocks)
    if units < 2:
        return Components(float("nan"), float("nan"), float("nan"), False)
    if seeds < 2:
        values = np.concatenate([b[:, 0] for b in blocks])
        return Components(float(values.std(ddof=1)), 0.0, 0.0, False)
    blocks = [b[:, :seeds] for b in blocks]
    _, ms, _ = _mean_squares(blocks)
    per_fold = units / len(blocks)
    residual = float(ms[2]) if ms[2] == ms[2] else 0.0
    return Components(between=float(np.sqrt(max((ms[0] - residual) / seeds, 0.0))),
                      run=float(np.sqrt(max((ms[1] - residual) / per_fold, 0.0))),
                      residual=float(np.sqrt(residual)))


def design_variance(c: Components, subjects: int, seeds: int, folds: int = 1) -> tuple[float, float]:
    """(variance of the mean difference, df of the study's t-test) for a planned design."""
    var = c.between ** 2 / subjects + c.run ** 2 / (folds * seeds) + c.residual ** 2 / (subjects * seeds)
    if seeds < 2:
        return var, float(subjects - 1)
    per_fold = subjects / folds
    subject_part = (c.residual ** 2 + seeds * c.between ** 2) / subjects  # expected MS_subject / N
    run_part = per_fold * c.run ** 2 / subjects  # expected (MS_seed - MS_res) x weight
    return var, float(share_weighted_df(subject_part, run_part, subjects - folds, folds * (seeds - 1)))


def power(effect: float, c: Components, subjects: int, seeds: int, folds: int = 1, alpha: float = 0.05,
          alternative: str = "larger") -> float:
    """Power of the study's t-test at ``subjects`` test subjects in ``folds`` folds and ``seeds`` seeds;
    ``effect`` is the distance from H0 in Dice (the margin for non-inferiority at a true difference of 0; the
    true difference for two-sided). NaN where it cannot be computed (no variance, fewer than 2 subjects per
    fold)."""
    if subjects < 2 * folds or not np.isfinite(c.total):
        return float("nan")
    var, dof = design_variance(c, subjects, seeds, folds)
    if not var > 0 or not dof > 0:
        return float("nan")
    ncp = effect / np.sqrt(var)
    if alternative == "two-sided":
        crit = sps.t.ppf(1 - alpha / 2, dof)
        value = sps.nct.sf(crit, dof, ncp) + sps.nct.cdf(-crit, dof, ncp)
        fallback = sps.norm.sf(crit - ncp) + sps.norm.cdf(-crit - ncp)
    else:
        crit = sps.t.ppf(1 - alpha, dof)
        value = sps.nct.sf(crit, dof, ncp)
        fallback = sps.norm.sf(crit - ncp)
    value = float(value) if np.isfinite(value) else float(fallback)  # nct fails far in the tail
    return float(np.clip(value, 0.0, 1.0))


def power_limit(effect: float, c: Components, seeds: int, folds: int = 1, alpha: float = 0.05,
                alternative: str = "larger") -> float:
    """The power approached with unlimited test subjects at ``seeds`` seeds: below 1 when runs vary."""
    return power(effect, c, MAX_SUBJECTS * folds, seeds, folds, alpha, alternative)


def subjects_needed(effect: float, c: Components, seeds: int, folds: int = 1, target: float = 0.8,
                    alpha: float = 0.05, alternative: str = "larger") -> int | None:
    """Smallest number of test subjects (in ``folds`` folds) giving ``target`` power; None where no number
    up to MAX_SUBJECTS does (see ``power_limit``) or power cannot be computed."""
    low, high = 2 * folds, MAX_SUBJECTS
    top = power(effect, c, high, seeds, folds, alpha, alternative)
    if not top >= target:
        return None
    while low < high:  # power rises with subjects: bisect on whole numbers
        middle = (low + high) // 2
        if power(effect, c, middle, seeds, folds, alpha, alternative) >= target:
            high = middle
        else:
            low = middle + 1
    return low


def plan(scores: pd.DataFrame, metric: str, reference: tuple[str, int] | None, margin: float = 0.02,
         alpha: float = 0.05, target: float = 0.8) -> pd.DataFrame:
    """Per strategy: pooled variance components of its non-inferiority comparisons, the power this study
    had for the margin, and the test subjects needed for 80% power at several seed counts (same folds).
    ``note`` says why a number is missing."""
    rows = []
    tuned = fine_tuned(scores)
    for strategy, group in tuned.groupby("strategy", sort=True):
        ns = sorted((int(n) for n in group["n"].unique()), reverse=True)
        ref = reference or (strategy, ns[0])
        parts = [paired_by_seed(scores, (strategy, n), ref, metric) for n in ns if (strategy, n) != ref]
        parts = [p.dropna(how="all") for p in parts]
        parts = [p for p in parts if len(p) > 1]
        if not parts:
            continue
        found = [variance_components(p) for p in parts]
        found = [f for f in found if np.isfinite(f.total)]
        if not found:
            continue
        c = Components(*(float(np.sqrt(np.mean([getattr(f, k) ** 2 for f in found])))
                         for k in ("between", "run", "residual")), separable=all(f.separable for f in found))
        subjects = int(np.median([len(p) for p in parts]))
        seeds = int(np.median([p.notna().sum(axis=1).median() for p in parts]))
        folds = int(np.median([p.index.get_level_values("fold").nunique() for p in parts]))
        now = power(margin, c, subjects, seeds, folds, alpha)
        row = {"strategy": strategy, "metric": metric, "reference": f"{ref[0]}@{ref[1]}", "margin": margin,
               "sd_between": c.between, "sd_run": c.run, "sd_residual": c.residual, "separable": c.separable,
               "subjects": subjects, "seeds": seeds, "folds": folds, "power": now}
        notes = []
        if not c.total > 0:
            notes.append("no variance: every paired difference is the same, so power cannot be estimated")
        limited = []
        for s in SEED_CHOICES:
            need = subjects_needed(margin, c, s, folds, target, alpha) if c.total > 0 else None
            row[f"subjects_at_{s}_seeds"] = need
            if need is None and c.total > 0:
                limited.append(f"{np.floor(100 * power_limit(margin, c, s, folds, alpha)):.0f}% at {s}")
        if limited:
            notes.append(f"the training-run SD {c.run:.4f} does not shrink with more test subjects: with {folds} "
                         f"fold(s) power cannot pass {', '.join(limited)} seed(s) however many subjects are "
                         "tested; more seeds or folds are needed")
        if not c.separable:
            notes.append("one seed: run-to-run noise cannot be separated and is folded into the between-subject SD")
        row["note"] = "; ".join(notes)
        rows.append(row)
    return pd.DataFrame(rows)
