"""Results as pandas DataFrames: a study folder (`open_study`) or per-image results made elsewhere (`open_results`,
CSV/TSV read by `read_results`), for notebooks and for `harness analyze`.

One row per image, with either Dice columns (`dice_lv`, `dice_my`) or confusion counts: `<ref>_<pred>` over
classes bg, lv, my (as the published 7T tables: `lv_my` = reference LV predicted as MY) or `lv_inter`,
`lv_pred`, `lv_ref`, ... Columns name the method (`method`, `strategy` or `methodB`), the subject (`subject`, or
parsed from an image id such as `26_slice002_frame017`) and optionally n, seed and fold.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from harness.errors import DataError, UsageError

CLASSES = ("bg", "lv", "my")
METHOD_COLUMNS = ("method", "strategy", "methodB")
IMAGE_ID = re.compile(r"^(?P<subject>.+?)_slice(?P<slice>\d+)_frame(?P<frame>\d+)")


REFERENCE_COLUMNS = ("reference", "methodA")  # the annotation a row's prediction was scored against


@dataclass(frozen=True)
class ResultTable:
    images: pd.DataFrame  # strategy, n, seed, fold, subject, image, counts or Dice (against the main reference)
    description: dict
    # other reference annotations (e.g. a second expert's): their images, as ``images`` for the main one
    others: dict[str, pd.DataFrame] = dataclasses.field(default_factory=dict)
    # a second annotation scored against the main reference (inter-observer agreement); None where there is none
    inter_observer: pd.DataFrame | None = None


TABLE_SUFFIXES = (".csv", ".tsv", ".tab")


def expand(paths: list[Path]) -> list[Path]:
    """Files as given; a folder stands for every CSV/TSV file directly inside it (sorted by name)."""
    out = []
    for path in map(Path, paths):
        if path.is_dir():
            tables = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES)
            if not tables:
                raise UsageError(f"folder '{path}' holds no .csv, .tsv or .tab files; give the result files or "
                                 "a folder of them")
            out.extend(tables)
        elif path.is_file():
            out.append(path)
        else:
            raise UsageError(f"results file '{path}' does not exist")
    return out


def _read(path: Path) -> pd.DataFrame:
    sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        return pd.read_csv(path, sep=sep)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: cannot be read as a {'TSV' if sep == chr(9) else 'CSV'} table ({exc})") from None


def _counts(table: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, bool]:
    """Add <class>_inter/_pred/_ref from a 3x3 confusion table; True when counts are present."""
    if all(f"{c}_inter" in table for c in ("lv", "my")):
        return table, True
    confusion = [f"{r}_{p}" for r in CLASSES for p in CLASSES]
    if all(c in table for c in confusion):
        out = table.copy()
        for c in ("lv", "my"):
            out[f"{c}_inter"] = table[f"{c}_{c}"]
            out[f"{c}_ref"] = table[[f"{c}_{p}" for p in CLASSES]].sum(axis=1)
            out[f"{c}_pred"] = table[[f"{r}_{c}" for r in CLASSES]].sum(axis=1)
        return out, True
    if all(f"dice_{c}" in table for c in ("lv", "my")):
        return table, False
    raise DataError(f"{path}: needs Dice columns dice_lv and dice_my, or confusion counts "
                    f"{', '.join(confusion)} (reference_prediction), or lv_inter/lv_pred/lv_ref and my_...; "
                    f"it has {', '.join(map(str, table.columns))}")


def read_results(paths: list[Path], subset: str | None = "test", method_column: str | None = None,
                 base: str | None = None, reference_annotation: str | None = None) -> ResultTable:
    """Read and join result files; `subset` keeps rows of that `set` where a `set` column exists; the
    method named `base` is the source-only model and is renamed to `base`. Where a column names the reference
    annotation each row was scored against (`reference`, or `methodA` beside `methodB`) and there are several,
    the main one is ``reference_annotation``, else the one a second annotation was scored against (the
    first expert of an inter-observer table), else the most frequent; the others are kept apart."""
    frames, kept_set, counts_all, subject_from, method_from = [], None, True, None, None
    files = expand(paths)
    for path in files:
        table = _read(path)
        if "set" in table and subset:
            if subset not in set(table["set"]):
                raise DataError(f"{path}: no rows with set = '{subset}' (it has {', '.join(sorted(map(str, set(table['set']))))}); "
                                "choose one with --set")
            table, kept_set = table[table["set"] == subset], subset
        column = method_column or next((c for c in METHOD_COLUMNS if c in table), None)
        if column is None or column not in table:
            raise DataError(f"{path}: no method column ({', '.join(METHOD_COLUMNS)}); name it with --method-column")
        table = table.rename(columns={column: "strategy"}) if column != "strategy" else table
        method_from = column
        if "subject" not in table:
            if "image" not in table:
                raise DataError(f"{path}: needs a 'subject' column, or an 'image' column with ids like "
                                "'26_slice002_frame017' (subject before '_slice')")
            parts = table["image"].astype(str).str.extract(IMAGE_ID)
            bad = parts["subject"].isna()
            if bad.any():
                raise DataError(f"{path}: image id '{table.loc[bad, 'image'].iloc[0]}' is not "
                                "<subject>_slice<S>_frame<F>; add a 'subject' column")
            table = table.assign(subject=parts["subject"], slice=parts["slice"].astype(int),
                                 frame=parts["frame"].astype(int))
            subject_from = "the image id (text before '_slice')"
        else:
            subject_from = "column `subject`"
        table, has_counts = _counts(table, path)
        counts_all &= has_counts
        frames.append(table.assign(_file=path.name))
    images = pd.concat(frames, ignore_index=True)
    images["strategy"] = images["strategy"].astype(str)
    if base is not None:
        if base not in set(images["strategy"]):
            raise UsageError(f"--base '{base}' is not a method of these files ({', '.join(sorted(set(images['strategy'])))})")
        images["strategy"] = images["strategy"].replace({base: "base"})
    images["subject"] = images["subject"].astype(str)
    for column, default in (("n", 0), ("seed", 0), ("fold", 0)):
        images[column] = images[column].astype(int) if column in images else default
    if not counts_all:
        images = images.drop(columns=[c for c in images if c.endswith(("_inter", "_pred", "_ref"))])
    main, others, inter, second = _by_reference(images, method_from, reference_annotation)
    for part in (main, *others.values(), *([inter] if inter is not None else [])):
        _no_duplicates(part)
    clean = [x.drop(columns="_file") for x in (main, *others.values())]
    return ResultTable(clean[0], {"kind": "table", "files": [p.name for p in files], "rows": len(clean[0]),
                                  "set": kept_set, "subject_from": subject_from, "method_column": method_from,
                                  "counts": counts_all, "reference_annotation": main.attrs.get("reference"),
                                  "other_references": sorted(others), "inter_observer": second},
                       dict(zip(sorted(others), clean[1:])), inter.drop(columns="_file") if inter is not None else None)


def _by_reference(images: pd.DataFrame, method_from: str | None, asked: str | None):
    """(main images, {other reference: images}, inter-observer images or None, the second annotation's name)."""
    column = next((c for c in REFERENCE_COLUMNS if c in images and c != method_from), None)
    if column is None:
        if asked:
            raise UsageError(f"--reference-annotation '{asked}': these files have no column naming the reference "
                             f"annotation ({' or '.join(REFERENCE_COLUMNS)})")
        return images, {}, None, None
    missing = images[column].isna()
    if missing.any():
        files = sorted(set(images.loc[missing, "_file"]))
        raise DataError(f"{', '.join(files)}: no reference annotation in column `{column}`, which the other files "
                        "have; give every file that column, or analyse them separately")
    images = images.assign(**{column: images[column].astype(str)})
    references = sorted(set(images[column]))
    experts = images["strategy"].isin(references)  # an annotation scored against another one
    if asked is not None:
        if asked not in references:
            raise UsageError(f"--reference-annotation '{asked}' is not a reference of these files "
                             f"({', '.join(references)})")
        main = asked
    elif experts.any() and images.loc[experts, column].nunique() == 1:
        main = images.loc[experts, column].iloc[0]
    else:
        main = images[column].value_counts().index[0]
    methods = images[~experts]
    parts = {r: methods[methods[column] == r].drop(columns=column) for r in references if (methods[column] == r).any()}
    if main not in parts:
        raise DataError(f"reference annotation '{main}' has no method's results in these files")
    # Dice is symmetric: a second annotation scored against the main one or the main one against it
    inter = images[experts & ((images[column] == main) | (images["strategy"] == main))].copy()
    if (inter[column] == main).any():  # scored both ways: the second against the main one is kept
        inter = inter[inter[column] == main]
    inter["strategy"] = inter["strategy"].where(inter[column] == main, inter[column])
    inter = inter[inter["strategy"] != main].drop(columns=column)
    second = sorted(set(inter["strategy"]))
    if len(second) > 1:
        raise DataError(f"{len(second)} annotations ({', '.join(second)}) were scored against the main reference "
                        f"'{main}'; the inter-observer agreement takes one: leave the others' tables out")
    chosen = parts.pop(main)
    chosen.attrs["reference"] = main
    return chosen, parts, (inter if len(inter) else None), (", ".join(second) if second else None)


def _no_duplicates(images: pd.DataFrame) -> None:
    key = [c for c in ("strategy", "n", "seed", "fold", "subject", "image", "slice", "frame") if c in images]
    duplicated = images.duplicated(key, keep=False)
    if duplicated.any():
        row = images.loc[duplicated, key].iloc[0]
        sources = sorted(set(images.loc[duplicated & (images[key] == row).all(axis=1), "_file"]))
        where = (f" (in {' and '.join(sources)}: tables of one method against different references or "
                 "sets? analyse them separately)" if len(sources) > 1 else f" (in {sources[0]})")
        raise DataError(f"the same image appears twice for one method and run: {row.to_dict()}{where}; one row "
                        "per image expected")


@dataclass
class Results:
    """A study's (or a results table's) data, and the analysis its report is made from, for a notebook:

    - ``settings``: study.json (or the table's description);
    - ``runs``: one row per run with its state, host, device, seconds, labelled images, mean Dice and a failure's
      reason (empty for results made elsewhere);
    - ``images``: per test image and run: strategy, n, seed, fold, subject, slice, frame, Dice per class;
    - ``subjects``: per test subject and run: mean image Dice (and 3D Dice, volumes where known);
    - ``training``: every fine-tuned run's training record, one row per check (run, strategy, init, n, seed,
      fold, step, stage, epoch, images seen, learning rate, training loss, validation Dice LV / MY / score,
      kept); the runs' steps, epochs, stop reason and convergence are in ``runs``. Empty for studies of 0.8
      and earlier, and for results made elsewhere;
    - ``analysis(...)``: the `harness.analysis.Analysis` of the report (its ``tables()`` as DataFrames), with the
      report's options (``margin=``, ``reference=``, ``test=``, ``alpha=``); computed once per options.
    """

    settings: dict
    runs: pd.DataFrame
    images: pd.DataFrame
    subjects: pd.DataFrame
    _analyse: Callable = dataclasses.field(repr=False)
    training: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)

    def analysis(self, **options):
        from harness.analysis import Options

        chosen = Options(**options)
        key = repr(chosen)
        if key not in self._cache:
            self._cache[key] = self._analyse(chosen)
        return self._cache[key]


