"""The report's tables: an `harness.analysis.Analysis` -> titled rows of formatted cells."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness import stats
from harness.analysis import DEFAULT_MARGIN, Analysis
from harness.reports.guideline import (BUDGET_UNIT, METRIC_NAMES, budget_unit, ci_text, level_text, n_text, p_text,
                                       repeated, signed, unit_word, validation_labels, x_interval)


TEST_TEXT = {
    "t": "two-sided t-test with the crossed variance (df: the subject and training-run parts' df, harmonically "
         "averaged with weights equal to their shares of the variance; with one seed: paired t-test on subject means)",
    "wilcoxon": "Wilcoxon signed-rank on subject means (zeros dropped; exact for small samples)",
    "permutation": "sign-flip permutation test of the mean of subject means (exact up to 16 subjects)",
}


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""


def p_cell(p: float) -> str:
    if p != p:
        return "n/a"
    return "<0.0001" if p < 0.0001 else f"{p:.4f}"


MARGIN_REASON = ("0.02 Dice is about a third of the gap between the source-only model and fine-tuning in the "
                 "published 7T study, and below the 0.03 by which human experts differ on myocardium there")


def _summary_table(a: Analysis) -> Table:
    rows = []
    both = pd.concat([a.base, a.summary])
    wide = both.pivot_table(index=["strategy", "n"], columns="metric",
                            values=["mean", "ci_low", "ci_high", "seed_sd", "labelled_images"], aggfunc="first",
                            dropna=False)  # keeps NaN cells (base has no seed SD) but makes every strategy x n
    wide = wide.loc[pd.MultiIndex.from_frame(both[["strategy", "n"]].drop_duplicates())]
    for (strategy, n), r in wide.iterrows():
        images = r.get(("labelled_images", "dice_lv"), float("nan"))
        cells = [strategy, str(n), "–" if images != images else f"{images:.0f}"]
        for m in stats.METRICS:
            if ("mean", m) not in r or r[("mean", m)] != r[("mean", m)]:  # not scored on this metric
                cells += ["–"] * 3
                continue
            cells += [f"{r[('mean', m)]:.3f}", ci_text(r[("ci_low", m)], r[("ci_high", m)]),
                      "–" if r[("seed_sd", m)] != r[("seed_sd", m)] else f"{r[('seed_sd', m)]:.4f}"]
        rows.append(cells)
    return Table("Dice on the test subjects",
                 ["strategy", "n", "labelled images", "LV mean", "LV 95% CI", "LV seed SD",
                  "MY mean", "MY 95% CI", "MY seed SD"], rows,
                 "Mean over test subjects of the per-subject mean image Dice (seeds averaged within subject); "
                 "CI: hierarchical bootstrap-t (within each fold: test subjects, then seeds, 2000 resamples; a "
                 "seed is a training run shared by the fold's subjects); seed SD: SD over seeds of the mean over "
                 "all test subjects. `base` = the pre-trained model without fine-tuning (n = 0).")


DZ_SHOWN = 100.0  # beyond this the subjects' differences are all but equal; a bigger number says nothing more


def dz_cell(dz: float) -> str:
    if dz != dz:
        return "n/a"
    if abs(dz) > DZ_SHOWN:
        return f"> {DZ_SHOWN:.0f}" if dz > 0 else f"< −{DZ_SHOWN:.0f}"
    return f"{dz:.2f}"


def _comparison_table(title: str, table: pd.DataFrame, label_columns: list[tuple[str, str]], note: str) -> Table:
    rows = []
    for r in table.itertuples():
        if r.reason:
            rows.append([str(getattr(r, c)) for _, c in label_columns] + [
                METRIC_NAMES[r.metric], signed(r.difference), "n/a", "n/a",
                f"{r.better}/{r.subjects}" if r.subjects else "–", "n/a", r.reason])
            continue
        rows.append([str(getattr(r, c)) for _, c in label_columns] + [
            METRIC_NAMES[r.metric], signed(r.difference), ci_text(r.ci_low, r.ci_high),
            dz_cell(r.dz), f"{r.better}/{r.subjects}", p_cell(r.p), p_cell(r.p_holm)])
    if repeated(table):
        note += (" Sequential study: p = the repeated p-value over the rounds (the smallest two-sided level at which "
                 "some round crossed its boundary under the design's spending over paired seeds / max seeds, half on "
                 "each side), valid whatever stopped the rounds; the repeated 95% interval, difference, d_z and "
                 "better/subjects are the pair's last round's (an earlier round's crossing can give p < 0.05 with an "
                 "interval that covers 0).")
    return Table(title, [h for h, _ in label_columns] + ["metric", "difference", f"{repeated(table)}95% CI", "d_z",
                                                          "better/subjects", f"{repeated(table)}p".strip(),
                                                          f"{repeated(table)}p (Holm)"], rows, note)


def margin_reason(margin: float) -> str:
    """Why the margin is what it is: the default's published justification, or that the user chose it."""
    return MARGIN_REASON if margin == DEFAULT_MARGIN else f"{margin:g} Dice was set with --margin"


