"""The analysis of a study: a study folder (or a per-image results table) -> tidy tables and verdicts.

`analyse` reads a study's finished runs, `analyse_images` computes every statistic of the report from a per-image
table (harness.stats), and a study run --until-decided gets its recorded sequential decisions (harness.rounds).
The report (harness.reports) only turns an `Analysis` into markdown, HTML and figures; notebooks get the same
object from `harness.open_study`.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from types import SimpleNamespace
from pathlib import Path

import numpy as np
import pandas as pd

from harness import repeated, rounds, stats
from harness.errors import StoreError
from harness.store import RunStore, finished_runs, method_label


@dataclass(frozen=True)
class Options:
    """What the analysis asks: the margin and reference of the non-inferiority guideline, and the test."""

    margin: float = 0.02
    reference: str | None = None  # "STRATEGY@N"; None = all_frames at its largest n, else each strategy's own
    test: str = "t"
    alpha: float = 0.05
    empty: str = "both-one"
    reference_dice: dict[str, float] = dataclasses.field(default_factory=dict)  # metric -> a Dice to draw

    def __post_init__(self):
        from harness.errors import UsageError
        from harness.stats.inference import TESTS

        if not 0 < self.margin < 1:
            raise UsageError(f"margin {self.margin:g} must be a Dice difference between 0 and 1, e.g. 0.02")
        if not 0 < self.alpha < 0.5:
            raise UsageError(f"alpha {self.alpha:g} must lie between 0 and 0.5, e.g. 0.05")
        if self.test not in TESTS:
            raise UsageError(f"test '{self.test}': choose one of {', '.join(TESTS)}")


DEFAULT_MARGIN = 0.02


RUN_COLUMNS = ["run", "strategy", "method", "init", "n", "seed", "fold", "state", "host", "device", "seconds",
               "labelled_images", "validation_images", "validation_minutes", "steps", "epochs", "stop_reason", "converged", "kept_step",
               "dice_lv", "dice_my", "reason", "software"]
#: Identity columns before a run's train.csv columns in the study's training table.
TRAINING_KEYS = ["run", "strategy", "init", "n", "seed", "fold"]


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
    # every fine-tuned run's training record (train.csv) under its method's name; empty before 0.9
    training: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    # per method x n with runs that did not converge: runs, not converged, at the cap, diverged (unconverged)
    unconverged: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    # the validation labels of a run: subjects per fold, images and expert minutes (median, min, max over runs)
    validation: dict = dataclasses.field(default_factory=dict)
    # per strategy x n x metric: expert minutes, Dice, gain over base per expert hour (stats.cost_table)
    costs: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    cheapest: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)  # non-inferior configs by cost
    # run --until-decided: per question its last look (harness.rounds.final_table) and the design's text
    sequential: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    design_text: str = ""
    # results made elsewhere against several reference annotations (harness.results.analyse_results): a second
    # annotation's agreement with the main one per metric, each method against it, and the other references'
    inter_observer: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    versus_observer: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    others: dict = dataclasses.field(default_factory=dict)  # reference annotation -> its Analysis

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table of the analysis as a DataFrame, by name (summary, noninferiority, strategies, ...)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), pd.DataFrame)}


@dataclass(frozen=True)
class StudyRuns:
    """What a study folder holds for its analysis: settings, finished and failed runs, and every finished run's
    per-image counts under its method's name (oracles named so)."""

    store: RunStore
    settings: dict
    specs: list
    failed: list[tuple[str, str]]
    inits: list[str]
    label: object  # spec -> method name (labeller)
    images: pd.DataFrame

    @classmethod
    def read(cls, study_dir: Path) -> StudyRuns:
        store = RunStore(study_dir)
        settings = store.read_study()
        specs, failed = finished_runs(store)
        if not specs:
            raise_no_runs(study_dir, failed)
        inits = settings.get("init_names") or ["source"]
        label = labeller(settings, inits)
        images = pd.concat([store.images(spec, label(spec)) for spec in specs], ignore_index=True)
        return cls(store, settings, specs, failed, inits, label, images)

    def run_table(self, subjects: pd.DataFrame) -> pd.DataFrame:
        """Every run of the study (run_table), oracles named as the statistics name them."""
        runs = run_table(self.store, self.specs, self.inits, subjects, self.label)
        oracle = runs["strategy"].isin(oracles(self.settings))
        runs.loc[oracle, "strategy"] = runs.loc[oracle, "strategy"] + ORACLE
        named = runs["strategy"].notna() & runs["init"].notna()
        runs["method"] = runs["method"].astype(object)
        runs.loc[named, "method"] = [self.label(SimpleNamespace(strategy=str(s).removesuffix(ORACLE), init=i))
                                     for s, i in zip(runs.loc[named, "strategy"], runs.loc[named, "init"])]
        return runs

    def training(self) -> pd.DataFrame:
        """Every finished fine-tune's training record (train.csv), one row per check, under its method's name:
        run, strategy, init, n, seed, fold, then step, stage, epoch, images seen, learning rate, training loss,
        validation Dice (LV, MY, the rule's score) and whether the run kept that check's weights."""
        from harness.store import TRAINING_COLUMNS

        parts = []
        for spec in self.specs:
            record = self.store.training(spec)
            if len(record):
                parts.append(record.assign(run=spec.folder_name, strategy=self.label(spec), init=spec.init, n=spec.n,
                                           seed=spec.seed, fold=spec.fold))
        if not parts:
            return pd.DataFrame(columns=TRAINING_KEYS + TRAINING_COLUMNS)
        table = pd.concat(parts, ignore_index=True)
        return table[TRAINING_KEYS + [c for c in table.columns if c not in TRAINING_KEYS]]


