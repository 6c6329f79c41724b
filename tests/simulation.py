"""Simulated studies with a known truth: the crossed structure of a real study, statistics only.

Test subjects are split into folds; each (config, fold, seed) is one training run shared by the fold's
subjects; each subject has many correlated images. Defaults are the variance components measured on the
phantom study (`--strategy all --n 2,10 --seeds 2`): between-subject SD of a paired difference 0.03, run SD
0.011, subject x run SD 0.02; the level SDs for a single configuration are 0.074 / 0.016 / 0.02.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def study(rng: np.random.Generator, effects: dict[tuple[str, int], float], subjects: int = 24, folds: int = 3,
          seeds: int = 3, images: int = 12, sd_subject: float = 0.074, sd_preference: float = 0.03,
          sd_run: float = 0.011, sd_subject_run: float = 0.02, sd_image: float = 0.06) -> pd.DataFrame:
    """Per-image table (strategy, n, seed, fold, subject, dice_lv, dice_my) with config means 0.8 + effect.

    Image Dice = subject level + the config's subject-specific preference + run noise + subject x run noise
    + an image pattern shared by the subject's images across configs (clustering) + image noise.
    """
    fold = np.repeat(np.arange(folds), subjects // folds)
    level = rng.normal(0, sd_subject, subjects)
    pattern = rng.normal(0, sd_image, (subjects, images))  # the same hard slices for every model
    rows = []
    for (strategy, n), effect in effects.items():
        preference = rng.normal(0, sd_preference / np.sqrt(2), subjects)
        run = rng.normal(0, sd_run / np.sqrt(2), (folds, seeds))
        for s in range(seeds):
            value = (0.8 + effect + level + preference + run[fold, s]
                     + rng.normal(0, sd_subject_run / np.sqrt(2), subjects))
            dice = value[:, None] + pattern + rng.normal(0, sd_image / 2, (subjects, images))
            rows.append(pd.DataFrame({
                "strategy": strategy, "n": n, "seed": s, "fold": np.repeat(fold, images),
                "subject": np.repeat([f"v{i:02d}" for i in range(subjects)], images),
                "dice_lv": dice.ravel(), "dice_my": dice.ravel() - 0.1, "labelled_images": 10 * n}))
    return pd.concat(rows, ignore_index=True)



def difference_blocks(rng: np.random.Generator, studies: int, effect: float = 0.0, subjects: int = 24, folds: int = 3,
                      seeds: int = 2, sd_preference: float = 0.03, sd_run: float = 0.011, sd_residual: float = 0.025,
                      outlier: float = 0.0) -> list[np.ndarray]:
    """``studies`` simulated studies at once, as the fold blocks the t-tests take: one array (studies,
    subjects of the fold, seeds) per fold of paired differences (or of scores: ``effect`` is then the true
    mean) d = effect + subject preference + run shift (shared by the fold's subjects at one seed) + residual.
    The defaults are the phantom's components; ``outlier`` > 0 gives the first subject of fold 0 a residual
    of that SD (a subject whose difference swings between seeds), the others keeping ``sd_residual``."""
    per = subjects // folds
    out = []
    for f in range(folds):
        value = (effect + rng.normal(0, sd_preference, (studies, per, 1)) + rng.normal(0, sd_run, (studies, 1, seeds))
                 + rng.normal(0, sd_residual, (studies, per, seeds)))
        if outlier and f == 0:
            value[:, 0, :] += rng.normal(0, outlier, (studies, seeds))
        out.append(value)
    return out


def calibration_table(studies: int = 100_000, seed: int = 2026) -> list[str]:
    """Markdown rows of the calibration numbers quoted in the notes: false-positive rates of the two-sided
    t-test, the non-inferiority test at the margin and TOST's upper test, bootstrap CI coverage, and the
    non-inferiority power against the planning formula, per scenario of tests/test_calibration.py."""
    from harness import stats
    from harness.stats.inference import mean_ci_blocks, t_statistics
    from tests.test_calibration import OUTLIER, SCENARIOS

    margin, rng, rows = 0.02, np.random.default_rng(seed), []
    for name, kw in {**SCENARIOS, "2 seeds, outlier subject": OUTLIER}.items():
        rate = lambda effect, null, alternative: np.mean(  # noqa: E731
            t_statistics(difference_blocks(rng, studies, effect, **kw), null, alternative)["p"] < 0.05)
        two, ni, upper = rate(0.0, 0.0, "two-sided"), rate(-margin, -margin, "greater"), rate(margin, margin, "less")
        blocks = difference_blocks(rng, 2000, 0.8, **{**kw, "sd_preference": 0.074})
        cover = np.mean([(lambda r: r[1] <= 0.8 <= r[2])(mean_ci_blocks([b[i] for b in blocks], n_boot=500, rng=rng))
                         for i in range(2000)])
        truth = stats.Components(0.04, kw.get("sd_run", 0.011), 0.025)
        power = np.mean(t_statistics(difference_blocks(rng, studies // 5, 0.0, **{**kw, "sd_preference": 0.04}),
                                     -margin, "greater")["p"] < 0.05)
        rows.append(f"| {name} | {two:.4f} | {ni:.4f} | {upper:.4f} | {cover:.3f} | {power:.3f} vs "
                    f"{stats.power(margin, truth, 24, kw['seeds'], 3):.3f} |")
    return rows


if __name__ == "__main__":  # python -m tests.simulation: the calibration table of the notes
    print("| scenario | two-sided t | NI at margin | TOST upper | bootstrap CI coverage | NI power vs planning |")
    print("|---|---|---|---|---|---|")
    print("\n".join(calibration_table()))


def sequential_trials(rng: np.random.Generator, studies: int, effect: float, margin: float = 0.02,
                      max_seeds: int = 10, per_round: int = 2, alpha: float = 0.05, spending: str = "obrien-fleming",
                      information: str = "seeds", futility_power: float | None = None, **noise) -> dict:
    """``studies`` simulated non-inferiority questions run in rounds of ``per_round`` seeds up to ``max_seeds``
    (the crossed design of `difference_blocks`, true paired difference ``effect``), each decided look by look as
    ``run --until-decided`` does. Returns per study the decision and the seeds used, and the fixed design's
    verdict at ``max_seeds`` on the same data."""
    from harness.rounds import Design, decide_look
    from harness.stats.sequential import fraction_at, look_statistics

    design = Design(reference=None, margin=margin, alpha=alpha, per_round=per_round, max_seeds=max_seeds,
                    spending=spending, **({} if futility_power is None else {"futility_power": futility_power}))
    blocks = difference_blocks(rng, studies, effect, seeds=max_seeds, **noise)
    looks = list(range(per_round, max_seeds + 1, per_round))
    stats = [look_statistics([b[..., :s] for b in blocks], -margin, max_seeds) for s in looks]
    decisions, seeds = [], []
    for i in range(studies):
        fractions, zs = [], []
        for k, s in enumerate(looks):
            result = {key: float(np.asarray(value)[i]) if np.ndim(value) else float(value)
                      for key, value in stats[k].items()}
            raw = s / max_seeds if information == "seeds" else result["fraction"]
            fraction = fraction_at(fractions, raw, s == max_seeds)
            look = decide_look(fractions, zs, fraction, result, design)  # what run --until-decided decides
            fractions.append(fraction)
            zs.append(result["z"])
            if look["decision"] != "open":
                break
        decisions.append(look["decision"])
        seeds.append(s)
    return {"decision": np.array(decisions), "seeds": np.array(seeds),
            "fixed": stats[-1]["p"] < alpha}


def sequential_table(seed: int = 2026, null: int = 6000, equal: int = 4000, below: int = 2000) -> list[str]:
    """Markdown rows of the sequential design's calibration quoted in the README and the notes: per run noise and
    maximum seeds, the false-positive rate at the margin, power against the fixed design at the maximum on the
    same data, and the share of the maximum's seeds used when the strategies are equal and when one is 0.04
    below the reference. ``python -c "from tests.simulation import sequential_table; print(*sequential_table(), sep=chr(10))"``"""
    rng, rows = np.random.default_rng(seed), []
    for name, noise in (("light", dict(sd_run=0.011)), ("heavy", dict(sd_run=0.05))):
        for max_seeds in (4, 6, 8, 10, 12):
            at_margin = sequential_trials(rng, null, -0.02, max_seeds=max_seeds, **noise)
            same = sequential_trials(rng, equal, 0.0, max_seeds=max_seeds, **noise)
            worse = sequential_trials(rng, below, -0.04, max_seeds=max_seeds, **noise)
            rows.append(f"| {name} | {max_seeds} ({max_seeds // 2}) | {np.mean(at_margin['decision'] == 'shown'):.3f} "
                        f"| {np.mean(same['decision'] == 'shown'):.3f} / {np.mean(same['fixed']):.3f} "
                        f"| {np.mean(same['seeds']) / max_seeds:.2f} / {np.mean(worse['seeds']) / max_seeds:.2f} |")
    return rows


def futility_frontier(seed: int = 2026, null: int = 4000, equal: int = 4000) -> list[str]:
    """Markdown rows of what other futility thresholds and spending would trade (the issue's goal: at least 30%
    fewer seeds at no difference with power within 0.03 of the fixed design): per run noise, maximum seeds,
    spending and conditional-power threshold (0: no futility stops), the false-positive rate at the margin,
    the power lost against the fixed design on the same data, and the share of the maximum's seeds used at no
    difference. ``python -c "from tests.simulation import futility_frontier; print(*futility_frontier(), sep=chr(10))"``"""
    rng, rows = np.random.default_rng(seed), []
    for name, noise, max_seeds in (("light", dict(sd_run=0.011), 4), ("light", dict(sd_run=0.011), 6),
                                   ("light", dict(sd_run=0.011), 12), ("heavy", dict(sd_run=0.05), 10)):
        for spending in ("obrien-fleming", "pocock"):
            for threshold in (0.0, 0.05, 0.1, 0.2, 0.3):
                kw = dict(max_seeds=max_seeds, spending=spending, futility_power=threshold, **noise)
                at_margin = sequential_trials(rng, null, -0.02, **kw)
                same = sequential_trials(rng, equal, 0.0, **kw)
                lost = np.mean(same["fixed"]) - np.mean(same["decision"] == "shown")
                rows.append(f"| {name} | {max_seeds} | {spending} | {threshold:g} "
                            f"| {np.mean(at_margin['decision'] == 'shown'):.3f} | {lost:+.3f} "
                            f"| {np.mean(same['seeds']) / max_seeds:.2f} |")
    return rows