def _ni_table(a: Analysis) -> Table:
    rows = []
    ni = a.noninferiority
    level = level_text(float(ni["ci_level"].iloc[0])) if len(ni) else "CI"
    for r in ni.itertuples():
        verdict = "non-inferior" if r.non_inferior else ("not shown" if r.tested else r.reason)
        rows.append([r.strategy, str(r.n), r.reference, METRIC_NAMES[r.metric], signed(r.difference),
                     ci_text(r.ci_low, r.ci_high), str(r.subjects), p_cell(r.p), p_cell(r.p_tost), verdict])
    if a.design_text:  # run --until-decided: the recorded decisions
        return Table(f"Non-inferiority to the reference (margin {a.options.margin:g}, group-sequential)",
                     ["strategy", "n", "reference", "metric", "difference", f"repeated {level}", "subjects",
                      "p (sequential)", "p (TOST)", "verdict"], rows,
                     "Difference = strategy − reference at the round each question was decided (or last looked at), "
                     "paired by test subject and seed. p (sequential): the stage-wise ordering p-value of the "
                     "group-sequential test (only where shown); repeated CI: the interval valid over all rounds "
                     f"(its lower end is above −{a.options.margin:g} exactly when the question was shown). Verdicts "
                     "are the decisions recorded after each round (table 'Sequential decisions'), never a fixed-design "
                     "test of the final data. Fixed sequence from the largest n per strategy and metric; a claim on "
                     f"both metrics needs both. Margin: {margin_reason(a.options.margin)}.")
    return Table(f"Non-inferiority to the reference (margin {a.options.margin:g})",
                 ["strategy", "n", "reference", "metric", "difference", level, "subjects", "p (NI)", "p (TOST)",
                  "verdict"], rows,
                 f"Difference = strategy − reference, paired by test subject and seed. p (NI): one-sided t-test of "
                 f"H0 difference ≤ −{a.options.margin:g} at α = {a.options.alpha:g}, with the variance of a crossed "
                 "subjects × training-runs design (with one seed: the paired t-test on subject means). "
                 f"{level}: the two-sided {level_text(1 - 2 * a.options.alpha)[:-3]} t interval, as the CONSORT "
                 "extension for non-inferiority trials asks beside a one-sided test at α: the difference is "
                 f"non-inferior exactly when the interval's lower end is above −{a.options.margin:g}. Multiplicity: each "
                 "strategy is tested from its largest n downwards and stops at the first failure (a fixed "
                 "sequence), so each strategy's claim keeps α without correction; strategies are separate "
                 "questions and are not corrected across; a claim on both metrics needs both (intersection–union, "
                 f"no correction needed). p (TOST): equivalence within ±{a.options.margin:g}, shown, not used in "
                 f"verdicts. Margin: {margin_reason(a.options.margin)}.")


