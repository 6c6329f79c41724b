"""Turn a study folder into report.md and a self-contained report.html (figure embedded, no network).

All numbers come from harness.stats; this module only chooses what to say and formats it.
"""
from __future__ import annotations

import base64
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import jinja2
import pandas as pd

from harness import stats
from harness.errors import StoreError
from harness.store import RunStore, finished_runs
from reports.figures import learning_curves

METRIC_NAMES = {"dice_lv": "LV", "dice_my": "MY"}
EMPTY_TEXT = {
    "both-one": "an image where both the reference and the prediction are empty for a class scores 1, "
                "one empty and the other not scores 0 (the published study's convention)",
    "ignore": "images where both the reference and the prediction are empty for a class are left out of "
              "that class's mean (nnU-Net/MONAI convention)",
}


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""


def p_text(p: float) -> str:
    if p != p:
        return "n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def p_cell(p: float) -> str:
    if p != p:
        return "n/a"
    return "<0.0001" if p < 0.0001 else f"{p:.4f}"


def ci_text(low: float, high: float) -> str:
    return "n/a" if low != low else f"{low:.3f} to {high:.3f}"


def signed(x: float) -> str:
    return f"{x:+.3f}"


@dataclass(frozen=True)
class Analysis:
    """The stats tables of one study, for both metrics."""

    settings: dict
    summary: pd.DataFrame
    base: pd.DataFrame
    budgets: pd.DataFrame
    strategies: pd.DataFrame
    versus_base: pd.DataFrame
    plateau: pd.DataFrame
    failed: list[tuple[str, str]]
    test_subjects: int


def analyse(study_dir: Path) -> Analysis:
    store = RunStore(study_dir)
    settings = store.read_study()
    specs, failed = finished_runs(store)
    if not specs:
        raise_no_runs(study_dir, failed)
    images = pd.concat([store.images(spec) for spec in specs], ignore_index=True)
    scores = stats.subject_scores(images, settings["empty"])
    tables: dict[str, list[pd.DataFrame]] = {k: [] for k in ("summary", "budgets", "strategies", "base", "plateau")}
    for metric in stats.METRICS:
        tables["summary"].append(stats.summarise(scores, metric))
        budgets = stats.compare_budgets(scores, metric)
        tables["budgets"].append(budgets)
        tables["strategies"].append(stats.compare_strategies(scores, metric))
        tables["base"].append(stats.compare_to_base(scores, metric))
        if len(budgets):
            tables["plateau"].append(stats.plateau(budgets))
    joined = {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame() for k, v in tables.items()}
    summary = joined["summary"]
    return Analysis(settings=settings, summary=summary[summary["strategy"] != stats.BASE],
                    base=summary[summary["strategy"] == stats.BASE], budgets=joined["budgets"],
                    strategies=joined["strategies"], versus_base=joined["base"], plateau=joined["plateau"],
                    failed=failed, test_subjects=len(settings["split"]["test"]))


def raise_no_runs(study_dir: Path, failed: list[tuple[str, str]]) -> None:
    reason = f"; first failure: {failed[0][0]}: {failed[0][1]}" if failed else ""
    raise StoreError(f"study '{study_dir}' has no finished runs to report{reason}")


