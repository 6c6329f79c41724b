"""Turn a study folder into report.md and a self-contained report.html (figure embedded, no network).

All numbers come from harness.stats; this module only chooses what to say and formats it.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from harness import rounds, stats
from harness.errors import StoreError
from harness.store import RunStore, finished_runs, method_label
from harness.reports.figures import cost_curves, learning_curves, overlays, subject_lines
from harness.reports.guideline import (BUDGET_UNIT, METRIC_NAMES, budget_unit, ci_text, config_text, guideline, level_text,
                               repeated,
                               n_text, p_text, signed, unit_word, x_interval)
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


def p_cell(p: float) -> str:
    if p != p:
        return "n/a"
    return "<0.0001" if p < 0.0001 else f"{p:.4f}"


@dataclass(frozen=True)
class Options:
    """What the analysis asks: the margin and reference of the non-inferiority guideline, and the test."""

    margin: float = 0.02
    reference: str | None = None  # "STRATEGY@N"; None = all_frames at its largest n, else each strategy's own
    test: str = "t"
    alpha: float = 0.05
    empty: str = "both-one"
    reference_dice: dict[str, float] = dataclasses.field(default_factory=dict)  # metric -> a Dice to draw


DEFAULT_MARGIN = 0.02
MARGIN_REASON = ("0.02 Dice is about a third of the gap between the source-only model and fine-tuning in the "
                 "published 7T study, and below the 0.03 by which human experts differ on myocardium there")


# 10 significant digits: the statistics' precision, without float artefacts such as 0.30000000000000004 (whose
# digit runs could even match a DICOM placeholder value such as a birth date of 00000000 in the privacy test)
CSV_FLOATS = "%.10g"
RUN_COLUMNS = ["run", "strategy", "init", "n", "seed", "fold", "state", "host", "device", "seconds",
               "labelled_images", "dice_lv", "dice_my", "reason", "software"]


@dataclass(frozen=True)
class Analysis:
    """The stats tables of one study or results table, for both metrics."""

    settings: dict
    options: Options
    reference: tuple[str, int] | None
    summary: pd.DataFrame
    base: pd.DataFrame
    extra: pd.DataFrame  # 3D Dice and volume errors, where known
    reference_volumes: pd.DataFrame  # per test subject: manual EDV, ESV, EF (empty where unknown)
    budgets: pd.DataFrame
    strategies: pd.DataFrame
    friedman: pd.DataFrame
    versus_base: pd.DataFrame
    noninferiority: pd.DataFrame
    enough: pd.DataFrame
    curves: pd.DataFrame
    mixed: list
    planning: pd.DataFrame
    image_level: pd.DataFrame
    image_means: pd.DataFrame  # per strategy x n: mean over all test images (descriptive)
    failed: list[tuple[str, str]]
    cautions: list[str]  # strategies that trained on the same images (identical_selections)
    test_subjects: int
    seeds: int
    images: pd.DataFrame  # per test image and run: identity, Dice (tables/images.csv)
    subjects: pd.DataFrame  # per test subject and run: mean image Dice, 3D Dice, volumes (tables/subjects.csv)
    # a study's every run: state, where, how long, labelled images, Dice (run_table); none for result tables
    runs: pd.DataFrame = dataclasses.field(default_factory=lambda: pd.DataFrame(columns=RUN_COLUMNS))
    examples: dict = dataclasses.field(default_factory=dict)  # overlays of one configuration (example_panels)
    # per strategy x n x metric: expert minutes, Dice, gain over base per expert hour (stats.cost_table)
    costs: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    cheapest: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)  # non-inferior configs by cost
    # run --until-decided: per question its last look (harness.rounds.final_table) and the design's text
    sequential: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    design_text: str = ""


def analyse(study_dir: Path, options: Options | None = None) -> Analysis:
    """Analyse a study folder written by `harness run`."""
    store = RunStore(study_dir)
    settings = store.read_study()
    specs, failed = finished_runs(store)
    if not specs:
        raise_no_runs(study_dir, failed)
    inits = settings.get("init_names") or ["source"]
    label = labeller(settings, inits)
    images = pd.concat([store.images(spec, label(spec)) for spec in specs], ignore_index=True)
    options = dataclasses.replace(options or Options(), empty=settings["empty"])
    asked_reference = options.reference
    if options.reference:  # --reference ed_es[+init] names the oracle the tables call "ed_es (oracle)[+init]"
        method, at, n = options.reference.partition("@")
        strategy, plus, init = method.partition("+")
        if strategy in oracles(settings):
            options = dataclasses.replace(options, reference=f"{strategy}{ORACLE}{plus}{init}{at}{n}")
    cautions = source_cautions(settings) + identical_selections(store, specs, inits, label)
    analysis = analyse_images(images, settings, options, failed, cautions)
    recorded = rounds.load(study_dir) if settings.get("until_decided") else None
    if recorded is not None and recorded.rounds:
        design = recorded.design
        analysis = with_repeated(analysis, recorded)
        if (design.margin, design.reference) == (options.margin, asked_reference):
            analysis = with_rounds(analysis, recorded, oracles(settings))
        else:
            analysis = dataclasses.replace(analysis, cautions=analysis.cautions + [
                f"This study was run until decided under margin {design.margin:g} and reference "
                f"{design.reference or 'each strategy at its largest budget'}; this report asks margin "
                f"{options.margin:g} and reference {asked_reference or 'each strategy at its largest budget'}, so its "
                "non-inferiority verdicts are fixed-design tests on seed counts the sequential decisions chose: "
                "not error-controlled. The study's own verdicts: `harness report` with the design's margin and "
                "reference."])
    runs = run_table(store, specs, inits, analysis.subjects, label)
    oracle = runs["strategy"].isin(oracles(settings))
    runs.loc[oracle, "strategy"] = runs.loc[oracle, "strategy"] + ORACLE
    analysis = dataclasses.replace(analysis, runs=runs)
    return dataclasses.replace(analysis, examples=example_panels(store, specs, inits, analysis, label))


ORACLE = " (oracle)"  # how every table, figure and sentence names a strategy that read labels


def with_rounds(a: Analysis, recorded: rounds.Rounds, oracle: set[str]) -> Analysis:
    """A study run --until-decided: its non-inferiority verdicts are the recorded sequential decisions (stage-wise
    p, repeated CI at the round each was taken), never the fixed-design tests on the data at the end."""
    def named(method: str) -> str:
        strategy, plus, init = method.partition("+")
        return f"{strategy}{ORACLE if strategy in oracle else ''}{plus}{init}"

    table = rounds.final_table(recorded)
    table["strategy"] = table["strategy"].map(named)
    table["reference"] = [f"{named(r.partition('@')[0])}@{r.partition('@')[2]}" for r in table["reference"]]
    ni = a.noninferiority.copy()
    if len(ni):
        ni["sequential"] = False
        decided = table.set_index(["strategy", "n", "metric"])
        for i, key in zip(ni.index, zip(ni["strategy"], ni["n"], ni["metric"])):
            if key not in decided.index:
                continue
            q = decided.loc[key]
            reason = {"not tested": f"not tested: {q['why']}", "open": f"still open after round {q['round']}",
                      "futile": f"futile at round {q['round']}"}.get(q["decision"], "")
            ni.loc[i, ["difference", "ci_low", "ci_high", "p", "p_tost"]] = [
                q["difference"], q["repeated_lower"], q["repeated_upper"], q["p_sequential"], np.nan]
            ni.loc[i, ["tested", "non_inferior", "reason", "sequential"]] = [
                q["decision"] in ("shown", "not shown", "futile"), q["decision"] == "shown", reason, True]
        ni = ni.astype({"tested": bool, "non_inferior": bool})
    return dataclasses.replace(a, noninferiority=ni, enough=stats.enough(ni) if len(ni) else a.enough,
                               sequential=table, design_text=rounds.design_text(recorded.design),
                               cheapest=_cheapest(ni, a.costs, a.reference))


def with_repeated(a: Analysis, recorded: rounds.Rounds) -> Analysis:
    """A study run --until-decided: comparisons with the base model, between budgets and between strategies carry
    repeated p-values and intervals over its rounds (whatever margin or reference the report asks)."""
    looks = rounds.RoundLooks(a.subjects, recorded, int(a.settings.get("first_seed", 0)),
                              lambda label: label.replace(ORACLE, ""))

    def comparisons(table: pd.DataFrame, pair) -> pd.DataFrame:
        return rounds.repeated_comparisons(table, looks, pair, a.options.test)

    caution = ("Comparisons with the base model, between budgets and between strategies carry repeated p-values and "
               "repeated 95% intervals over the rounds (valid whatever stopped them); the rest (mean Dice intervals, "
               "power and planning, learning curves, Friedman, image-level and mixed-model tables) are fixed-design "
               "statistics on the seeds each configuration received, and the sequential decisions chose those: read "
               "them as descriptive.")
    return dataclasses.replace(
        a, versus_base=comparisons(a.versus_base, lambda r: ((r.strategy, r.n), (r.base, 0))),
        budgets=comparisons(a.budgets, lambda r: ((r.strategy, r.n_large), (r.strategy, r.n_small))),
        strategies=comparisons(a.strategies, lambda r: ((r.a, r.n), (r.b, r.n))), cautions=a.cautions + [caution])


def oracles(settings: dict) -> set[str]:
    """Strategies of a study that read labels (study.json's strategy_uses; a study of 0.7 or earlier did not
    record it: its ed_es and paper oracles are named by the rule 0.8 declares)."""
    uses = settings.get("strategy_uses")
    if uses is None:
        return {s for s in settings.get("strategies", []) if s in ("ed_es", "paper_esed", "paper_r_esed", "subsets_file")}
    return {name for name, declared in uses.items() if "labels" in declared}


def labeller(settings: dict, inits: list[str]):
    """spec -> its method's name in the statistics: method_label, with ' (oracle)' for a strategy that read labels."""
    oracle = oracles(settings)

    def label(spec) -> str:
        name = method_label(spec.strategy, spec.init, inits)
        return name.replace(spec.strategy, spec.strategy + ORACLE, 1) if spec.strategy in oracle else name

    return label