def _sequential_table(a: Analysis) -> Table:
    """Per question of a study run --until-decided: what was decided, when, on how many seeds, and the
    seeds a fixed design would have needed for the same power."""
    rows = []
    for r in a.sequential.sort_values(["metric", "strategy", "n"], ascending=[True, True, False]).itertuples():
        number = lambda v, spec: "–" if v is None or v != v else format(v, spec)  # noqa: E731
        difference = r.kind == "difference"
        p = r.p_holm if difference else r.p_sequential
        rows.append([f"{r.strategy} vs {r.against}" if difference else r.strategy, str(r.n), METRIC_NAMES[r.metric],
                     r.decision + (f" ({r.why})" if r.why else ""),
                     str(r.round), str(r.seeds), number(r.difference, "+.3f"), number(r.z, ".2f"),
                     number(r.bound, ".2f"), ("–" if p is None or p != p else p_cell(p) + (" (repeated, Holm)"
                                                                                          if difference else "")),
                     ci_text(r.repeated_lower, r.repeated_upper) if r.repeated_lower == r.repeated_lower
                     and r.repeated_lower is not None else "–",
                     "–" if r.seeds_same_power is None or r.seeds_same_power != r.seeds_same_power
                     else str(int(r.seeds_same_power))])
    design = a.settings.get("until_decided") or {}
    return Table("Sequential decisions (run --until-decided)",
                 ["strategy", "n", "metric", "decision", "round", "seeds", "difference", "z", "boundary",
                  "p (sequential)", f"repeated {level_text(1 - 2 * a.options.alpha)}", "fixed design, same power (seeds)"],
                 rows, f"{a.design_text} Rows 'a vs b': does strategy a differ from b at that budget (two-sided; "
                       "|z| of the crossed-variance t-test; p: its repeated p-value Holm-adjusted over the metric's "
                       "comparisons when decided; the strategies table gives its repeated 95% interval). Seeds: those "
                       "of the configuration when the decision was taken (a fixed "
                       f"design runs {design.get('max_seeds', '?')}); fixed design, same power: the fewest seeds a "
                       "fixed design needs for the power this sequential design had (were the strategies equal), "
                       "under the variance model of the question's last round.")


def _aic_text(r) -> str:
    """Which curve AIC prefers and by how much (absolute AIC values mean nothing, and an exact fit's run to
    -1e4)."""
    delta = r.aic_power_law - r.aic_exp_plateau
    if not np.isfinite(delta):
        return "AIC: only one curve could be fitted"
    better = "exp plateau" if delta > 0 else "power law"
    return f"ΔAIC {min(abs(delta), 999):.1f}{'+' if abs(delta) > 999 else ''} for the {better}"


def _curve_table(a: Analysis) -> Table:
    rows = []
    for r in a.curves.itertuples():
        if r.curve is None or r.curve != r.curve:
            rows.append([r.strategy, METRIC_NAMES[r.metric], r.axis, "–", "–", "–", "–", r.note])
            continue
        if r.x_star_status in ("estimated", "extrapolated"):
            star = f"{r.x_star:.1f} ({x_interval(r).removeprefix('95% CI ')})" + (" extrapolated" if r.extrapolated else "")
        elif r.x_star_status == "already met":
            star = f"below {r.smallest:.0f} (met at every budget)"
        else:
            star = r.x_star_status
        rows.append([r.strategy, METRIC_NAMES[r.metric], r.axis, r.curve,
                     f"{r.a:.3f} − {r.b:.3f}·" + ("x^−" if r.curve == "power_law" else "exp(−") + f"{r.c:.3f}"
                     + ("" if r.curve == "power_law" else "·x)"),
                     "–" if r.target != r.target else f"{r.target:.3f}", star,
                     f"{_aic_text(r)}. {r.note}".strip()])
    return Table("Learning curves", ["strategy", "metric", "x", "curve", "fit", "target", "x* (95% CI)", "note"], rows,
                 "Least-squares fits to subject-level points of an inverse power law a − b·x^−c and an exponential "
                 "plateau a − b·exp(−c·x), chosen by AIC; x = the budget (" + unit_word() + "), or mean labelled images (annotation "
                 "cost). Target = reference mean − margin. x*: where the curve reaches it; CI: percentile bootstrap "
                 "over test subjects (300 refits; refits at a parameter bound count as failed). x* is not estimated "
                 "from 3 budgets (the curve passes through the means exactly) or from a fit at a parameter bound; "
                 "outside the budgets studied it is an extrapolation.")


