"""Estimates and tests over subject-level scores.

The design is crossed: each training run (strategy, n, seed, fold) is evaluated on every test subject of
its fold, so subjects of one fold share run-to-run noise. Tests treat the test subject as the unit and add
that shared noise to the variance (`mean_and_variance`); ignoring it gave 8-9% false positives at alpha 5%
with the run noise measured on the phantom.

- Means: mean over test subjects of the seed-averaged score; 95% CI by hierarchical bootstrap-t
  (subjects, then seeds/runs, within fold).
- Two-sided comparisons (strategies at equal n, budgets, fine-tuned vs base): paired by subject and seed;
  t-test with the crossed variance (default), or Wilcoxon signed-rank / sign-flip permutation over subject
  means; Friedman omnibus over subject means where more than two strategies share an n; Holm per family.
- Non-inferiority (the guideline): one-sided t-test of the paired difference against the margin -δ,
  from the largest n downwards in a fixed sequence; TOST equivalence beside it.
"""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as sps

from harness.errors import UsageError
from harness.stats.tables import (base_for, by_seed, configurations, fine_tuned, is_base, paired_by_seed,
                                  subject_differences)

TESTS = ("t", "wilcoxon", "permutation")
EXACT_SIGN_FLIPS = 2 ** 16  # enumerate all sign patterns up to 16 subjects, else sample
MIN_BOOTSTRAP_UNITS = 10
#: A standard error below this is floating-point noise of identical values (Dice differences are in [-1, 1]):
#: it is treated as 0, so the test is undefined instead of printing p < 0.0001 and d_z = 8e15.
TINY_SE = 1e-9
DIFFERENCE_BOUNDS = (-1.0, 1.0)  # a difference of two Dice means


def _blocks(matrix: pd.DataFrame) -> list[np.ndarray]:
    """One complete subjects x seeds block per fold: seeds missing for a fold's run and subjects still
    missing a seed are dropped (a failed run is missing for every subject of its fold)."""
    blocks = []
    for _, part in matrix.groupby(level="fold", sort=True):
        part = part.dropna(axis=1, how="all").dropna(axis=0, how="any")
        if part.size:
            blocks.append(part.to_numpy(float))
    return blocks