def open_study(path: str | Path) -> Results:
    """A study folder written by `harness run` (finished runs; failed and unfinished ones are in ``runs``)."""
    from harness import stats
    from harness.analysis import StudyRuns, analyse

    study = StudyRuns.read(Path(path))
    empty = study.settings["empty"]
    subjects = stats.subject_scores(study.images, empty)
    return Results(study.settings, study.run_table(subjects), stats.with_dice(study.images, empty), subjects,
                   lambda options: analyse(Path(path), options, study), study.training())


def open_results(paths: list[str | Path] | str | Path, subset: str | None = "test", method_column: str | None = None,
                 base: str | None = None, empty: str = "both-one", reference_annotation: str | None = None) -> Results:
    """Per-image results made elsewhere, as `harness analyze` reads them (files or folders of CSV/TSV); the
    tables are the main reference annotation's (`read_results`)."""
    from harness import stats
    from harness.analysis import RUN_COLUMNS

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    table = read_results([Path(x) for x in paths], subset, method_column, base, reference_annotation)
    return Results(table.description, pd.DataFrame(columns=RUN_COLUMNS), stats.with_dice(table.images, empty),
                   stats.subject_scores(table.images, empty),
                   lambda options: analyse_results(table, dataclasses.replace(options, empty=empty)))


