"""Dice per 2D image and per subject, from predicted and reference label arrays (numpy only).

Per image and class the pixel counts (intersection, predicted, reference) are kept, so any Dice
convention can be recomputed later. The empty-mask convention is explicit: ``both-one`` (as published:
both masks empty = 1, one empty = 0) or ``ignore`` (images where both are empty are left out, as
nnU-Net and MONAI do).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from harness.errors import UsageError

CLASSES = {"lv": 1, "my": 2}
EMPTY_CONVENTIONS = ("both-one", "ignore")


def pixel_counts(pred: np.ndarray, ref: np.ndarray) -> dict[str, np.ndarray]:
    """Per image (first axis): intersection, predicted and reference pixels for each class."""
    counts = {}
    for name, label in CLASSES.items():
        p, r = pred == label, ref == label
        counts[f"{name}_inter"] = (p & r).sum(axis=(1, 2))
        counts[f"{name}_pred"] = p.sum(axis=(1, 2))
        counts[f"{name}_ref"] = r.sum(axis=(1, 2))
    return counts


def dice(inter: np.ndarray, pred: np.ndarray, ref: np.ndarray, empty: str = "both-one") -> np.ndarray:
    """2|A∩B| / (|A|+|B|); where both are empty: 1 (``both-one``) or NaN (``ignore``)."""
    if empty not in EMPTY_CONVENTIONS:
        raise UsageError(f"empty-mask convention must be one of {', '.join(EMPTY_CONVENTIONS)}, got '{empty}'")
    inter, total = np.asarray(inter, float), np.asarray(pred, float) + np.asarray(ref, float)
    both_empty = total == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(both_empty, np.nan, 2 * inter / total)
    return np.where(both_empty, 1.0, value) if empty == "both-one" else value


def image_metrics(rows: pd.DataFrame, pred: np.ndarray, ref: np.ndarray, empty: str = "both-one") -> pd.DataFrame:
    """One row per image: its identity columns, pixel counts and Dice for LV and MY."""
    unknown = (ref == 255).any(axis=(1, 2))  # non-LV pixels not contoured: MY cannot be scored
    ref = np.where(ref <= 2, ref, 0)  # RV is not a learned class
    out = rows[["subject", "slice", "frame", "phase"]].reset_index(drop=True).copy()
    for key, value in pixel_counts(pred, ref).items():
        out[key] = np.where(unknown, np.nan, value) if key.startswith("my_") else value
    for name in CLASSES:
        out[f"dice_{name}"] = dice(out[f"{name}_inter"], out[f"{name}_pred"], out[f"{name}_ref"], empty)
    return out


def test_frames(rows: pd.DataFrame, stride: int = 1) -> pd.DataFrame:
    """The test images a run is scored on: every labelled frame (``stride`` 1, as published), or per subject
    ED, ES and every ``stride``-th frame of the cycle counted from ED, so the whole cycle stays represented
    at about 1/stride of the cost. Subjects without a known ED count from frame 0."""
    if stride < 1:
        raise UsageError(f"test frame stride must be at least 1, got {stride}")
    if stride == 1:
        return rows
    ed = rows[rows["phase"] == "ED"].groupby("subject")["frame"].first()
    start = rows["subject"].map(ed).fillna(0).astype(int)
    keep = rows["phase"].notna() | ((rows["frame"] - start) % stride == 0)
    return rows[keep]


def subject_metrics(images: pd.DataFrame, empty: str = "both-one") -> pd.DataFrame:
    """Per subject: mean of image Dice (the unit of analysis) and 3D Dice over all its images."""
    grouped = images.groupby("subject", sort=False)
    out = grouped[[f"dice_{c}" for c in CLASSES]].mean()
    sums = grouped[[f"{c}_{k}" for c in CLASSES for k in ("inter", "pred", "ref")]].sum()
    for name in CLASSES:
        out[f"dice3d_{name}"] = dice(sums[f"{name}_inter"], sums[f"{name}_pred"], sums[f"{name}_ref"], empty)
    out["images"] = grouped.size()
    return out.reset_index()


def examples(images: pd.DataFrame, pixels: np.ndarray, pred: np.ndarray, ref: np.ndarray) -> dict[str, np.ndarray]:
    """A few test images to show in the report: per test subject its mid-ventricular ED slice (the middle of
    the ED slices with reference LV) at ED and ES, with image (8-bit), prediction and reference. ``images`` is
    the per-image metrics table (rows in the order of ``pixels``, ``pred`` and ``ref``)."""
    picked = []
    for subject, rows in images.groupby("subject", sort=True):
        ed = rows[(rows["phase"] == "ED") & (rows["lv_ref"] > 0)].sort_values("slice")
        if not len(ed):
            continue
        middle = ed["slice"].iloc[len(ed) // 2]
        for phase in ("ED", "ES"):
            hit = rows[(rows["phase"] == phase) & (rows["slice"] == middle)]
            if len(hit):
                picked.append(hit.index[0])
    if not picked:
        return {}
    chosen = images.loc[picked]
    return {"subject": chosen["subject"].to_numpy(str), "phase": chosen["phase"].to_numpy(str),  # never pickled
            "slice": chosen["slice"].to_numpy(), "frame": chosen["frame"].to_numpy(),
            "image": np.round(np.clip(np.asarray(pixels[picked], np.float32), 0, 1) * 255).astype(np.uint8),
            "pred": pred[picked].astype(np.uint8), "ref": np.where(ref[picked] <= 2, ref[picked], 0).astype(np.uint8)}