def _mixed_tables(a: Analysis) -> list[Table]:
    out = []
    for fit in a.mixed:
        rows = [[r.term, f"{r.coef:.4f}", "n/a" if r.se != r.se else f"{r.se:.4f}", ci_text(r.ci_low, r.ci_high),
                 p_cell(r.p)]
                for r in fit.fixed.itertuples()]
        variances = ", ".join(f"{k} SD {np.sqrt(max(v, 0)):.4f}" for k, v in fit.variances.items())
        warn = ("Warnings: " + "; ".join(fit.warnings) + ".") if fit.warnings else "No warnings."
        if not fit.converged:
            rows = [["(not shown: the fit did not converge)", "–", "–", "–", "–"]]
        out.append(Table(f"Mixed model ({METRIC_NAMES[fit.metric]}): {fit.formula}",
                         ["term", "estimate", "SE", "95% CI", "p"], rows,
                         "statsmodels MixedLM (REML) with the study's crossed structure: variance components for "
                         "the test subject and for the training run (strategy, n and seed at one fold, shared by "
                         f"the fold's test subjects), both within fold; {fit.observations} subject-level rows, "
                         f"{fit.subjects} subjects; converged: {'yes' if fit.converged else 'no'}. Variance "
                         f"components: {variances or 'n/a'}. {warn} Model-based summary: its Wald p-values are not "
                         "corrected for multiplicity, and the verdicts above come from the paired tests."))
    return out


def _planning_table(a: Analysis) -> Table:
    rows = []
    for r in a.planning.itertuples():
        needed = [getattr(r, f"subjects_at_{s}_seeds") for s in stats.planning.SEED_CHOICES]
        rows.append([r.strategy, METRIC_NAMES[r.metric], r.reference, f"{r.sd_between:.4f}",
                     f"{r.sd_run:.4f}" if r.separable else "–", f"{r.sd_residual:.4f}" if r.separable else "–",
                     f"{r.subjects} / {r.folds} / {r.seeds}", "n/a" if r.power != r.power else f"{r.power:.2f}"] +
                    [f">{stats.planning.MAX_SUBJECTS}" if v is None or v != v else str(int(v)) for v in needed] +
                    [r.note or ""])
    return Table("Planning: test subjects needed for 80% power",
                 ["strategy", "metric", "reference", "SD between subjects", "SD training run", "SD residual",
                  "subjects / folds / seeds", "power now"] +
                 [f"subjects at {s} seeds" for s in stats.planning.SEED_CHOICES] + ["note"], rows,
                 f"Power of the one-sided non-inferiority t-test (margin {a.options.margin:g}, α = {a.options.alpha:g}) "
                 "if the true difference is 0, for the design the study's tests assume: N test subjects in the "
                 "study's folds, S seeds, Var(mean difference) = between²/N + run²/(folds·S) + residual²/(N·S), "
                 "noncentral t with the tests' df rule; components from the pooled within-fold ANOVA of "
                 "this study's paired differences. The training-run term does not shrink with more subjects: "
                 "where it dominates only more seeds or folds help. With one seed the run and residual parts "
                 "cannot be separated and are folded into the between-subject SD.")