def guideline(a: Analysis) -> list[str]:
    """Sentences that answer 'how much target data is enough', each with effect, CI and p."""
    sentences = []
    k = a.test_subjects
    for strategy, part in a.summary.groupby("strategy", sort=True):
        ns = sorted(part["n"].unique())
        lv = part[part["metric"] == "dice_lv"].set_index("n")
        my = part[part["metric"] == "dice_my"].set_index("n")
        first, last = ns[0], ns[-1]
        text = (f"**{strategy}**: fine-tuning on {lv.loc[first, 'labelled_images']:.0f} labelled images "
                f"from {first} subject{'s' if first > 1 else ''} gave LV Dice {lv.loc[first, 'mean']:.3f} "
                f"(95% CI {ci_text(lv.loc[first, 'ci_low'], lv.loc[first, 'ci_high'])}) and MY Dice "
                f"{my.loc[first, 'mean']:.3f} on {k} unseen test subjects")
        if len(a.versus_base):
            vb = a.versus_base[(a.versus_base["strategy"] == strategy) & (a.versus_base["n"] == first)]
            vb_lv, vb_my = (vb[vb["metric"] == m].iloc[0] for m in ("dice_lv", "dice_my"))
            base_lv = a.base[a.base["metric"] == "dice_lv"]["mean"].iloc[0]
            base_my = a.base[a.base["metric"] == "dice_my"]["mean"].iloc[0]
            text += (f", against {base_lv:.3f} / {base_my:.3f} for the source-only base model (LV difference "
                     f"{signed(vb_lv.difference)}, 95% CI {ci_text(vb_lv.ci_low, vb_lv.ci_high)}, better in "
                     f"{vb_lv.better} of {vb_lv.units} subject-seed pairs, {p_text(vb_lv.p_holm)}; MY "
                     f"{signed(vb_my.difference)}, {p_text(vb_my.p_holm)})")
        text += "."
        if len(ns) > 1:
            text += (f" With {last} subjects ({lv.loc[last, 'labelled_images']:.0f} images) it reached LV "
                     f"{lv.loc[last, 'mean']:.3f} (95% CI {ci_text(lv.loc[last, 'ci_low'], lv.loc[last, 'ci_high'])})"
                     f" and MY {my.loc[last, 'mean']:.3f} "
                     f"(95% CI {ci_text(my.loc[last, 'ci_low'], my.loc[last, 'ci_high'])}).")
            enough = int(a.plateau[a.plateau["strategy"] == strategy]["n_enough"].max())
            steps = a.budgets[(a.budgets["strategy"] == strategy) & (a.budgets["n_small"] >= enough)]
            if enough < last:
                detail = "; ".join(
                    f"{METRIC_NAMES[r.metric]} {r.n_small}→{r.n_large}: {signed(r.difference)}, 95% CI "
                    f"{ci_text(r.ci_low, r.ci_high)}, {p_text(r.p_holm)}" for r in steps.itertuples())
                text += (f" Beyond {enough} subjects, more labelled subjects gave no statistically "
                         f"distinguishable gain after Holm adjustment ({detail}).")
            else:
                step = a.budgets[(a.budgets["strategy"] == strategy) & (a.budgets["n_large"] == last)]
                detail = "; ".join(f"{METRIC_NAMES[r.metric]} {r.n_small}→{r.n_large}: {signed(r.difference)}, "
                                   f"{p_text(r.p_holm)}" for r in step.itertuples())
                text += (f" Dice was still rising significantly at the largest budget ({detail}): "
                         f"more than {last} subjects may pay off.")
        seed_sd = part.groupby("metric")["seed_sd"].max()
        text += (f" Seed-to-seed SD of the mean Dice was at most {seed_sd.get('dice_lv', float('nan')):.3f} (LV) "
                 f"and {seed_sd.get('dice_my', float('nan')):.3f} (MY).")
        sentences.append(text)
    for n, part in a.strategies.groupby("n", sort=True) if len(a.strategies) else []:
        significant = part[part["p_holm"] < 0.05]
        if len(significant):
            sentences.append(f"At n = {n}: " + "; ".join(
                f"{r.a} vs {r.b} ({METRIC_NAMES[r.metric]}): {signed(r.difference)}, 95% CI "
                f"{ci_text(r.ci_low, r.ci_high)}, {p_text(r.p_holm)}" for r in significant.itertuples()) + ".")
        else:
            sentences.append(f"At n = {n} no two strategies differed significantly (Holm-adjusted, α = 0.05).")
    return sentences