def analyse_results(table: ResultTable, options=None):
    """The analysis of results made elsewhere (`harness analyze`, `open_results`): against the main reference
    annotation, with the inter-observer agreement (a second annotation against the main one, drawn as the
    reference Dice unless one is given) and each other reference annotation's own analysis."""
    from harness import stats
    from harness.analysis import Options, analyse_images

    options = options or Options()
    inter, versus = pd.DataFrame(), pd.DataFrame()
    if table.inter_observer is not None:
        observer = stats.subject_scores(table.inter_observer, options.empty)
        inter = pd.concat([stats.summarise(observer, m) for m in stats.METRICS if observer[m].notna().any()],
                          ignore_index=True)
        inter["annotation"] = table.description.get("inter_observer")
        if not options.reference_dice:
            options = dataclasses.replace(options, reference_dice={r.metric: float(r.mean) for r in inter.itertuples()})
        versus = versus_observer(stats.subject_scores(table.images, options.empty), observer)
    analysis = analyse_images(table.images, table.description, options)
    others = {ref: analyse_images(images, {**table.description, "rows": len(images), "reference_annotation": ref,
                                           "other_references": [], "inter_observer": None},
                                  dataclasses.replace(options, reference_dice={}))
              for ref, images in table.others.items()}
    return dataclasses.replace(analysis, inter_observer=inter, versus_observer=versus, others=others)