def analyse(study_dir: Path, options: Options | None = None, study: StudyRuns | None = None) -> Analysis:
    """Analyse a study folder written by `harness run` (``study``: its runs, where already read)."""
    study = study or StudyRuns.read(study_dir)
    store, settings, specs, failed, inits, label, images = (study.store, study.settings, study.specs, study.failed,
                                                            study.inits, study.label, study.images)
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
    runs = study.run_table(analysis.subjects)
    analysis = dataclasses.replace(analysis, runs=runs, training=study.training(), unconverged=unconverged(runs),
                                   validation=validation_labels(runs, settings))
    analysis = dataclasses.replace(analysis, cautions=analysis.cautions + training_cautions(analysis))
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
    table["against"] = [named(x) if isinstance(x, str) else None for x in table["against"]]
    table["reference"] = [f"{named(r.partition('@')[0])}@{r.partition('@')[2]}" if isinstance(r, str) else None
                          for r in table["reference"]]
    ni = a.noninferiority.copy()
    if len(ni):
        ni["sequential"] = False
        decided = table[table["kind"] == "non-inferiority"].set_index(["strategy", "n", "metric"])
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
    looks = repeated.RoundLooks(a.subjects, recorded, int(a.settings.get("first_seed", 0)),
                              lambda label: label.replace(ORACLE, ""))

    def comparisons(table: pd.DataFrame, pair, until=lambda row: None) -> pd.DataFrame:
        return repeated.repeated_comparisons(table, looks, pair, a.options.test, until)

    decided = repeated.decided_pairs(recorded)

    def question(row) -> dict | None:  # strategies at a budget are questions of the rounds themselves
        names = frozenset((row.a.replace(ORACLE, ""), row.b.replace(ORACLE, "")))
        return decided.get((names, int(row.n), row.metric))

    def decided_in(row) -> int | None:
        q = question(row)
        return q["round"] if q else None

    caution = ("Comparisons with the base model, between budgets and between strategies carry repeated p-values and "
               "repeated 95% intervals over the rounds (valid whatever stopped them); a comparison of strategies "
               "decided in a round is looked at up to that round, and its p and Holm-adjusted p are those the decision "
               "was taken on (t-based, Holm over the comparisons of the metric at that round, whatever --test this "
               "report asks); the rest (mean Dice intervals, "
               "power and planning, learning curves, Friedman, image-level and mixed-model tables) are fixed-design "
               "statistics on the seeds each configuration received, and the sequential decisions chose those: read "
               "them as descriptive.")
    strategies = comparisons(a.strategies, lambda r: ((r.a, r.n), (r.b, r.n)), decided_in)
    if len(strategies):  # a decided comparison's p-values are the ones its decision was taken on (t-based)
        strategies["decision"] = None
        for i, row in zip(strategies.index, strategies.itertuples()):
            q = question(row)
            if q is not None:
                strategies.loc[i, ["p", "p_holm", "decision"]] = [
                    q.get("p_repeated") if q.get("p_repeated") is not None else np.nan,
                    q.get("p_holm") if q.get("p_holm") is not None else np.nan, q["decision"]]
    return dataclasses.replace(
        a, versus_base=comparisons(a.versus_base, lambda r: ((r.strategy, r.n), (r.base, 0))),
        budgets=comparisons(a.budgets, lambda r: ((r.strategy, r.n_large), (r.strategy, r.n_small))),
        strategies=strategies, cautions=a.cautions + [caution])


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
            "seconds": seconds, "labelled_images": status.get("labelled_images"),
            "validation_images": (status.get("validation_cost") or {}).get("images"),
            "validation_minutes": (status.get("validation_cost") or {}).get("minutes"),
            **training_summary(status.get("train")), **dice,
            "reason": state.reason.strip().splitlines()[-1] if state.reason.strip() else "",
            "software": ", ".join(f"{k} {v}" for k, v in software.items())})
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def training_summary(train: dict | None) -> dict:
    """A run's steps, epochs, stop reason, converged and kept step from its status.json (runs of 0.8 and
    earlier: steps and epochs only, their stop 'schedule' and convergence unknown)."""
    if not train:
        return {"steps": None, "epochs": None, "stop_reason": None, "converged": None, "kept_step": None}
    steps = train.get("steps_run", sum(train.get("steps") or []))
    return {"steps": steps, "epochs": train.get("epochs"), "stop_reason": train.get("stop_reason", "schedule"),
            "converged": train.get("converged"), "kept_step": train.get("kept_step", train.get("selected_step"))}