def _summary_table(a: Analysis) -> Table:
    rows = []
    wide = pd.concat([a.base, a.summary]).pivot_table(
        index=["strategy", "n"], columns="metric",
        values=["mean", "ci_low", "ci_high", "seed_sd", "labelled_images"], aggfunc="first", dropna=False)
    for (strategy, n), r in wide.iterrows():
        cells = [strategy, str(n), f"{r[('labelled_images', 'dice_lv')]:.0f}"]
        for m in stats.METRICS:
            cells += [f"{r[('mean', m)]:.3f}", ci_text(r[("ci_low", m)], r[("ci_high", m)]),
                      "–" if r[("seed_sd", m)] != r[("seed_sd", m)] else f"{r[('seed_sd', m)]:.4f}"]
        rows.append(cells)
    return Table("Dice on the test subjects",
                 ["strategy", "n", "labelled images", "LV mean", "LV 95% CI", "LV seed SD",
                  "MY mean", "MY 95% CI", "MY seed SD"], rows,
                 "Mean over test subjects of the per-subject mean image Dice (seeds averaged within subject); "
                 "CI: percentile bootstrap over test subjects (2000 resamples); seed SD: SD over seeds of "
                 "the mean over subjects. `base` = the pre-trained model without fine-tuning (n = 0).")


def _comparison_table(title: str, table: pd.DataFrame, label_columns: list[tuple[str, str]], note: str) -> Table:
    rows = []
    for r in table.itertuples():
        rows.append([str(getattr(r, c)) for _, c in label_columns] + [
            METRIC_NAMES[r.metric], signed(r.difference), ci_text(r.ci_low, r.ci_high),
            f"{r.better}/{r.units}", p_cell(r.p), p_cell(r.p_holm)])
    return Table(title, [h for h, _ in label_columns] + ["metric", "difference", "95% CI", "better/pairs",
                                                          "p", "p (Holm)"], rows, note)


def tables(a: Analysis) -> list[Table]:
    paired_note = ("Paired by (test subject, seed); Wilcoxon signed-rank, two-sided, zeros dropped; Holm "
                   "correction within this table. Difference = mean over subjects; CI by bootstrap over subjects, "
                   "not adjusted for multiplicity (so a CI can exclude 0 while the Holm-adjusted p exceeds 0.05).")
    out = [_summary_table(a)]
    if len(a.versus_base):
        out.append(_comparison_table("Fine-tuned vs source-only base model", a.versus_base,
                                     [("strategy", "strategy"), ("n", "n")], paired_note))
    if len(a.budgets):
        out.append(_comparison_table("Budgets: each n against the next smaller n", a.budgets,
                                     [("strategy", "strategy"), ("from n", "n_small"), ("to n", "n_large")],
                                     paired_note + " Subjects are nested across n at each seed."))
    if len(a.strategies):
        out.append(_comparison_table("Strategies at equal n", a.strategies,
                                     [("n", "n"), ("a", "a"), ("b", "b")], paired_note + " Difference = a − b."))
    return out