def versus_observer(scores: pd.DataFrame, observer: pd.DataFrame) -> pd.DataFrame:
    """Per method and metric: its mean subject Dice against the second annotation's (both scored against the
    main reference, on the subjects both have), the paired difference with its 95% t interval over subjects and
    the share of the inter-observer Dice the method reaches."""
    import numpy as np

    from harness import stats
    from harness.stats.inference import DIFFERENCE_BOUNDS, _as_matrix, t_interval, t_test

    rows = []
    second = observer.groupby("subject")[list(stats.METRICS)].mean()
    for (method, n), part in scores.groupby(["strategy", "n"], sort=True):
        mine = part.groupby("subject")[list(stats.METRICS)].mean()
        for metric in stats.METRICS:
            both = pd.concat([mine[metric], second[metric]], axis=1, keys=["m", "o"]).dropna()
            result = t_test(_as_matrix((both["m"] - both["o"]).to_numpy()))  # the paired t over subjects
            low, high = t_interval(result, bounds=DIFFERENCE_BOUNDS) if len(both) > 1 else (np.nan, np.nan)
            mean_o = float(both["o"].mean()) if len(both) else np.nan
            rows.append({"strategy": method, "n": int(n), "metric": metric, "subjects": len(both),
                         "mean": float(both["m"].mean()) if len(both) else np.nan, "observer": mean_o,
                         "difference": result["mean"], "ci_low": low, "ci_high": high,
                         "share": float(both["m"].mean()) / mean_o if mean_o > 0 else np.nan})
    return pd.DataFrame(rows)