def validation_labels(runs: pd.DataFrame, settings: dict) -> dict:
    """What the checks of a study's runs read, which a lab contours too: validation subjects per fold, and the
    images and expert minutes of a run's validation labels (median, min, max over finished runs); {} without."""
    done = runs[(runs["state"] == "done") & runs["validation_images"].notna()] if len(runs) else runs
    if not len(done):
        return {}
    splits = settings.get("splits") or [settings.get("split") or {}]
    images = done["validation_images"].astype(float)
    minutes = done["validation_minutes"].astype(float)
    return {"subjects": len(splits[0].get("validation", [])), "images": float(images.median()),
            "images_min": float(images.min()), "images_max": float(images.max()),
            "minutes": float(minutes.median()) if minutes.notna().any() else float("nan")}


def _budget(settings: dict, n: int) -> str:
    return f"{int(n)} expert minutes" if settings.get("budget_minutes") else f"n = {int(n)}"


def _test_name(test: str) -> str:
    return {"t": "t-test", "wilcoxon": "Wilcoxon signed-rank", "permutation": "permutation"}.get(test, test)


def falling_cautions(a: Analysis, bad: pd.DataFrame) -> list[str]:
    """Where mean Dice falls from a budget to the next larger one by more than the study's noise allows (the
    two-sided comparison of budgets below alpha after Holm): more labels should not hurt, so the first suspect
    is training that stopped before its plateau, named where the larger budget's runs stopped at the cap."""
    out = []
    table = a.budgets
    if not len(table) or "p_holm" not in table:
        return out
    capped = {(r.strategy, int(r.n)) for r in bad.itertuples() if r.at_cap}
    names = {"dice_lv": "LV", "dice_my": "MY"}
    fell = table[(table["difference"] < 0) & (table["p_holm"] < a.options.alpha)]
    for (strategy, small, large), part in fell.groupby(["strategy", "n_small", "n_large"], sort=True):
        each = "; ".join(f"{names.get(r.metric, r.metric)} {r.difference:+.3f} (95% CI {r.ci_low:+.3f} to "
                         f"{r.ci_high:+.3f}, {_test_name(r.test)} p "
                         f"{'< 0.001' if r.p_holm < 0.001 else f'= {r.p_holm:.3f}'} Holm-adjusted)"
                         for r in part.itertuples())
        suspect = (f" Runs at {_budget(a.settings, large)} stopped at the cap while still improving: unfinished "
                   "training is the first suspect; rerun with a larger --max-checks." if (strategy, int(large)) in capped
                   else " The first suspect is unfinished training (see the training curves and the runs' stop "
                        "reasons); then a larger budget whose extra subjects differ from the test subjects.")
        out.append(f"Dice falls as the budget grows: {strategy} at {_budget(a.settings, large)} is below "
                   f"{_budget(a.settings, small)} ({each}), beyond what this study's variance allows.{suspect}")
    return out