def settings_lines(a: Analysis) -> list[str]:
    s = a.settings
    t, p = s["train"], s["pretrain"]
    split = s["split"]
    try:
        smp_version = metadata.version("segmentation-models-pytorch")
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        smp_version = torch_version = "unknown"
    if s.get("data"):
        data = (f"Data: {s.get('dataset_name', s['data'])}, {s.get('subjects_total', '?')} subjects, labelled "
                f"frames only; label map {s.get('labels') or 'the layout default'}; prepared-data fingerprint "
                f"`{s['dataset']}`.")
    else:
        data = (f"Data: built-in cine phantom, target domain (7T GRE-like), {s['target_subjects']} subjects "
                f"(data seed {s['data_seed']}); dataset fingerprint `{s['dataset']}`.")
    return [
        data,
        f"Split by subject (split seed {s['split_seed']}): {len(split['pool'])} in the training pool, "
        f"{len(split['validation'])} validation, {len(split['test'])} test "
        f"({', '.join(split['test'])}); test and validation subjects never enter a training subset.",
        f"Strategies: {', '.join(s['strategies'])}; n = {', '.join(map(str, s['ns']))} subjects; "
        f"{s['seeds']} seeds per configuration (seeds {s['first_seed']}–{s['first_seed'] + s['seeds'] - 1}). "
        "At each seed the subjects drawn are the same for every strategy and nested across n.",
        f"Base model: U-Net ({t['encoder']} encoder, decoder widths "
        f"{', '.join(map(str, t['decoder_channels']))}; segmentation-models-pytorch {smp_version}) pre-trained on "
        f"{s['source_subjects']} source-domain (1.5T bSSFP-like) phantom subjects, {p['steps']} steps, "
        f"encoder init {p['encoder_weights'] or 'random'}; fingerprint `{s['base_model']}`.",
        f"Fine-tuning: stage 1 encoder frozen (BatchNorm trainable), {t['steps_frozen']} steps, one-cycle, "
        f"max lr {t['lr_frozen']:g}; stage 2 unfrozen, {t['steps_unfrozen']} steps, one-cycle, max lr "
        f"{t['lr_unfrozen']:g}; AdamW (weight decay {t['weight_decay']:g}), batch {t['batch_size']}, "
        f"cross-entropy; equal optimiser steps for every subset; last step kept. Images {t['size']} px "
        f"(zero-padded to square, resampled, scaled per image to its 1st-99th percentiles). Augmentation: "
        f"flips, rotation ±{t['rotate_deg']:g}°, zoom up to {t['zoom']:g}, brightness/contrast "
        f"±{t['brightness']:g}/{t['contrast']:g}. Precision {t['precision']} (autocast), channels_last "
        f"{t['channels_last']}.",
        f"Dice: per 2D image after argmax at {t['size']} px, classes LV blood pool and LV myocardium; "
        f"empty-mask convention `{s['empty']}`: {EMPTY_TEXT[s['empty']]}. RV is not a learned class.",
        f"Software: torch {torch_version}, Python {platform.python_version()}.",
    ]


def caveats(a: Analysis) -> list[str]:
    return [
        f"The unit of analysis is the test subject; there are {a.test_subjects}. p-values pair (test subject, "
        "seed) units, so they say whether a difference exceeds training-seed noise on these test subjects, "
        "not whether it would hold on new subjects. Percentile-bootstrap intervals over so few subjects "
        "are narrower than nominal; read them as descriptive.",
    ] + ([] if a.settings.get("data") else [
        "The data are a synthetic phantom: absolute Dice values say nothing about real scanners; the "
        "shape of the learning curve and the ranking of strategies are what the phantom is for."])


def render(study_dir: Path) -> tuple[Path, Path]:
    """Write report.md (figure beside it) and a self-contained report.html into the study folder."""
    study_dir = Path(study_dir)
    a = analyse(study_dir)
    png = learning_curves(a.summary, a.base)
    (study_dir / "learning_curves.png").write_bytes(png)
    env = jinja2.Environment(loader=jinja2.PackageLoader("reports", "templates"), autoescape=False,
                             trim_blocks=True, lstrip_blocks=True)
    context = {"guideline": guideline(a), "tables": tables(a), "settings": settings_lines(a),
               "caveats": caveats(a), "failed": a.failed, "title": "Data-efficiency study",
               "data_warnings": a.settings.get("data_warnings", []),
               "figure_b64": base64.b64encode(png).decode()}
    md = study_dir / "report.md"
    html = study_dir / "report.html"
    md.write_text(env.get_template("report.md.j2").render(**context))
    env.autoescape = True
    html.write_text(env.get_template("report.html.j2").render(markdown_bold=_bold, **context))
    return md, html


def _bold(text: str):
    """Markdown **x** -> <strong>x</strong> after escaping, for guideline sentences in HTML."""
    import re

    from markupsafe import Markup, escape

    return Markup(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", str(escape(text))))
