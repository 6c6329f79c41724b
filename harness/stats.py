"""Statistics over Dice tables: pure functions from tidy DataFrames to tidy DataFrames.

Input is per-image metrics with pixel counts and the columns strategy, n, seed, subject. Image Dice
is averaged within (run, test subject) first: the subject, not the image, is the unit, because images
of one subject are strongly correlated. Paired tests in this module pair (test subject, seed) units:
they ask whether a difference exceeds training-seed noise *on these test subjects*; generalising to
new subjects needs more test subjects (cross-validation over subjects).
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as sps

from harness.evaluate import CLASSES, dice

METRICS = tuple(f"dice_{c}" for c in CLASSES)
BASE = "base"


def with_dice(images: pd.DataFrame, empty: str = "both-one") -> pd.DataFrame:
    """Recompute the Dice columns from the stored pixel counts under an empty-mask convention."""
    out = images.copy()
    for name in CLASSES:
        out[f"dice_{name}"] = dice(out[f"{name}_inter"], out[f"{name}_pred"], out[f"{name}_ref"], empty)
    return out


def subject_scores(images: pd.DataFrame, empty: str = "both-one") -> pd.DataFrame:
    """One row per (strategy, n, seed, subject): mean image Dice and the run's labelled images."""
    keys = ["strategy", "n", "seed", "subject"]
    scored = with_dice(images, empty)
    out = scored.groupby(keys, sort=True)[list(METRICS)].mean()
    out["labelled_images"] = scored.groupby(keys, sort=True)["labelled_images"].first()
    return out.reset_index()


def bootstrap_mean_ci(values: np.ndarray, n_boot: int = 2000, level: float = 0.95,
                      rng: np.random.Generator | None = None) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of independent units."""
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = rng or np.random.default_rng(0)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def summarise(scores: pd.DataFrame, metric: str, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per strategy x n: mean Dice over test subjects (seeds averaged within subject), its 95%
    bootstrap CI over subjects, and the seed-to-seed SD of the study-level mean."""
    rows = []
    rng = np.random.default_rng(seed)
    for (strategy, n), group in scores.groupby(["strategy", "n"], sort=True):
        per_subject = group.groupby("subject")[metric].mean()
        per_seed = group.groupby("seed")[metric].mean()
        low, high = bootstrap_mean_ci(per_subject.to_numpy(), n_boot, rng=rng)
        rows.append({
            "strategy": strategy, "n": int(n), "metric": metric, "mean": float(per_subject.mean()),
            "ci_low": low, "ci_high": high,
            "seed_sd": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else float("nan"),
            "subjects": len(per_subject), "seeds": len(per_seed),
            "labelled_images": float(group.groupby("seed")["labelled_images"].first().mean()),
        })
    return pd.DataFrame(rows)


def paired_test(differences: np.ndarray) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test (zeros dropped); returns (statistic, p)."""
    d = np.asarray(differences, float)
    d = d[~np.isnan(d)]
    if len(d) == 0 or np.all(d == 0):
        return float("nan"), 1.0
    result = sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return float(result.statistic), float(result.pvalue)


def holm(p_values: pd.Series) -> np.ndarray:
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, float)
    if len(p) == 0:
        return p
    return multipletests(p, method="holm")[1]


def _difference(scores: pd.DataFrame, a: tuple[str, int], b: tuple[str, int], metric: str,
                rng: np.random.Generator, n_boot: int) -> dict:
    """a minus b over (subject, seed) units present in both; CI by bootstrap over subjects."""
    def pick(strategy: str, n: int) -> pd.Series:
        part = scores[(scores["strategy"] == strategy) & (scores["n"] == n)]
        return part.set_index(["subject", "seed"])[metric]

    left, right = pick(*a), pick(*b)
    if b[0] == BASE:  # the base model has no seeds: it pairs with every seed of the same subject
        base = right.droplevel("seed")
        right = pd.Series(left.index.get_level_values("subject").map(base), index=left.index)
    diff = (left - right).dropna()
    statistic, p = paired_test(diff.to_numpy())
    per_subject = diff.groupby(level="subject").mean()
    low, high = bootstrap_mean_ci(per_subject.to_numpy(), n_boot, rng=rng)
    return {"difference": float(per_subject.mean()) if len(per_subject) else float("nan"),
            "ci_low": low, "ci_high": high, "units": len(diff), "subjects": len(per_subject),
            "better": int((diff > 0).sum()), "statistic": statistic, "p": p}


def compare_strategies(scores: pd.DataFrame, metric: str, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Every pair of strategies at each n, paired by (subject, seed); Holm over all pairs and n."""
    rng = np.random.default_rng(seed)
    rows = []
    fine_tuned = scores[scores["strategy"] != BASE]
    for n, group in fine_tuned.groupby("n", sort=True):
        for a, b in combinations(sorted(group["strategy"].unique()), 2):
            rows.append({"n": int(n), "a": a, "b": b, "metric": metric,
                         **_difference(scores, (a, n), (b, n), metric, rng, n_boot)})
    return _with_holm(rows)


def compare_budgets(scores: pd.DataFrame, metric: str, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Within each strategy, each budget against the next smaller one (nested subsets, same seeds)."""
    rng = np.random.default_rng(seed)
    rows = []
    for strategy, group in scores[scores["strategy"] != BASE].groupby("strategy", sort=True):
        ns = sorted(group["n"].unique())
        for small, large in zip(ns, ns[1:]):
            rows.append({"strategy": strategy, "n_small": int(small), "n_large": int(large), "metric": metric,
                         **_difference(scores, (strategy, large), (strategy, small), metric, rng, n_boot)})
    return _with_holm(rows)


def compare_to_base(scores: pd.DataFrame, metric: str, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Each fine-tuned strategy x n against the source-only base model on the same test subjects."""
    rng = np.random.default_rng(seed)
    rows = []
    if not (scores["strategy"] == BASE).any():
        return pd.DataFrame()
    for (strategy, n), _ in scores[scores["strategy"] != BASE].groupby(["strategy", "n"], sort=True):
        rows.append({"strategy": strategy, "n": int(n), "metric": metric,
                     **_difference(scores, (strategy, n), (BASE, 0), metric, rng, n_boot)})
    return _with_holm(rows)


def _with_holm(rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    if len(table):
        table["p_holm"] = holm(table["p"])
    return table


def plateau(budgets: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per strategy: the smallest n after which no larger budget gave a significant gain (Holm)."""
    rows = []
    for strategy, group in budgets.groupby("strategy", sort=True):
        group = group.sort_values("n_small")
        enough = int(group["n_large"].max())
        for row in group.iloc[::-1].itertuples():
            if row.p_holm < alpha and row.difference > 0:
                break
            enough = int(row.n_small)
        rows.append({"strategy": strategy, "metric": group["metric"].iloc[0], "n_enough": enough})
    return pd.DataFrame(rows)