def _image_table(a: Analysis) -> Table:
    rows = [[r.strategy, str(r.n), r.reference, METRIC_NAMES[r.metric], str(r.images), signed(r.mean_difference),
             f"{r.V:.0f}", p_cell(r.p)] for r in a.image_level.itertuples()]
    return Table("Image level (descriptive only)", ["strategy", "n", "reference", "metric", "image pairs",
                                                    "mean difference", "V", "p"], rows,
                 "Per-image paired Wilcoxon signed-rank as R's wilcox.test(paired = TRUE) computes it (zeros dropped, "
                 "normal approximation with tie and continuity correction; V = sum of positive ranks). Images of one "
                 "subject are strongly correlated, so these p-values overstate the evidence and give no verdict; "
                 "they are shown to compare with analyses published at image level.")


def _extra_table(a: Analysis) -> Table:
    names = {"dice3d_lv": "3D Dice LV", "dice3d_my": "3D Dice MY", "edv_error_ml": "EDV absolute error (ml)",
             "esv_error_ml": "ESV absolute error (ml)", "ef_error_pct": "EF absolute error (%-points)"}
    digits = {m: 3 if m.startswith("dice") else 1 for m in names}  # Dice to 0.001, ml and %-points to 0.1
    rows = [[r.strategy, str(r.n), names[r.metric], f"{r.mean:.{digits[r.metric]}f}",
             ci_text(r.ci_low, r.ci_high, digits[r.metric])] for r in a.extra.itertuples()]
    volumes = a.reference_volumes
    scale = "" if volumes.empty else (
        f" Reference (manual) values over the {len(volumes)} test subjects: EDV {_mean_range(volumes['edv_ref_ml'])} ml, "
        f"ESV {_mean_range(volumes['esv_ref_ml'])} ml, EF {_mean_range(volumes['ef_ref_pct'])} %.")
    return Table("3D Dice and clinical volumes", ["strategy", "n", "metric", "mean", "95% CI"], rows,
                 "3D Dice: over all of a subject's labelled images (pixel counts summed). Volumes: LV blood pool at ED "
                 "and ES, pixels × voxel volume (pixel area × distance between slice centres) summed over the "
                 "labelled slices, from the prediction and the reference; EF = (EDV − ESV) / EDV; absolute errors "
                 "per subject, averaged over subjects (CI as above)." + scale)


def _mean_range(values: pd.Series) -> str:
    return f"mean {values.mean():.0f} (range {values.min():.0f} to {values.max():.0f})"


def _run_rows_table(a: Analysis) -> Table:
    def cell(value, spec: str = "") -> str:
        return "–" if value is None or value != value or value == "" else format(value, spec)

    def converged(value) -> str:
        return "–" if value is None or value != value else "yes" if bool(value) else "**no**"

    rows = [[r.strategy, cell(r.init), cell(r.n), cell(r.seed), cell(r.fold), r.state, cell(r.host), cell(r.device),
             cell(r.seconds, ".0f"), cell(r.labelled_images, ".0f"), cell(r.steps, ".0f"), cell(r.epochs, ".1f"),
             cell(r.stop_reason), converged(r.converged), cell(r.dice_lv, ".3f"), cell(r.dice_my, ".3f"),
             cell(r.reason)] for r in a.runs.itertuples()]
    return Table("Runs", ["strategy", "init", "n", "seed", "fold", "state", "host", "device", "seconds",
                          "labelled images", "steps", "epochs", "stopped", "converged", "LV", "MY", "reason"], rows,
                 "Every run of the study: where it ran, its wall time (fine-tuning and evaluation), the images it "
                 "trained on, the optimiser steps and epochs it ran, why it stopped (plateau: validation Dice stopped "
                 "improving; cap: the rule's cap while still improving; diverged; schedule: a fixed schedule's end) "
                 "and whether it converged, and its mean subject Dice on its fold's test subjects; failed runs with "
                 "their reason. Also in `tables/runs.csv`, with each run's folder and software versions; every "
                 "check of every run in `tables/training.csv`.")