def _mean_squares(blocks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled within-fold two-way ANOVA of subjects x seeds blocks, batched over leading axes:
    (mean, [MS_subject, MS_seed, MS_residual], [df ...]). Seeds at one fold are runs shared by its subjects."""
    total = sum(b.shape[-2] * b.shape[-1] for b in blocks)
    mean = sum(b.sum(axis=(-2, -1)) for b in blocks) / total
    ss = [0.0, 0.0, 0.0]
    df = [0, 0, 0]
    for b in blocks:
        n, s = b.shape[-2:]
        rows, cols, grand = b.mean(axis=-1), b.mean(axis=-2), b.mean(axis=(-2, -1))
        ss[0] = ss[0] + s * ((rows - grand[..., None]) ** 2).sum(axis=-1)
        ss[1] = ss[1] + n * ((cols - grand[..., None]) ** 2).sum(axis=-1)
        ss[2] = ss[2] + ((b - rows[..., None] - cols[..., None, :] + grand[..., None, None]) ** 2).sum(axis=(-2, -1))
        df = [df[0] + n - 1, df[1] + s - 1, df[2] + (n - 1) * (s - 1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        ms = np.stack([np.asarray(ss[i], float) / df[i] if df[i] else np.full(np.shape(mean), np.nan)
                       for i in range(3)])
    return mean, ms, np.asarray(df, float)


def mean_and_variance(blocks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grand mean of a crossed subjects x runs design, the variance of that mean, and its degrees of freedom.

    Model per fold f: y_is = mu + b_i + v_fs + e_is, where v_fs is the training run at seed s, shared by
    every test subject of fold f. Var(mean) = s_b^2/N + s_v^2 sum_f (n_f/N)^2 / S + s_e^2/(N S), estimated
    from the pooled ANOVA mean squares (MS_subject/N + (MS_seed - MS_res) sum_f (n_f/N)^2 / n_bar) / S, with
    degrees of freedom between the parts' own (see below). Ignoring v (testing subject means as if independent) is what
    inflates false positives when runs are shared; a negative run component is set to 0. With one seed the
    run term is not separable: the plain variance of subject means over N is used (a paired t-test).
    """
    sizes = np.array([b.shape[-2] for b in blocks], float)
    seeds = float(np.mean([b.shape[-1] for b in blocks]))
    units = sizes.sum()
    if seeds < 2:
        means = np.concatenate([b[..., 0] for b in blocks], axis=-1)
        var = means.var(axis=-1, ddof=1) / units if units > 1 else np.full(np.shape(means.mean(axis=-1)), np.nan)
        return means.mean(axis=-1), var, np.full(np.shape(var), units - 1)
    mean, ms, df = _mean_squares(blocks)
    weight = float(np.sum((sizes / units) ** 2)) / float(sizes.mean())
    subject_part = ms[0] / units
    run_part = np.nan_to_num(np.maximum(ms[1] - ms[2], 0.0)) * weight
    var = (subject_part + run_part) / seeds
    # Degrees of freedom: the weighted harmonic mean of the parts' df, weighted by each part's share of the
    # variance. Satterthwaite's df (shares squared) collapses towards 0 when the run part sits near its
    # boundary (MS_seed just above MS_res: CIs of 1e11 were printed) and, with few runs (2 seeds, 3 folds:
    # 3 df), it is too large exactly when MS_seed is small by chance, so the test rejected 6% at alpha 5%.
    # Linear shares give a df that is continuous, never below the smaller part's df nor above the two
    # parts' Satterthwaite df (run part taken with MS_seed's df), and that keeps alpha at 2 and 3 seeds with
    # light and heavy run noise (tests/test_calibration.py).
    return mean, var, share_weighted_df(subject_part, run_part, df[0], df[1])


def share_weighted_df(subject_part, run_part, df_subject: float, df_run: float):
    """The t-test's df: the harmonic mean of the subject part's and the run part's df, weighted by each part's
    share of the variance (see `mean_and_variance`); planning applies it to expected mean squares."""
    subject_part, run_part = np.asarray(subject_part, float), np.asarray(run_part, float)
    if not df_run > 0:
        return np.full(np.shape(subject_part), float(df_subject))
    with np.errstate(invalid="ignore", divide="ignore"):
        share = subject_part / (subject_part + run_part)
        return 1.0 / (share / df_subject + (1 - share) / df_run)


def t_statistics(blocks: list[np.ndarray], null: float = 0.0, alternative: str = "two-sided") -> dict:
    """The crossed-variance t-test of the grand mean against ``null``, batched over leading axes of the
    blocks (one fold's subjects x seeds each): arrays of mean, se, df, t and p. ``t_test`` is this on one
    study; calibration runs it on thousands at once."""
    mean, var, dof = mean_and_variance(blocks)
    se = np.sqrt(var)
    se = np.where(se > TINY_SE, se, np.where(np.isnan(se), np.nan, 0.0))  # rounding noise of equal values is 0
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(se > 0, (mean - null) / np.where(se > 0, se, 1.0), np.nan)
    p = {"two-sided": lambda: 2 * sps.t.sf(np.abs(t), dof), "greater": lambda: sps.t.sf(t, dof),
         "less": lambda: sps.t.cdf(t, dof)}[alternative]()
    return {"mean": mean, "se": se, "df": dof, "t": t, "p": p}


def t_test(matrix: pd.DataFrame, null: float = 0.0, alternative: str = "two-sided") -> dict:
    """t-test of the grand mean of a (fold, subject) x seed matrix against `null`, with the crossed variance."""
    blocks = _blocks(matrix)
    units = sum(b.shape[0] for b in blocks)
    if units < 2:
        return {"mean": float("nan"), "se": float("nan"), "df": float("nan"), "t": float("nan"), "p": float("nan"),
                "subjects": units}
    return {**{k: float(v) for k, v in t_statistics(blocks, null, alternative).items()}, "subjects": units}


def t_interval(result: dict, level: float = 0.95, bounds: tuple[float, float] = (-np.inf, np.inf)) -> tuple[float, float]:
    """Two-sided t interval, cut to ``bounds`` (the values the quantity can take: a difference of Dice means
    lies in [-1, 1]; the cut keeps coverage); NaN where the standard error is 0 or unknown (a zero-width
    interval would claim certainty the data cannot give)."""
    half = sps.t.ppf(1 - (1 - level) / 2, result["df"]) * result["se"] if result["se"] > 0 else np.nan
    return float(max(result["mean"] - half, bounds[0])), float(min(result["mean"] + half, bounds[1]))


def mean_ci(matrix: pd.DataFrame, n_boot: int = 2000, level: float = 0.95,
            rng: np.random.Generator | None = None) -> tuple[float, float, float]:
    """(mean, low, high): mean over subjects of the seed-averaged score and its hierarchical bootstrap CI.

    Bootstrap-t over the design: within each fold, subjects with replacement, then seeds with replacement
    (a drawn seed is a whole training run, shared by the fold's subjects); each replicate is studentised by
    the crossed standard error (`mean_and_variance`), so shared run noise and few subjects are both allowed
    for. With one seed it is a bootstrap-t over subjects; below 10 subjects (where resamples repeat one or
    two subjects and studentising breaks down) it is the t interval.
    """
    return mean_ci_blocks(_blocks(matrix), n_boot, level, rng)


def mean_ci_blocks(blocks: list[np.ndarray], n_boot: int = 2000, level: float = 0.95,
                   rng: np.random.Generator | None = None) -> tuple[float, float, float]:
    """`mean_ci` of one study given as its fold blocks (subjects x seeds)."""
    units = sum(b.shape[0] for b in blocks)
    if units == 0:
        return float("nan"), float("nan"), float("nan")
    mean, var, dof = (float(x) for x in mean_and_variance(blocks))
    if units < 3 or not np.sqrt(var) > TINY_SE:
        return mean, float("nan"), float("nan")
    if units < MIN_BOOTSTRAP_UNITS:  # resamples of a handful of subjects are degenerate: the t interval
        return (mean, *t_interval({"mean": mean, "se": np.sqrt(var), "df": dof}, level))
    rng = rng or np.random.default_rng(0)
    drawn = []
    for b in blocks:
        n, s = b.shape
        rows = rng.integers(0, n, size=(n_boot, n))
        cols = rng.integers(0, s, size=(n_boot, s))
        drawn.append(b[rows[:, :, None], cols[:, None, :]])
    star_mean, star_var, _ = mean_and_variance(drawn)
    # a resample with (numerically) no variance, e.g. one seed drawn twice where subjects do not vary,
    # would studentise by ~1e-30; it carries no information about the spread
    usable = star_var > 1e-10 * var
    with np.errstate(invalid="ignore", divide="ignore"):
        t_star = (star_mean - mean) / np.sqrt(np.where(usable, star_var, np.nan))
    t_star = t_star[np.isfinite(t_star)]
    if len(t_star) < n_boot / 2:  # most resamples degenerate: the bootstrap says nothing, use the t interval
        return (mean, *t_interval({"mean": mean, "se": np.sqrt(var), "df": dof}, level))
    alpha = (1 - level) / 2
    q_low, q_high = np.quantile(t_star, [alpha, 1 - alpha])
    se = np.sqrt(var)
    return mean, float(mean - q_high * se), float(mean - q_low * se)


def summarise(scores: pd.DataFrame, metric: str, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per strategy x n: mean over subjects with its hierarchical-bootstrap 95% CI, and the seed-to-seed SD
    of the study-level mean (over all folds' subjects at one seed)."""
    rng = np.random.default_rng(seed)
    # an interval is cut to the values the metric can take (Dice in [0, 1], errors >= 0); the cut keeps
    # coverage, and a skewed bootstrap-t on few folds could otherwise reach beyond them
    bounds = (0.0, 1.0) if metric.startswith("dice") else (0.0, np.inf) if "error" in metric else (-np.inf, np.inf)
    rows = []
    for config in configurations(scores):
        part = scores[(scores["strategy"] == config[0]) & (scores["n"] == config[1])]
        if part[metric].notna().sum() == 0:
            continue
        matrix = by_seed(scores, config, metric)
        mean, low, high = mean_ci(matrix, n_boot, rng=rng)
        low, high = max(low, bounds[0]), min(high, bounds[1])  # NaN stays NaN
        per_seed = part.groupby("seed")[metric].mean()
        rows.append({
            "strategy": config[0], "n": config[1], "metric": metric, "mean": mean, "ci_low": low, "ci_high": high,
            "seed_sd": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else float("nan"),
            "subjects": len(matrix), "seeds": int(matrix.shape[1]),
            "labelled_images": float(part.groupby(["seed", "fold"])["labelled_images"].first().mean()),
            "expert_minutes": float(part.groupby(["seed", "fold"])["expert_minutes"].first().mean())
            if "expert_minutes" in part else float("nan"),
        })
    return pd.DataFrame(rows)


def paired_test(paired: pd.DataFrame | np.ndarray, method: str = "t",
                alternative: str = "two-sided") -> tuple[float, float]:
    """Test that paired differences are centred on 0; returns (statistic, p).

    ``t`` (default): t-test with the crossed subjects x runs variance (`mean_and_variance`);
    ``wilcoxon``: signed-rank on subject means, zeros dropped, exact null distribution for small n;
    ``permutation``: sign-flip test of the mean of subject means, exact up to 16 subjects, 20 000 flips above.
    The last two treat subjects as independent, which holds with one seed per subject and run, but not when
    several test subjects share a training run (their false-positive rate rises with the run-to-run noise).
    """
    if method not in TESTS:
        raise UsageError(f"unknown test '{method}'; choose one of {', '.join(TESTS)}")
    if method == "t":
        matrix = paired if isinstance(paired, pd.DataFrame) else _as_matrix(paired)
        result = t_test(matrix, 0.0, alternative)
        return result["t"], result["p"]
    d = subject_differences(paired).to_numpy() if isinstance(paired, pd.DataFrame) else np.asarray(paired, float)
    d = d[~np.isnan(d)]
    if len(d) == 0 or np.all(d == 0):
        return float("nan"), 1.0
    if method == "wilcoxon":
        result = sps.wilcoxon(d, zero_method="wilcox", alternative=alternative)
        return float(result.statistic), float(result.pvalue)
    resamples = np.inf if 2 ** len(d) <= EXACT_SIGN_FLIPS else 20_000
    result = sps.permutation_test((d,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
                                  vectorized=True, n_resamples=resamples, alternative=alternative,
                                  rng=np.random.default_rng(0))
    return float(result.statistic), float(result.pvalue)


def _as_matrix(d: np.ndarray) -> pd.DataFrame:
    """Subject-level differences as a one-fold, one-seed matrix."""
    d = np.asarray(d, float)
    return pd.DataFrame({0: d}, index=pd.MultiIndex.from_arrays([np.zeros(len(d), int), np.arange(len(d))],
                                                                names=["fold", "subject"]))


def image_level_wilcoxon(d: np.ndarray) -> dict:
    """Descriptive per-image Wilcoxon signed-rank, as R's wilcox.test(paired = TRUE) computes it with many
    images: zeros dropped, normal approximation with tie and continuity correction. Images of one subject
    are not independent, so its p-value is not a valid test of a difference between methods."""
    d = np.asarray(d, float)
    d = d[~np.isnan(d)]
    nonzero = d[d != 0]
    ranks = sps.rankdata(np.abs(nonzero))
    v = float(ranks[nonzero > 0].sum())  # R's V
    result = sps.wilcoxon(nonzero, zero_method="wilcox", correction=True, method="approx")
    return {"images": len(d), "V": v, "p": float(result.pvalue), "mean_difference": float(d.mean())}


def holm(p_values) -> np.ndarray:
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, float)
    out = np.full(len(p), np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def _difference(scores: pd.DataFrame, a: tuple[str, int], b: tuple[str, int], metric: str, method: str) -> dict:
    """a minus b, paired by subject and seed; mean difference with its t interval (crossed variance)."""
    paired = paired_by_seed(scores, a, b, metric)
    d = subject_differences(paired)
    result = t_test(paired)
    statistic, p = (result["t"], result["p"]) if method == "t" else paired_test(paired, method)
    low, high = t_interval(result, bounds=DIFFERENCE_BOUNDS)
    sd = float(d.std(ddof=1)) if len(d) > 1 else float("nan")
    sd = sd if sd > TINY_SE else float("nan")
    if result["p"] != result["p"]:
        p = float("nan")  # a rank test of an untestable design is no verdict either
    return {"difference": result["mean"], "ci_low": low, "ci_high": high,
            "dz": result["mean"] / sd if sd == sd else float("nan"),
            "subjects": len(d), "better": int((d > 0).sum()), "test": method, "statistic": statistic, "p": p,
            "seeds": int(paired.dropna(axis=1, how="all").shape[1]), "reason": untestable(result)}


def _with_holm(rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    if len(table):
        table["p_holm"] = holm(table["p"])
    return table


def compare_strategies(scores: pd.DataFrame, metric: str, method: str = "t") -> pd.DataFrame:
    """Every pair of strategies at each n; Holm over all pairs and n of this metric."""
    rows = []
    tuned = fine_tuned(scores)
    for n, group in tuned.groupby("n", sort=True):
        for a, b in combinations(sorted(group["strategy"].unique()), 2):
            rows.append({"n": int(n), "a": a, "b": b, "metric": metric,
                         **_difference(scores, (a, int(n)), (b, int(n)), metric, method)})
    return _with_holm(rows)


def friedman(scores: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Omnibus test per n where three or more strategies were run: Friedman over subjects (complete blocks)."""
    rows = []
    tuned = fine_tuned(scores)
    for n, group in tuned.groupby("n", sort=True):
        wide = group.groupby(["subject", "strategy"])[metric].mean().unstack("strategy").dropna()
        if wide.shape[1] < 3 or wide.shape[0] < 2:
            continue
        result = sps.friedmanchisquare(*(wide[c].to_numpy() for c in wide.columns))
        rows.append({"n": int(n), "metric": metric, "strategies": wide.shape[1], "subjects": wide.shape[0],
                     "statistic": float(result.statistic), "df": wide.shape[1] - 1, "p": float(result.pvalue)})
    return pd.DataFrame(rows)


def compare_budgets(scores: pd.DataFrame, metric: str, method: str = "t") -> pd.DataFrame:
    """Within each strategy, each budget against the next smaller one (nested subsets, same seeds)."""
    rows = []
    for strategy, group in fine_tuned(scores).groupby("strategy", sort=True):
        ns = sorted(int(n) for n in group["n"].unique())
        for small, large in zip(ns, ns[1:]):
            rows.append({"strategy": strategy, "n_small": small, "n_large": large, "metric": metric,
                         **_difference(scores, (strategy, large), (strategy, small), metric, method)})
    return _with_holm(rows)


def compare_to_base(scores: pd.DataFrame, metric: str, method: str = "t") -> pd.DataFrame:
    """Each fine-tuned strategy x n against the source-only base model on the same test subjects."""
    available = set(scores["strategy"])
    rows = [{"strategy": strategy, "n": n, "metric": metric, "base": base_for(strategy, available),
             **_difference(scores, (strategy, n), (base_for(strategy, available), 0), metric, method)}
            for strategy, n in configurations(scores) if not is_base(strategy) and base_for(strategy, available)]
    return _with_holm(rows) if rows else pd.DataFrame()


def noninferiority(paired: pd.DataFrame | np.ndarray, margin: float, alpha: float = 0.05) -> dict:
    """One-sided t-test of H0: mean difference <= -margin at level ``alpha`` (crossed variance; with one
    seed the paired t-test on subject means), the two-sided (1 - 2 alpha) t interval of the difference (the
    CONSORT rule: with alpha 0.05 a 90% CI, whose lower end is above -margin exactly when p < alpha), and
    the TOST equivalence p-value for (-margin, +margin): the larger of the two one-sided p-values.
    ``reason`` says why p is missing."""
    matrix = paired if isinstance(paired, pd.DataFrame) else _as_matrix(paired)
    lower = t_test(matrix, -margin, "greater")
    upper = t_test(matrix, margin, "less")
    level = 1 - 2 * alpha
    low, high = t_interval(lower, level, DIFFERENCE_BOUNDS)
    return {"difference": lower["mean"], "subjects": lower["subjects"], "ci_level": level,
            "ci_low": low, "ci_high": high, "t": lower["t"], "df": lower["df"], "p": lower["p"],
            "p_tost": max(lower["p"], upper["p"]), "reason": untestable(lower)}


def untestable(result: dict) -> str:
    """Why a t-test result has no p-value ('' when it has one)."""
    if result["p"] == result["p"]:
        return ""
    if result["subjects"] == 0:
        return "no test subject has a score on both sides (the metric is missing there)"
    if result["subjects"] < 2:
        return "only 1 test subject has a score on both sides: at least 2 are needed"
    if result["se"] == 0:
        return (f"no variance: every paired difference is {result['mean']:+.3f}, so the t-test is undefined "
                "(identical results? check that the two configurations really differ)")
    return "the variance could not be estimated"


def parse_reference(text: str | None, scores: pd.DataFrame) -> tuple[str, int] | None:
    """'STRATEGY@N' or 'STRATEGY' (its largest n) -> a configuration of the study; None = the default:
    all_frames at its largest n when it was run, else each strategy's own largest n."""
    tuned = fine_tuned(scores)
    if text is None:
        if (tuned["strategy"] == "all_frames").any():
            return "all_frames", int(tuned.loc[tuned["strategy"] == "all_frames", "n"].max())
        return None
    strategy, _, n_text = text.partition("@")
    known = sorted(tuned["strategy"].unique())
    if strategy not in known:
        raise UsageError(f"--reference '{text}': strategy '{strategy}' is not in this study "
                         f"(it has {', '.join(known)}); write STRATEGY or STRATEGY@N")
    ns = sorted(int(n) for n in tuned.loc[tuned["strategy"] == strategy, "n"].unique())
    if not n_text:
        return strategy, ns[-1]
    try:
        n = int(n_text)
    except ValueError:
        raise UsageError(f"--reference '{text}': N must be a whole number, as in {strategy}@{ns[-1]}") from None
    if n not in ns:
        raise UsageError(f"--reference '{text}': {strategy} was run at n = {', '.join(map(str, ns))}, not {n}")
    return strategy, n


def noninferiority_table(scores: pd.DataFrame, metric: str, reference: tuple[str, int] | None,
                         margin: float = 0.02, alpha: float = 0.05) -> pd.DataFrame:
    """Per strategy, every n tested for non-inferiority to the reference in a fixed sequence from the
    largest n down: a smaller n is tested only while every larger one was non-inferior, so each strategy's
    claim holds at family-wise level alpha without correction. ``reference`` None = each strategy's own
    largest n ("is a smaller budget as good as the largest studied?"). ``reason`` says why a row has no
    verdict: untestable (too few subjects, no variance) or the sequence stopped above it."""
    rows = []
    tuned = fine_tuned(scores)
    for strategy, group in tuned.groupby("strategy", sort=True):
        ns = sorted((int(n) for n in group["n"].unique()), reverse=True)
        ref = reference or (strategy, ns[0])
        stopped_at = None
        for n in ns:
            if (strategy, n) == ref:
                continue
            result = noninferiority(paired_by_seed(scores, (strategy, n), ref, metric), margin, alpha)
            tested = stopped_at is None and result["p"] == result["p"]
            non_inferior = bool(tested and result["p"] < alpha)
            if stopped_at is not None:
                result["reason"] = f"not tested: the sequence stopped at n = {stopped_at}"
            elif not non_inferior:
                stopped_at = n
            rows.append({"strategy": strategy, "n": n, "reference": f"{ref[0]}@{ref[1]}", "metric": metric,
                         "margin": margin, "alpha": alpha, **result, "tested": tested, "non_inferior": non_inferior})
    return pd.DataFrame(rows)


def enough(table: pd.DataFrame) -> pd.DataFrame:
    """Per strategy: the smallest n shown non-inferior on every metric (intersection-union: each metric
    at level alpha, so the joint claim is at level alpha too); NaN where none was."""
    rows = []
    for strategy, group in table.groupby("strategy", sort=True):
        per_metric = {}
        for metric, part in group.groupby("metric"):
            shown = part.loc[part["non_inferior"], "n"]
            per_metric[metric] = int(shown.min()) if len(shown) else None
        values = list(per_metric.values())
        rows.append({"strategy": strategy, "reference": group["reference"].iloc[0],
                     **{f"n_{m}": v for m, v in per_metric.items()},
                     "n_enough": max(values) if values and None not in values else None})
    return pd.DataFrame(rows)


def image_level_comparisons(images: pd.DataFrame, reference: tuple[str, int] | None, metric: str) -> pd.DataFrame:
    """Descriptive only: each configuration against the reference over paired images (same seed, fold and
    image), with the per-image Wilcoxon as R computes it. Shown to compare with published image-level
    analyses; images of one subject are not independent, so these p-values carry no verdict."""
    identity = ["image"] if "image" in images else ["slice", "frame"]
    if reference is None or metric not in images or not set(identity) <= set(images):
        return pd.DataFrame()  # without image identities there is nothing to pair
    key = [k for k in ["seed", "fold", "subject", *identity] if k in images]

    def pick(config: tuple[str, int]) -> pd.Series:
        part = images[(images["strategy"] == config[0]) & (images["n"] == config[1])]
        return part.set_index(key)[metric]

    right = pick(reference)
    rows = []
    for config in configurations(images):
        if config == reference or is_base(config[0]):
            continue
        left = pick(config)
        joined = pd.concat([left.rename("a"), right.rename("b")], axis=1, join="inner").dropna()
        if len(joined) < 2:
            continue
        rows.append({"strategy": config[0], "n": config[1], "reference": f"{reference[0]}@{reference[1]}",
                     "metric": metric, **image_level_wilcoxon((joined["a"] - joined["b"]).to_numpy())})
    return pd.DataFrame(rows)
