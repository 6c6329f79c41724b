"""Per-image results made elsewhere (CSV/TSV) -> the tidy per-image table the statistics read.

One row per image, with either Dice columns (`dice_lv`, `dice_my`) or confusion counts: `<ref>_<pred>` over
classes bg, lv, my (as the published 7T tables: `lv_my` = reference LV predicted as MY) or `lv_inter`,
`lv_pred`, `lv_ref`, ... Columns name the method (`method`, `strategy` or `methodB`), the subject (`subject`, or
parsed from an image id such as `26_slice002_frame017`) and optionally n, seed and fold.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.errors import DataError, UsageError

CLASSES = ("bg", "lv", "my")
METHOD_COLUMNS = ("method", "strategy", "methodB")
IMAGE_ID = re.compile(r"^(?P<subject>.+?)_slice(?P<slice>\d+)_frame(?P<frame>\d+)")


@dataclass(frozen=True)
class ResultTable:
    images: pd.DataFrame  # strategy, n, seed, fold, subject, image, counts or Dice
    description: dict


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
                 base: str | None = None) -> ResultTable:
    """Read and join result files; `subset` keeps rows of that `set` where a `set` column exists; the
    method named `base` is the source-only model and is renamed to `base`."""
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
    key = [c for c in ("strategy", "n", "seed", "fold", "subject", "image", "slice", "frame") if c in images]
    duplicated = images.duplicated(key, keep=False)
    if duplicated.any():
        row = images.loc[duplicated, key].iloc[0]
        sources = sorted(set(images.loc[duplicated & (images[key] == row).all(axis=1), "_file"]))
        where = (f" (in {' and '.join(sources)}: tables of one method against different references or "
                 "sets? analyse them separately)" if len(sources) > 1 else f" (in {sources[0]})")
        raise DataError(f"the same image appears twice for one method and run: {row.to_dict()}{where}; one row "
                        "per image expected")
    images = images.drop(columns="_file")
    return ResultTable(images, {"kind": "table", "files": [p.name for p in files], "rows": len(images),
                                "set": kept_set, "subject_from": subject_from, "method_column": method_from,
                                "counts": counts_all})