def named_cheapest(a: Analysis) -> list[tuple[str, int]]:
    """The configurations the guideline names as cheapest: those at the cheapest one's budget (minutes studies)
    or within 5% of its cost."""
    if not len(a.cheapest) or a.reference is None:
        return []
    best = a.cheapest.iloc[0]
    same = (a.cheapest["n"] == best["n"]) if a.settings.get("budget_minutes") else \
        (a.cheapest["expert_minutes"] <= 1.05 * best["expert_minutes"])
    return [(r.strategy, int(r.n)) for r in a.cheapest[same].itertuples()]


def _cost_table(a: Analysis) -> Table:
    wide = a.costs.pivot_table(index=["strategy", "n"], columns="metric", values=["mean", "gain_per_expert_hour"],
                               dropna=False)
    first = a.costs.groupby(["strategy", "n"])[["labelled_images", "expert_minutes"]].first()
    starred = set(named_cheapest(a))
    rows = []
    for (strategy, n), r in wide.iterrows():
        minutes = first.loc[(strategy, n), "expert_minutes"]
        mark = " ★" if (strategy, int(n)) in starred else ""
        rows.append([strategy + mark, str(n), f"{first.loc[(strategy, n), 'labelled_images']:.0f}",
                     "–" if minutes != minutes else f"{minutes:.0f}", "–" if minutes != minutes else f"{minutes / 60:.2f}"]
                    + [("–" if r[("mean", m)] != r[("mean", m)] else f"{r[('mean', m)]:.3f}")
                       for m in stats.METRICS if ("mean", m) in r.index]
                    + [("–" if r[("gain_per_expert_hour", m)] != r[("gain_per_expert_hour", m)]
                        else signed(r[("gain_per_expert_hour", m)])) for m in stats.METRICS
                       if ("gain_per_expert_hour", m) in r.index])
    metrics = [METRIC_NAMES[m] for m in stats.METRICS if ("mean", m) in wide.columns]
    model = a.settings.get("cost_model") or {}
    timed = model.get("name", "contours") if model.get("unit") == "minutes" else "contours (built in)"
    return Table("Cost of labelling", ["strategy", "n", "labelled images", "expert minutes", "expert hours"]
                 + [f"{m} Dice" for m in metrics] + [f"{m} gain over base per expert hour" for m in metrics], rows,
                 f"Expert minutes: mean over a configuration's runs of what its selected images cost under the "
                 f"{timed} cost model (Settings). Gain per expert hour = (mean Dice − base model's) / expert hours: "
                 "what an hour of contouring bought, descriptive. ★: the cheapest label-free configurations non-inferior "
                 "to the reference on both LV and MY (the guideline)." + _validation_note(a))


def _validation_note(a: Analysis) -> str:
    """The labels the convergence checks read, which these columns leave out and a lab contours too."""
    text = validation_labels(a)
    return f" Not in these columns: every run's validation labels, {text.removeprefix('plus ')}." if text else ""


def tables(a: Analysis) -> list[Table]:
    """Every table of the report, budgets worded as the study counts them."""
    with budget_unit(a.settings):
        return _tables(a)