def unconverged(runs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (method, as the statistics name it, and n) with fine-tuned runs that did not converge:
    how many, of how many, and how they stopped. Runs whose convergence is unknown (no validation subjects, or
    written before 0.9) are not counted here."""
    done = runs[(runs["state"] == "done") & runs["steps"].notna()]
    done = done.assign(method=done["method"].fillna(done["strategy"])) if "method" in done else \
        done.assign(method=done["strategy"])
    rows = []
    for (strategy, n), part in done.groupby(["method", "n"], sort=True):
        bad = part[part["converged"].map(lambda v: v is False or v == 0)]
        if len(bad):
            rows.append({"strategy": strategy, "n": int(n), "runs": len(part), "not_converged": len(bad),
                         "at_cap": int((bad["stop_reason"] == "cap").sum()),
                         "diverged": int((bad["stop_reason"] == "diverged").sum())})
    return pd.DataFrame(rows, columns=["strategy", "n", "runs", "not_converged", "at_cap", "diverged"])


def training_cautions(a: Analysis) -> list[str]:
    """Cautions about training: configurations with runs that did not converge, runs whose convergence was
    never checked, and a mean Dice that falls from a smaller budget to a larger one beyond the study's noise."""
    out = []
    runs = a.runs
    bad = a.unconverged if len(a.unconverged.columns) else unconverged(runs)
    for r in bad.itertuples():
        how = []
        if r.at_cap:
            how.append(f"{r.at_cap} stopped at the cap while validation Dice was still improving")
        if r.diverged:
            how.append(f"{r.diverged} diverged")
        rest = r.not_converged - r.at_cap - r.diverged
        if rest:
            how.append(f"{rest} ended their fixed schedule before validation Dice stopped improving")
        out.append(f"Not converged: {r.not_converged} of {r.runs} runs of {r.strategy} at {_budget(a.settings, r.n)} "
                   f"({'; '.join(how)}). Their Dice may be below what their data can teach; a guideline that rests on "
                   "them may change with longer training (--max-checks, or a longer --schedule).")
    done = runs[(runs["state"] == "done") & runs["steps"].notna()]
    unknown = done[done["converged"].isna()] if len(done) else done
    if len(unknown) and len(unknown) == len(done):
        splits = a.settings.get("splits") or [a.settings.get("split") or {}]
        why = ("the runs have no validation subjects (--val-subjects 0)" if not splits[0].get("validation")
               else "the runs were made before cine-harness 0.9, which kept no training record")
        out.append(f"No convergence check ran: {why}, so nothing shows that every budget trained until its "
                   "validation Dice stopped improving.")
    out += falling_cautions(a, bad)
    return out


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