def example_panels(store: RunStore, specs: list, inits: list[str], a: Analysis, label_fn=None) -> dict:
    """Test images of the best, median and worst test subject (mean of LV and MY subject Dice) of one
    configuration: the budget the guideline names for the first strategy, else that strategy's largest n;
    its first seed; beside the base model of the same fold where there is one. Empty when runs saved none."""
    enough = a.enough[a.enough["n_enough"].notna()] if len(a.enough) else pd.DataFrame()
    if len(enough):
        label, n = enough["strategy"].iloc[0], int(enough["n_enough"].iloc[0])
    elif len(a.summary):
        label = a.summary["strategy"].iloc[0]
        n = int(a.summary[a.summary["strategy"] == label]["n"].max())
    else:
        return {}
    name_of = label_fn or (lambda sp: method_label(sp.strategy, sp.init, inits))
    runs = [sp for sp in specs if name_of(sp) == label and sp.n == n]
    if not runs:
        return {}
    seed = min(sp.seed for sp in runs)
    by_fold = {sp.fold: sp for sp in runs if sp.seed == seed}
    subjects = a.subjects[(a.subjects["strategy"] == label) & (a.subjects["n"] == n) & (a.subjects["seed"] == seed)]
    scored = sorted((float(np.nanmean([getattr(r, m) for m in stats.METRICS])), str(r.subject), by_fold[r.fold])
                    for r in subjects.itertuples() if r.fold in by_fold)
    if not scored:
        return {}
    picks = {"best": scored[-1], "median": scored[len(scored) // 2], "worst": scored[0]}
    bases = {(sp.fold, sp.init): sp for sp in specs if stats.is_base(sp.strategy)}
    rows = []
    for rank, (score, subject, spec) in picks.items():
        tuned = _examples_of(store, spec, subject)
        if tuned is None:  # runs of versions before 0.5 saved none
            return {}
        base = bases.get((spec.fold, spec.init))
        rows.append({"rank": rank, "subject": subject, "dice": score, "tuned": tuned,
                     "base": _examples_of(store, base, subject) if base is not None else None})
    return {"label": label, "n": n, "seed": seed, "rows": rows}


def _examples_of(store: RunStore, spec, subject: str) -> dict[str, dict[str, np.ndarray]] | None:
    """{phase: {image, pred, ref}} of one test subject in a run's examples.npz."""
    path = store.folder(spec) / "examples.npz"
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:  # never unpickle what a shared study folder holds
        try:
            keep = data["subject"] == subject
        except ValueError:  # object arrays (written by an early 0.5 build): not shown
            return None
        return {str(phase): {k: data[k][keep][i] for k in ("image", "pred", "ref")}
                for i, phase in enumerate(data["phase"][keep])}


def run_table(store: RunStore, specs: list, inits: list[str], subjects: pd.DataFrame, label=None) -> pd.DataFrame:
    """One row per run of the study (study.json's list): its state, where and how long it ran, what it
    trained on, its mean subject Dice (from ``subjects``, the analysis's per-subject scores of the finished
    ``specs``), a failure's reason and the software that computed it."""
    means = subjects.groupby(["strategy", "n", "seed", "fold"])[list(stats.METRICS)].mean()
    name_of = label or (lambda sp: method_label(sp.strategy, sp.init, inits))
    dice_of = {sp.folder_name: means.loc[(name_of(sp), sp.n, sp.seed, sp.fold)] for sp in specs}
    rows = []
    for name in store.read_study()["runs"]:
        folder = store.folder(name)
        state = store.state(name)
        status, spec = {}, {}
        for file, target in (("status.json", status), ("spec.json", spec)):
            try:
                target.update(json.loads((folder / file).read_text()))
            except (OSError, ValueError):
                pass
        dice = {m: float(v) for m, v in dice_of[name].items()} if name in dice_of else {}
        seconds = round(sum(status.get(k) or 0.0 for k in ("train_seconds", "evaluate_seconds")), 1) or None
        software = status.get("software") or {}
        rows.append({
            "run": name, **{k: spec.get(k) for k in ("strategy", "init", "n", "seed", "fold")},
            "state": state.state, "host": status.get("host"), "device": status.get("device"),
            "seconds": seconds, "labelled_images": status.get("labelled_images"), **dice,
            "reason": state.reason.strip().splitlines()[-1] if state.reason.strip() else "",
            "software": ", ".join(f"{k} {v}" for k, v in software.items())})
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def source_cautions(settings: dict) -> list[str]:
    """First cautions of a study: a source model trained on its test or validation subjects (run with
    --allow-source-overlap), and source models whose training images could not be compared with them."""
    out = []
    for name, found in (settings.get("source_overlap") or {}).items():
        if not found.get("checked"):
            out.append(f"Whether init `{name}`'s source model was trained on this study's test subjects could not be "
                       f"checked: {found.get('why', 'unknown')}.")
        elif found.get("subjects"):
            subjects = found["subjects"]
            out.append(f"**Init `{name}`'s source model was trained on {found['images']} images of {len(subjects)} of "
                       f"this study's {found['of_subjects']} test and validation subjects** ({', '.join(subjects)}); "
                       "the study ran with --allow-source-overlap. Dice on those subjects, of the base model and of "
                       "every method fine-tuned from it, is optimistically biased.")
    return sorted(out, key=lambda text: not text.startswith("**"))


def identical_selections(store: RunStore, specs: list, inits: list[str], name_of=None) -> list[str]:
    """Sentences for strategies that selected the same training images in every run they share (same init,
    n, seed and fold): on such data they are one strategy, and a comparison of them measures nothing. On ACDC,
    where only ED and ES are labelled, ed_es, subject_random and slice_stratified are such a group."""
    chosen: dict[tuple, dict[str, frozenset]] = {}
    for spec in specs:
        if stats.is_base(spec.strategy):
            continue
        rows = pd.read_csv(store.folder(spec) / "selection.csv", dtype=str)
        key = (spec.init, spec.n, spec.seed, spec.fold)
        label = name_of(spec) if name_of else method_label(spec.strategy, spec.init, inits)
        chosen.setdefault(key, {})[label] = frozenset(zip(rows["subject"], rows["slice"], rows["frame"]))
    labels = sorted({label for runs in chosen.values() for label in runs})
    same_everywhere: dict[str, set[str]] = {label: {label} for label in labels}
    shared_runs: dict[tuple[str, str], int] = {}
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            both = [runs for runs in chosen.values() if a in runs and b in runs]
            if both and all(runs[a] == runs[b] for runs in both):
                same_everywhere[a].add(b)
                same_everywhere[b].add(a)
                shared_runs[a, b] = len(both)
    out, seen = [], set()
    for label in labels:
        group = sorted(same_everywhere[label])
        if len(group) < 2 or label in seen:
            continue
        seen.update(group)
        runs = min(shared_runs.get((a, b), 0) for i, a in enumerate(group) for b in group[i + 1:])
        names = ", ".join(group[:-1]) + " and " + group[-1]
        out.append(f"{names} selected exactly the same training images in all {runs} runs they share: on this "
                   "dataset they are one strategy (as where only ED and ES are labelled), so they trained "
                   "identically and their differences are zero by construction; read their rows as one result, "
                   "not as evidence that they perform alike.")
    return out


def _cheapest(ni: pd.DataFrame, costs: pd.DataFrame, reference: tuple[str, int] | None) -> pd.DataFrame:
    """Label-free configurations non-inferior to the study's one reference, cheapest first; empty without a
    common reference (each strategy against its own largest budget cannot be ranked by cost) or costs."""
    if reference is None or not len(costs) or not len(ni):
        return pd.DataFrame()
    found = stats.cheapest(ni, costs)
    return found[~found["strategy"].str.contains(ORACLE, regex=False)].reset_index(drop=True)


def analyse_images(images: pd.DataFrame, settings: dict, options: Options,
                   failed: list[tuple[str, str]] | None = None, cautions: list[str] | None = None) -> Analysis:
    """Every statistic of the report, from a per-image table (strategy, n, seed, fold, subject, counts or Dice)."""
    scored = stats.with_dice(images, options.empty)
    scores = stats.subject_scores(images, options.empty)
    reference = stats.parse_reference(options.reference, scores)
    parts: dict[str, list[pd.DataFrame]] = {k: [] for k in (
        "summary", "budgets", "strategies", "friedman", "base", "ni", "curves", "planning", "image")}
    mixed = []
    for metric in stats.METRICS:
        if scores[metric].isna().all():
            continue
        summary = stats.summarise(scores, metric)
        parts["summary"].append(summary)
        parts["budgets"].append(stats.compare_budgets(scores, metric, options.test))
        parts["strategies"].append(stats.compare_strategies(scores, metric, options.test))
        parts["friedman"].append(stats.friedman(scores, metric))
        parts["base"].append(stats.compare_to_base(scores, metric, options.test))
        ni = stats.noninferiority_table(scores, metric, reference, options.margin, options.alpha)
        parts["ni"].append(ni)
        means = summary.set_index(["strategy", "n"])["mean"]
        # the reference may have no score on this metric (then no target: the curves say so)
        targets = {s: float(means.get(reference, np.nan) if reference else means.loc[s].iloc[-1]) - options.margin
                   for s in summary["strategy"].unique() if not stats.is_base(s)}
        for axis in ("subjects", "images"):
            parts["curves"].append(stats.fit_learning_curves(scores, metric, targets, axis))
        parts["planning"].append(stats.plan(scores, metric, reference, options.margin, options.alpha))
        parts["image"].append(stats.image_level_comparisons(scored, reference, metric))
        fit = stats.fit_mixed(scores, metric)
        if fit is not None:
            mixed.append(fit)
    extra_metrics = [m for m in ("dice3d_lv", "dice3d_my", *stats.VOLUME_METRICS)
                     if m in scores and scores[m].notna().any()]
    extra = pd.concat([stats.summarise(scores, m) for m in extra_metrics], ignore_index=True) if extra_metrics \
        else pd.DataFrame()
    volume_columns = ["edv_ref_ml", "esv_ref_ml", "ef_ref_pct"]
    reference_volumes = scores.groupby("subject")[volume_columns].first().dropna() \
        if set(volume_columns) <= set(scores) else pd.DataFrame(columns=volume_columns)
    joined = {k: pd.concat(v, ignore_index=True) if v else pd.DataFrame() for k, v in parts.items()}
    summary = joined["summary"]
    ni = joined["ni"]
    fine = stats.fine_tuned(scores)
    costs = stats.cost_table(summary, summary[stats.is_base(summary["strategy"])]) if len(summary) else pd.DataFrame()
    if len(costs) and costs["expert_minutes"].isna().all():
        costs = pd.DataFrame()  # no run recorded what its labels cost
    return Analysis(
        settings=settings, options=options, reference=reference,
        summary=stats.fine_tuned(summary), base=summary[stats.is_base(summary["strategy"])],
        extra=extra, reference_volumes=reference_volumes, budgets=joined["budgets"],
        strategies=joined["strategies"], friedman=joined["friedman"],
        versus_base=joined["base"], noninferiority=ni, enough=stats.enough(ni) if len(ni) else pd.DataFrame(),
        curves=joined["curves"], mixed=mixed, planning=joined["planning"], image_level=joined["image"],
        image_means=scored.groupby(["strategy", "n"])[list(stats.METRICS)].agg(["mean", "count"]),
        failed=failed or [], cautions=cautions or [], test_subjects=int(scores["subject"].nunique()),
        seeds=int(fine["seed"].nunique()) if len(fine) else 0, images=scored, subjects=scores,
        costs=costs, cheapest=_cheapest(ni, costs, reference))


def raise_no_runs(study_dir: Path, failed: list[tuple[str, str]]) -> None:
    reason = f"; first failure: {failed[0][0]}: {failed[0][1]}" if failed else ""
    raise StoreError(f"study '{study_dir}' has no finished runs to report{reason}")


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
        rows.append([r.strategy, str(r.n), METRIC_NAMES[r.metric], r.decision + (f" ({r.why})" if r.why else ""),
                     str(r.round), str(r.seeds), number(r.difference, "+.3f"), number(r.z, ".2f"),
                     number(r.bound, ".2f"), p_cell(r.p_sequential) if r.p_sequential == r.p_sequential
                     and r.p_sequential is not None else "–",
                     ci_text(r.repeated_lower, r.repeated_upper) if r.repeated_lower == r.repeated_lower
                     and r.repeated_lower is not None else "–",
                     "–" if r.seeds_same_power is None or r.seeds_same_power != r.seeds_same_power
                     else str(int(r.seeds_same_power))])
    design = a.settings.get("until_decided") or {}
    return Table("Sequential decisions (run --until-decided)",
                 ["strategy", "n", "metric", "decision", "round", "seeds", "difference", "z", "boundary",
                  "p (sequential)", f"repeated {level_text(1 - 2 * a.options.alpha)}", "fixed design, same power (seeds)"],
                 rows, f"{a.design_text} Seeds: those of the configuration when the decision was taken (a fixed "
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

    rows = [[r.strategy, cell(r.init), cell(r.n), cell(r.seed), cell(r.fold), r.state, cell(r.host), cell(r.device),
             cell(r.seconds, ".0f"), cell(r.labelled_images, ".0f"), cell(r.dice_lv, ".3f"), cell(r.dice_my, ".3f"),
             cell(r.reason)] for r in a.runs.itertuples()]
    return Table("Runs", ["strategy", "init", "n", "seed", "fold", "state", "host", "device", "seconds",
                          "labelled images", "LV", "MY", "reason"], rows,
                 "Every run of the study: where it ran, its wall time (fine-tuning and evaluation), the images it "
                 "trained on and its mean subject Dice on its fold's test subjects; failed runs with their reason. "
                 "Also in `tables/runs.csv`, with each run's folder and software versions.")


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
                 "to the reference on both LV and MY (the guideline).")


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


TEST_TEXT = {
    "t": "two-sided t-test with the crossed variance (df: the subject and training-run parts' df, harmonically "
         "averaged with weights equal to their shares of the variance; with one seed: paired t-test on subject means)",
    "wilcoxon": "Wilcoxon signed-rank on subject means (zeros dropped; exact for small samples)",
    "permutation": "sign-flip permutation test of the mean of subject means (exact up to 16 subjects)",
}


def settings_lines(a: Analysis) -> list[str]:
    common = [
        f"Statistics: unit = test subject ({a.test_subjects}); image Dice averaged within subject and run, then "
        f"seeds within subject. Guideline: non-inferiority to {_reference_text(a)} within margin "
        f"{a.options.margin:g} ({margin_reason(a.options.margin)}), one-sided α = {a.options.alpha:g}. Two-sided comparisons: "
        f"{TEST_TEXT[a.options.test]}. Software: scipy {metadata.version('scipy')}, statsmodels "
        f"{metadata.version('statsmodels')}.",
        f"Dice: per 2D image, classes LV blood pool and LV myocardium; empty-mask convention "
        f"`{a.options.empty}`: {EMPTY_TEXT[a.options.empty]}.",
        "Files: every table of this report as CSV in `tables/`, with the Dice of every test image and run "
        "(`tables/images.csv`) and of every test subject and run (`tables/subjects.csv`).",
    ]
    if a.settings.get("kind") == "table":
        s = a.settings
        return [f"Input: per-image results made elsewhere ({', '.join(s['files'])}); {s['rows']} image rows"
                f"{' of set ' + repr(s['set']) if s.get('set') else ''}; subject from {s['subject_from']}, "
                f"method from column `{s['method_column']}`; {'Dice from confusion counts' if s['counts'] else 'Dice columns as given'}."
                ] + common
    return _study_lines(a) + common


def _reference_text(a: Analysis) -> str:
    if a.reference:
        return config_text(*a.reference)
    return "each strategy's own largest n (no all_frames in the study; set one with --reference)"


def _study_lines(a: Analysis) -> list[str]:
    s = a.settings
    t = s["train"]
    splits = s.get("splits") or [s["split"]]
    software = _recorded_software(a)
    if software:
        software_line = f"Software, as recorded by the runs when they ran: {software}."
    else:  # runs of versions before 0.5 did not record theirs
        software_line = (f"Software (the runs recorded none; versions when this report was written): torch "
                         f"{_installed('torch')}, segmentation-models-pytorch "
                         f"{_installed('segmentation-models-pytorch')}, Python {platform.python_version()}.")
    if s.get("data"):
        data = (f"Data: {s.get('dataset_name', s['data'])}, {s.get('subjects_total', '?')} subjects, labelled "
                f"frames only; label map {s.get('labels') or 'the layout default'}; prepared-data fingerprint "
                f"`{s['dataset']}`.")
    else:
        data = (f"Data: built-in cine phantom, target domain (7T GRE-like), {s['target_subjects']} subjects "
                f"(data seed {s['data_seed']}); dataset fingerprint `{s['dataset']}`.")
    if len(splits) > 1:
        split_text = (f"Cross-validation over subjects, {len(splits)} folds (split seed {s['split_seed']}): every "
                      f"subject is a test subject once ({len(splits[0]['test'])} per fold); per fold "
                      f"{len(splits[0]['validation'])} validation subjects taken from the training side and "
                      f"{len(splits[0]['pool'])} in the training pool; test and validation subjects never enter a "
                      "training subset of their fold.")
    else:
        split = splits[0]
        split_text = (f"Split by subject (split seed {s['split_seed']}): {len(split['pool'])} in the training pool, "
                      f"{len(split['validation'])} validation, {len(split['test'])} test "
                      f"({', '.join(split['test'])}); test and validation subjects never enter a training subset.")
    stride = s.get("test_stride", 1)
    scored = f"Test Dice over {_scored_frames(stride)} of each test subject" + (
        "." if stride == 1 else f" (about 1/{stride} of its frames, the whole cycle represented; the same images "
        "for every run, so paired comparisons are unaffected).")
    return [
        data,
        split_text + " " + scored,
        f"Strategies: {', '.join(s['strategies'])}; {_budget_text(s)}; "
        f"{s['seeds']} seeds per configuration and fold (seeds {s['first_seed']}–{s['first_seed'] + s['seeds'] - 1}). "
        "At each seed the subjects drawn are the same for every strategy and nested across n"
        + (" (with budgets in minutes: every strategy ranks the pool's images, subjects in that order, and a budget "
           "takes the longest start of its ranking that it can pay for, so smaller budgets are nested in larger)."
           if s.get("budget_minutes") else "."),
        *([f"Strategy parameters: " + "; ".join(f"{name} " + ", ".join(f"{k}={v}" for k, v in sorted(p.items()))
                                                 for name, p in sorted(s["params"].items()))
           + " (set with --strategy-param; the tables name the strategy alone)."] if s.get("params") else []),
        *cost_lines(s),
        f"Model: U-Net ({t['encoder']} encoder, decoder widths {', '.join(map(str, t['decoder_channels']))}; "
        "segmentation-models-pytorch).",
        *init_lines(s),
        fine_tuning_text(t),
        *tuned_lines(s),
        software_line,
    ]


def _budget_text(s: dict) -> str:
    if s.get("budget_minutes"):
        return f"budgets of {', '.join(map(str, s['budget_minutes']))} expert minutes each"
    return f"n = {', '.join(map(str, s['ns']))} subjects"


def cost_lines(s: dict) -> list[str]:
    """What labels cost (the cost model, its values and source), which strategies are oracles, and the
    selection model's view: what it cost and how well its ED/ES match the labels'."""
    out = []
    model = s.get("cost_model") or {}
    if model.get("unit") == "minutes" or s.get("strategy_uses") is not None:
        timed = model if model.get("unit") == "minutes" else None
        from harness.cost import CONTOURS

        shown = timed or CONTOURS.to_dict()
        per_region = {r: sum(shown["seconds"][d][r] for d in shown["draw"]) for r in ("basal", "mid", "apical")}
        out.append(f"Annotation cost{'' if timed else ' (reported beside the image counts; the budgets count subjects)'}: "
                   f"cost model `{shown['name']}`, drawing {', '.join(shown['draw'])}: "
                   f"{per_region['basal']:g} / {per_region['mid']:g} / {per_region['apical']:g} expert seconds per image "
                   f"of a basal / mid / apical slice (thirds of the stack); source: {shown['source']}.")
    oracle = sorted(oracles(s))
    if oracle:
        out.append(f"Oracles: {', '.join(oracle)} read the labels when choosing images (ED/ES found from the "
                   "contours, or subsets chosen by someone who had them): baselines no lab can run before "
                   "labelling; every table names them \"(oracle)\".")
    for key, view in (s.get("pool_views") or {}).items():
        cost = (f"{view['computed_images']} pool images predicted in {view['seconds']:.0f} s "
                f"({view['seconds_per_1000_images']} s per 1,000 images)" if view.get("computed_images") else
                f"read from the cache ({view.get('cached_images')} images, {view.get('seconds', 0):.2f} s)")
        error = view.get("frame_error") or {}
        frames = ""
        if error.get("subjects"):
            frames = (f"; its ED/ES (largest / smallest predicted LV volume) against those found from the labels, over "
                      f"{error['subjects']} pool subjects (median {error['labelled_frames_median']:g} labelled frames): "
                      f"mean cyclic frame error ED {error['ed_mean']:.2f}, ES {error['es_mean']:.2f} frames, exact in "
                      f"{100 * error['ed_exact']:.0f}% / {100 * error['es_exact']:.0f}% of subjects")
        out.append(f"Selection model `{key}` (the model whose predictions ed_es_predicted, foreground_random, uncertain "
                   f"and typical read; images only, never labels): view of {view.get('subjects')} subjects, {cost}"
                   f"{frames}.")
    return out


def methods_paragraph(a: Analysis) -> str:
    """The study's methods as one paragraph to paste into a paper: data, split, sampling, model, training,
    evaluation and statistics, with the software the runs recorded."""
    s, o = a.settings, a.options
    statistics = (
        f"The unit of analysis was the test subject (image Dice averaged within subject and run, then over seeds). "
        f"Non-inferiority to {config_text(*a.reference) if a.reference else 'each strategy at its largest budget'} "
        f"within a margin of {o.margin:g} Dice was tested one-sided at "
        f"α = {o.alpha:g} in a fixed sequence from the largest budget down, with 90% confidence intervals; "
        f"differences from the base model, between budgets and between strategies used the {TEST_TEXT[o.test]}, "
        "with Holm's correction within each family; confidence intervals of mean Dice came from a hierarchical "
        "bootstrap-t over folds, test subjects and seeds (2000 resamples).")
    if a.design_text:
        statistics = statistics.replace(
            "was tested one-sided at ", "was tested group-sequentially (below), one-sided at ").replace(
            "with 90% confidence intervals;", "with repeated 90% confidence intervals;") + " " + a.design_text
    if s.get("kind") == "table":
        return (f"Per-image segmentation results ({', '.join(s['files'])}; {s['rows']} images of "
                f"{a.test_subjects} test subjects) were analysed with cine-harness {_installed('cine-harness')}. "
                f"Dice was computed per 2D image for the LV blood pool and LV myocardium "
                f"({EMPTY_TEXT[o.empty]}). " + statistics)
    t = s["train"]
    splits = s.get("splits") or [s["split"]]
    data = (f"{s.get('dataset_name', s['data'])} ({s.get('subjects_total', '?')} subjects, labelled frames only)"
            if s.get("data") else
            f"the built-in synthetic cine phantom's 7T-like target domain ({s['target_subjects']} subjects)")
    if len(splits) > 1:
        split = (f"{len(splits)}-fold cross-validation over subjects (each subject tested once, "
                 f"{len(splits[0]['test'])} per fold; {len(splits[0]['validation'])} validation subjects per fold "
                 "from its training side)")
    else:
        split = (f"one split by subject ({len(splits[0]['pool'])} in the training pool, {len(splits[0]['validation'])} "
                 f"validation, {len(splits[0]['test'])} test)")
    models = s.get("init_models") or {"source": {"kind": "source"}}
    origin = {"source": f"a model pre-trained on {s['source_subjects']} subjects of the phantom's 1.5T-like source "
                        "domain", "imagenet": "an ImageNet encoder", "random": "random weights"}
    inits = " and ".join(origin.get(models[name]["kind"], f"the checkpoint `{name}`")
                         for name in (s.get("init_names") or list(models)))
    steps = (f"{t['steps_frozen']} steps with the encoder frozen (BatchNorm trainable) and {t['steps_unfrozen']} "
             f"with all layers, one-cycle learning rates to {t['lr_frozen']:g} and {t['lr_unfrozen']:g}"
             if t.get("schedule", "fast") == "fast" else
             f"the published two-stage schedule ({t['epochs']} epochs of the whole pool's size per stage, one-cycle "
             f"to {t['lr_frozen']:g} and {t['lr_unfrozen']:g})")
    scored = _scored_frames(s.get("test_stride", 1))
    checked = [name for name, found in (s.get("source_overlap") or {}).items()
               if found.get("checked") and not found.get("subjects")]
    leakage = (" The source model's training images were checked by content hash to include no pixel-identical "
               "image of a test or validation subject." if checked else "")
    if s.get("tuned"):
        leakage += (" Training settings were tuned with Optuna (TPE, median pruning) separately within each fold "
                    "(nested): on fine-tunes of subsets of that fold's training pool, scored on its validation "
                    "subjects, never on its test subjects.")
    oracle = sorted(oracles(s))
    if s.get("selection_models"):
        leakage += (" Label-free strategies chose images from the images alone and a selection model's predictions "
                    "on them (predicted LV and MY area, predictive entropy and disagreement under flips, encoder "
                    "embeddings, ED/ES from the predicted LV volume curve), computed without any label.")
    if oracle:
        leakage += (f" {', '.join(oracle)} read the labels to choose images (oracle baselines, not choices a lab can "
                    "make before labelling).")
    model = s.get("cost_model") or {}
    if model.get("unit") == "minutes":
        leakage += (f" Annotation cost was counted in expert minutes per image by slice region (cost model "
                    f"{model['name']}: {model['source']}).")
    recorded = _recorded_software(a)
    software = f" Software, as recorded by the runs: {recorded}." if recorded else ""
    return (
        f"We studied how {'much expert labelling time' if s.get('budget_minutes') else 'many labelled subjects'} "
        f"fine-tuning needs on {data}, dataset fingerprint "
        f"`{s['dataset']}`, with {split}. For each fold and each of "
        + (f"{s['seeds']} seeds, " if not s.get("until_decided") else
           f"{s['seeds']} to {s['until_decided']['max_seeds']} seeds (added in rounds, below), ")
        + (f"training subsets of n = {', '.join(map(str, s['ns']))} subjects were drawn from the fold's training pool (the same subjects "
           f"for every strategy and initialisation, nested across n), and their images selected by the sampling "
           if not s.get("budget_minutes") else
           f"budgets of {', '.join(map(str, s['budget_minutes']))} expert minutes of contouring were spent on the "
           f"fold's training pool (subjects in one random order per seed for every strategy; each strategy's "
           f"ranking of their images cut where the budget ran out, so budgets are nested), with images chosen by the sampling ")
        + f"strateg{'y' if len(s['strategies']) == 1 else 'ies'} {', '.join(s['strategies'])}. A U-Net "
        f"(segmentation-models-pytorch, {t['encoder']} encoder) initialised from {inits} was fine-tuned for "
        f"{steps}, AdamW (weight decay {t['weight_decay']:g}), batch {t['batch_size']}, cross-entropy, "
        f"flip/rotation/zoom/intensity augmentation, {t['precision']} precision, at {t['size']} px; the "
        f"{'last' if t.get('select', 'last') == 'last' else 'best-validation'} weights were kept.{leakage} Dice was computed "
        f"per 2D test image ({scored} of each test subject) for the LV blood pool and LV myocardium "
        f"({EMPTY_TEXT[o.empty]}). " + statistics
        + f" The study comprised {len(a.runs)} fine-tuning and base-model runs (cine-harness).{software}")


def _scored_frames(stride: int) -> str:
    return ("every labelled frame" if stride == 1 else
            f"ED, ES and every {_ordinal(stride)} frame of the cycle counted from ED")


def _recorded_software(a: Analysis) -> str:
    """The software versions the runs recorded (with run counts where they differ); '' when none did."""
    recorded = a.runs["software"].replace("", np.nan).dropna().value_counts()
    return "; ".join(f"{text} ({count} run{'s' if count > 1 else ''})" if len(recorded) > 1 else text
                     for text, count in recorded.items())


def _installed(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


INIT_TEXT = {"imagenet": "encoder from ImageNet, decoder and head random from each run's init seed (TL)",
             "random": "every weight random from each run's init seed (R)"}


def init_lines(s: dict) -> list[str]:
    """One sentence per initialisation: where its weights came from (the checkpoint's card, if any)."""
    models = s.get("init_models") or {"source": {"kind": "source", "fingerprint": s.get("base_model", "?")}}
    p = s["pretrain"]
    lines = []
    for name in s.get("init_names") or list(models):
        m = models[name]
        if m["kind"] == "source":
            text = (f"pre-trained on {s['source_subjects']} source-domain (1.5T bSSFP-like) phantom subjects, "
                    f"{p['steps']} steps, encoder init {p['encoder_weights'] or 'random'}")
        elif m["kind"] == "checkpoint":
            card = m.get("card")
            if card:
                tr, v = card["training"], card.get("validation") or {}
                val = (f"; validation Dice LV {v['dice_lv']:.3f} / MY {v['dice_my']:.3f} on {v['subjects']} held-out "
                       "subjects" if v else "")
                loss = (tr.get("settings") or {}).get("loss")
                loss_text = {"ce+dice": ", cross-entropy + soft Dice", "ce": ", cross-entropy"}.get(loss, "")
                text = (f"your checkpoint, pre-trained on {tr['data']} ({tr['subjects']} subjects, {tr['images']} "
                        f"images, {tr['steps']} steps{loss_text}{val})")
            else:
                text = "your checkpoint (a plain state_dict, no model card)"
        else:
            text = INIT_TEXT[m["kind"]]
        found = (s.get("source_overlap") or {}).get(name) or {}
        if found.get("checked") and not found.get("subjects"):
            text += (f"; none of its {found['source_images']} training images has the pixels (in any flip or "
                     "transpose) of an image of this study's test or validation subjects (checked by content hash; "
                     "a resampled or rescaled copy would not be found)")
        lines.append(f"Init `{name}`: {text}; weights fingerprint `{m['fingerprint']}`.")
    if len(models) > 1:
        lines.append("Inits are compared on the same test subjects, subsets and seeds (paired), as strategies are; "
                     "a method is named strategy+init.")
    return lines


def fine_tuning_text(t: dict) -> str:
    schedule = t.get("schedule", "fast")
    if schedule == "paper":
        steps = (f"the published schedule: stage 1 encoder frozen (BatchNorm trainable), one-cycle, max lr "
                 f"{t['lr_frozen']:g}; stage 2 unfrozen, one-cycle, max lr {t['lr_unfrozen']:g}; each stage "
                 f"E = round({t['epochs']} × pool images / subset images) epochs, so every subset gets about the same "
                 "optimiser steps")
    else:
        steps = (f"the fast schedule: stage 1 encoder frozen (BatchNorm trainable), {t['steps_frozen']} steps, "
                 f"one-cycle, max lr {t['lr_frozen']:g}; stage 2 unfrozen, {t['steps_unfrozen']} steps, one-cycle, "
                 f"max lr {t['lr_unfrozen']:g}; equal optimiser steps for every subset")
    kept = ("last step kept" if t.get("select", "last") == "last" else
            f"the weights with the best validation Dice (LV and MY averaged, validation subjects only, "
            f"{t.get('checks', 10)} checks per stage) kept")
    return (f"Fine-tuning: {steps}; AdamW (weight decay {t['weight_decay']:g}), batch {t['batch_size']}, "
            f"cross-entropy; {kept}. Images {t['size']} px (zero-padded to square, resampled, scaled per image to "
            f"its 1st-99th percentiles). Augmentation: flips, rotation ±{t['rotate_deg']:g}°, zoom up to "
            f"{t['zoom']:g}, brightness/contrast ±{t['brightness']:g}/{t['contrast']:g}. Precision "
            f"{t['precision']} (autocast), channels_last {t['channels_last']}. Dice after argmax at {t['size']} px; "
            f"RV is not a learned class.")


def tuned_lines(s: dict) -> list[str]:
    """What `harness tune` chose, per configuration and fold, and on which subjects (run --tuned)."""
    tuned = s.get("tuned") or {}
    lines = []
    for key, t in sorted(tuned.items()):
        if "folds" not in t:  # a study run with 0.6, which tuned fold 0 only and used it for every fold
            lines.append(f"Tuned with Optuna (`{key}`) by cine-harness 0.6 on fold 0's validation subjects "
                         f"({', '.join(t.get('validation_subjects', []))}) and used for every fold: with "
                         "cross-validation those subjects are test subjects of another fold, so the tuned settings "
                         "saw their labels (version 0.7 tunes each fold on its own training side).")
            continue
        folds = t.get("folds") or {}
        parts = []
        for fold, part in folds.items():
            params = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in sorted(part["params"].items()))
            parts.append(f"fold {fold}: {part['trials']} trials, validation Dice {part['value']:.3f} "
                         f"(defaults {part['default_value']:.3f}) with {params}")
        lines.append(f"Tuned with Optuna (`{key}`), nested in the cross-validation: each fold separately, a seeded "
                     f"TPE sampler with median pruning maximising validation Dice ({t['metric']}) on that fold's "
                     "validation subjects, fine-tuning on subsets of that fold's training pool; a fold's test "
                     "subjects were never predicted while its parameters were chosen, and before the runs every "
                     "fold's tuning subjects were checked to include none of its test subjects. "
                     + "; ".join(parts) + ".")
    return lines


def caveats(a: Analysis) -> list[str]:
    out = list(a.cautions)
    k = a.test_subjects
    if k < 6:
        out.append(
            f"Only {k} test subjects: a rank or sign-flip test over subjects cannot reach p < "
            f"{2 / 2 ** k:.3f} two-sided ({1 / 2 ** k:.3f} one-sided), so subject-level verdicts rest on a t-test "
            f"with {k - 1} degrees of freedom and its normality assumption, which {k} values cannot check. A "
            "verdict of 'not shown' here is a statement about the evidence, not about the methods.")
    if a.seeds <= 1:
        out.append("One training run per configuration: the seed-to-seed variance is unknown, so differences "
                   "between methods mix method and training noise; the tests are conditional on these runs.")
    if len(a.friedman):
        out.append("Friedman and the rank/sign-flip options treat subject means as independent; when several test "
                   "subjects share a training run (seeds within a fold) that understates the variance. The default "
                   "t-test adds the shared-run term; in simulation with the phantom's variance components it keeps "
                   "α, the rank test does not.")
    out += _cost_caveats(a)
    if not a.settings.get("data") and a.settings.get("kind") != "table":
        out.append("The data are a synthetic phantom: absolute Dice values say nothing about real scanners; the "
                   "shape of the learning curve and the ranking of strategies are what the phantom is for.")
    return out


def _cost_caveats(a: Analysis) -> list[str]:
    """Budgets of minutes a strategy could not spend (its ranking ran out), and pools that hold only the
    labelled frames (label-free strategies then choose among the frames someone chose to contour)."""
    out = []
    s = a.settings
    if s.get("budget_minutes") and len(a.costs):
        model = s.get("cost_model") or {}
        dearest = max((sum(model["seconds"][d][r] for d in model["draw"]) for r in ("basal", "mid", "apical")),
                      default=0) / 60 if model.get("seconds") else 0
        spent = a.costs.groupby(["strategy", "n"])["expert_minutes"].first().reset_index()
        short = spent[spent["expert_minutes"] < spent["n"] - dearest - 1e-6]
        if len(short):
            listed = "; ".join(f"{r.strategy} at {r.n} min spent {r.expert_minutes:.0f}" for r in short.itertuples())
            out.append(f"Not every strategy could spend its budget ({listed}): its ranking of the pool ran out (it "
                       "labels a fixed number of images per subject), so at those budgets the comparison is not at "
                       "equal expert time; the cost table gives what each spent.")
    for key, view in (s.get("pool_views") or {}).items():
        rows = (view.get("frame_error") or {}).get("per_subject") or []
        partial = [r for r in rows if r["labelled_frames"] < r["frames"]]
        if partial:
            median = float(np.median([r["labelled_frames"] for r in partial]))
            cycle = float(np.median([r["frames"] for r in partial]))
            out.append(f"Only the labelled frames are in the training pool ({len(partial)} of {len(rows)} pool subjects: "
                       f"median {median:g} of {cycle:g} frames): label-free strategies chose among the frames someone "
                       "already chose to contour, and the frame error of ed_es_predicted is over those frames, not the "
                       "whole cycle (`bench/sunnybrook_frames.py` measures that on full cines).")
    return out


def render(study_dir: Path, options: Options | None = None) -> tuple[Path, Path]:
    """Write report.md (figure beside it) and a self-contained report.html into the study folder."""
    study_dir = Path(study_dir)
    return write(analyse(study_dir, options), study_dir, "Data-efficiency study")


def write(a: Analysis, folder: Path, title: str) -> tuple[Path, Path]:
    """report.md, report.html and the tidy tables (csv) of an analysis, into `folder`."""
    with budget_unit(a.settings):
        return _write(a, folder, title)


def _write(a: Analysis, folder: Path, title: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    figures = []  # (file, caption)
    if a.summary["n"].nunique() > 1:
        drawn = ", ".join(f"{k.replace('dice_', '').upper()} {v:g}" for k, v in a.options.reference_dice.items())
        budget_label = "budget of expert minutes" if BUDGET_UNIT.get() == "minutes" else None
        figures.append(("learning_curves.png", learning_curves(a.summary, a.base, a.curves, a.options.reference_dice,
                                                               budget_label),
                        f"Mean Dice over test subjects against the budget ({unit_word()}, top) and labelled images, the "
                        "annotation cost (bottom), log scales; bands: 95% hierarchical bootstrap CI; dashed: "
                        "source-only base model; thin lines: the fitted learning curve where at least 4 budgets "
                        "identify it, with x* (the budget reaching the reference − margin) marked where it is "
                        "estimated" + (f"; dotted: the given reference Dice ({drawn})" if drawn else "") + "."))
    if len(a.costs):
        starred = pd.DataFrame(named_cheapest(a), columns=["strategy", "n"])
        figures.append(("cost.png", cost_curves(a.costs, a.base, starred, a.reference),
                        "Mean Dice over test subjects against the expert hours its labels cost, one line per strategy "
                        "(bars: 95% hierarchical bootstrap CI); dashed: source-only base model; ring: the reference; "
                        "gold stars: the cheapest label-free configurations non-inferior to it on both LV and MY."))
    metrics = [m for m in stats.METRICS if m in a.subjects and a.subjects[m].notna().any()]
    if len(a.subjects) and metrics:
        figures.append(("subjects.png", subject_lines(a.subjects, metrics, n_text),
                        "Each test subject's Dice (seeds averaged) at every strategy and budget, one line per "
                        "subject: the paired differences the tests use; black diamonds: means over subjects; black bars "
                        "beside them: the range over seeds of that mean (seed spread)."))
    if a.examples:
        e = a.examples
        figures.append(("examples.png", overlays(e),
                        f"Test images of the best, median and worst test subject (mean of LV and MY Dice) of "
                        f"{config_text(e['label'], e['n'])}, seed {e['seed']}, mid-ventricular slice at ED and ES"
                        + (", the source-only base model beside the fine-tuned one" if any(r["base"] for r in e["rows"])
                           else "") + ". Filled: the prediction (LV blue, MY orange); lines: the reference's endocardium (blue) and "
                        "epicardium (orange)."))
    for name, png, _ in figures:
        (folder / name).write_bytes(png)
    tables_dir = folder / "tables"
    tables_dir.mkdir(exist_ok=True)
    names = ["image_means", "images", "subjects", *(["runs"] if len(a.runs) else []),
             *(["costs", "cheapest"] if len(a.costs) else []), "summary", "base", "extra",
             "noninferiority", "enough", "versus_base", "budgets", "strategies", "friedman", "curves", "planning",
             "image_level"]
    for name in names:  # image_means is indexed by (strategy, n); the others are plain tables
        getattr(a, name).to_csv(tables_dir / f"{name}.csv", index=name == "image_means", float_format=CSV_FLOATS)
    env = jinja2.Environment(loader=jinja2.PackageLoader("harness.reports", "templates"), autoescape=False,
                             trim_blocks=True, lstrip_blocks=True)
    context = {"guideline": guideline(a), "tables": tables(a), "settings": settings_lines(a),
               "methods": methods_paragraph(a),
               "caveats": caveats(a), "failed": a.failed, "title": title,
               "data_warnings": a.settings.get("data_warnings", []),
               "figures": [{"file": name, "b64": base64.b64encode(png).decode(), "caption": caption,
                            "alt": name.removesuffix(".png").replace("_", " ")} for name, png, caption in figures]}
    md = folder / "report.md"
    html = folder / "report.html"
    env.filters["md"] = _markdown
    env.filters["md_cell"] = lambda text: _markdown(text, cell=True)
    md.write_text(env.get_template("report.md.j2").render(**context))
    env.autoescape = True
    html.write_text(env.get_template("report.html.j2").render(inline=_inline, **context))
    return md, html


def _markdown(text: object, cell: bool = False) -> str:
    """Report text for markdown: user-provided names (strategies, subjects, files) must show as text, never
    as markup. Everywhere, code spans included (however a name's backticks pair up), < before a letter, / ! or
    ? and & before a letter or # become entities, so no HTML can form ("p < 0.05" stays); outside code spans
    [ ] and backslashes are escaped and inside them "](" is broken, so no link can form; in table cells | is
    escaped. Line breaks become spaces and a leading block marker (#, >, a list or fence mark) is escaped, so
    a name cannot start a block of its own. The report's own **bold** and `code` stay."""
    import re

    text = " ".join(str(text).splitlines())
    text = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", re.sub(r"&(?=[A-Za-z#])", "&amp;", text))
    parts = re.split(r"(`[^`]*`)", text)
    for k, part in enumerate(parts):
        parts[k] = part.replace("](", "]\\(") if k % 2 else re.sub(r"([\[\]\\])", r"\\\1", part)
    text = "".join(parts)
    if cell:  # inside a table row: no block can start, but | would end the cell
        return text.replace("|", "\\|")
    text = re.sub(r"^(\s*)([#>+=~]|[-*](?=\s)|`{3})", r"\1\\\2", text)  # a heading, quote, list or fence
    return re.sub(r"^(\s*\d+)([.)])(?=\s|$)", r"\1\\\2", text)  # an ordered list


def _inline(text: str):
    """The report's inline markdown for HTML, after escaping: **x** -> <strong>, `x` -> <code>."""
    import re

    from markupsafe import Markup, escape

    html = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", str(escape(text)))
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", html))