def _tables(a: Analysis) -> list[Table]:
    def paired_note(family: str) -> str:
        return ("Paired by test subject and seed; difference = mean over subjects of the seed-averaged paired "
                f"difference; 95% CI: t interval with the crossed subjects × training-runs variance; test: "
                f"{TEST_TEXT[a.options.test]}. Multiplicity: Holm over {family}, separately for LV and MY; "
                "tables are separate families and are not corrected against each other. d_z = difference / SD "
                "of the subject-level differences (beyond ±100, where the subjects' differences are all but "
                "equal, it is shown as > 100). A row without a p-value says why it could not be tested.")

    out = [_summary_table(a)]
    if len(a.noninferiority):
        out.append(_ni_table(a))
    if len(a.sequential):
        out.append(_sequential_table(a))
    if len(a.costs):
        out.append(_cost_table(a))
    if len(a.versus_base):
        out.append(_comparison_table("Fine-tuned vs source-only base model", a.versus_base,
                                     [("strategy", "strategy"), ("n", "n")],
                                     paired_note("every strategy × n of this table")))
    if len(a.versus_observer):
        out.append(_observer_table(a))
    if len(a.budgets):
        out.append(_comparison_table("Budgets: each n against the next smaller n", a.budgets,
                                     [("strategy", "strategy"), ("from n", "n_small"), ("to n", "n_large")],
                                     paired_note("every strategy's adjacent budget pairs")
                                     + " Subjects are nested across n at each seed."))
    if len(a.strategies):
        note = paired_note("every pair of strategies at every n") + " Difference = a − b."
        if len(a.friedman):
            note += " Friedman omnibus over subject means: " + "; ".join(
                f"{n_text(r.n)} {METRIC_NAMES[r.metric]}: χ²({r.df}) = {r.statistic:.2f}, {p_text(r.p)}"
                for r in a.friedman.itertuples()) + " (it treats subjects as independent, see the caveats)."
        out.append(_comparison_table("Strategies at equal n", a.strategies, [("n", "n"), ("a", "a"), ("b", "b")], note))
    if len(a.curves) and a.curves["curve"].notna().any():
        out.append(_curve_table(a))
    out += _mixed_tables(a)
    if len(a.planning):
        out.append(_planning_table(a))
    if len(a.extra):
        out.append(_extra_table(a))
    if len(a.image_level):
        out.append(_image_table(a))
    out.append(_image_means_table(a))
    if len(a.runs):
        out.append(_run_rows_table(a))
    if BUDGET_UNIT.get() == "minutes":  # n is a budget of expert minutes in this study
        titles = {"Budgets: each n against the next smaller n": "Budgets: each budget against the next smaller one",
                  "Strategies at equal n": "Strategies at equal expert minutes"}
        out = [dataclasses.replace(t, title=titles.get(t.title, t.title),
                                   columns=[{"n": "budget (min)", "from n": "from budget (min)",
                                             "to n": "to budget (min)"}.get(c, c) for c in t.columns]) for t in out]
    return out


def _image_means_table(a: Analysis) -> Table:
    rows = [[strategy, str(n)] + [f"{r[(m, 'mean')]:.3f} ({r[(m, 'count')]:.0f})" if r[(m, "count")] else "– (0)"
                                  for m in stats.METRICS]
            for (strategy, n), r in a.image_means.iterrows()]
    return Table("Per-image mean Dice (descriptive)", ["strategy", "n", "LV mean (images)", "MY mean (images)"], rows,
                 "Mean over all test images pooled across subjects and seeds, as published studies report it; "
                 "subjects with more images weigh more. The subject-level means above are the estimates.")


def _observer_table(a: Analysis) -> Table:
    inter = a.inter_observer.set_index("metric")
    rows = [[r.strategy if not r.n else f"{r.strategy} (n = {r.n})", METRIC_NAMES.get(r.metric, r.metric),
             f"{r.mean:.3f}", f"{r.observer:.3f}", signed(r.difference), ci_text(r.ci_low, r.ci_high),
             "n/a" if r.share != r.share else f"{r.share:.1%}", str(r.subjects)]
            for r in a.versus_observer.itertuples() if r.metric in inter.index and r.subjects]
    agreement = "; ".join(f"{METRIC_NAMES.get(m, m)} {r['mean']:.3f} (95% CI {ci_text(r['ci_low'], r['ci_high'])})"
                          for m, r in inter.iterrows())
    return Table("Against the inter-observer agreement", ["method", "metric", "method Dice", "inter-observer Dice",
                                                          "difference", "95% CI", "share", "subjects"], rows,
                 f"{inter['annotation'].iloc[0]} scored against the main reference annotation "
                 f"({a.settings.get('reference_annotation')}): {agreement} (mean subject Dice, hierarchical bootstrap "
                 "CI). Per method: its mean subject Dice and the second annotation's on the subjects both have, the "
                 "paired difference with its 95% t interval over subjects, and the share of the inter-observer Dice "
                 "it reaches.")
