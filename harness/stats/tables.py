"""Per-image results -> per-subject scores, and the paired views of them every test starts from.

A *configuration* is (strategy, n). A study holds, per configuration, one row per (seed, fold, test
subject). Image Dice is averaged within (run, subject) first: the test subject is the unit, because the
images of one subject are strongly correlated. With cross-validation every subject is tested in exactly
one fold, so the subject id alone identifies the unit.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from harness.evaluate import CLASSES, dice

METRICS = tuple(f"dice_{c}" for c in CLASSES)
BASE = "base"  # the pre-trained model without fine-tuning (n = 0, no seeds); "base+<init>" for a second one
KEYS = ["strategy", "n", "seed", "fold", "subject"]
VOLUME_METRICS = ("edv_error_ml", "esv_error_ml", "ef_error_pct")


def is_base(strategy: pd.Series | str) -> pd.Series | bool:
    """Rows (or a name) of models evaluated without fine-tuning: 'base', or 'base+<init>' when a study
    compares several pre-trained inits."""
    if isinstance(strategy, str):
        return strategy == BASE or strategy.startswith(BASE + "+")
    return (strategy == BASE) | strategy.astype(str).str.startswith(BASE + "+")


def fine_tuned(scores: pd.DataFrame) -> pd.DataFrame:
    return scores[~is_base(scores["strategy"])]


def base_for(strategy: str, available: set[str]) -> str | None:
    """The base model a fine-tuned method is compared with: its own init's ('ed_es+ckpt-a' -> 'base+ckpt-a')
    where the study has it, else the study's 'base'."""
    _, plus, init = strategy.partition("+")
    own = f"{BASE}+{init}" if plus else None
    return own if own in available else BASE if BASE in available else None


def with_dice(images: pd.DataFrame, empty: str = "both-one") -> pd.DataFrame:
    """Recompute the Dice columns from the stored pixel counts under an empty-mask convention; tables that
    carry Dice but no counts (results made elsewhere) keep their Dice."""
    out = images.copy()
    for name in CLASSES:
        if f"{name}_inter" not in out:
            if f"dice_{name}" not in out:
                out[f"dice_{name}"] = np.nan
            continue
        out[f"dice_{name}"] = dice(out[f"{name}_inter"], out[f"{name}_pred"], out[f"{name}_ref"], empty)
    return out


def _with_defaults(images: pd.DataFrame) -> pd.DataFrame:
    out = images.copy()
    for column, default in (("seed", 0), ("fold", 0), ("labelled_images", np.nan)):
        if column not in out:
            out[column] = default
    return out


def subject_scores(images: pd.DataFrame, empty: str = "both-one") -> pd.DataFrame:
    """One row per (strategy, n, seed, fold, subject): mean image Dice, 3D Dice over the subject's images,
    the run's labelled images and, where ``voxel_ml`` and ED/ES phases are known, volume errors."""
    scored = with_dice(_with_defaults(images), empty)
    grouped = scored.groupby(KEYS, sort=True)
    out = grouped[list(METRICS)].mean()
    for name in CLASSES:
        if f"{name}_inter" in scored:
            sums = grouped[[f"{name}_{k}" for k in ("inter", "pred", "ref")]].sum(min_count=1)
            out[f"dice3d_{name}"] = dice(sums[f"{name}_inter"], sums[f"{name}_pred"], sums[f"{name}_ref"], empty)
    out["images"] = grouped.size()
    out["labelled_images"] = grouped["labelled_images"].first()
    if "expert_minutes" in scored:
        out["expert_minutes"] = grouped["expert_minutes"].first()
    if "voxel_ml" in scored and "phase" in scored and scored["voxel_ml"].notna().any():
        out = out.join(_volumes(scored))
    return out.reset_index()


def _volumes(images: pd.DataFrame) -> pd.DataFrame:
    """LV blood-pool volumes at ED and ES (sum over slices of pixels x voxel volume), EF, and errors."""
    part = images[images["phase"].isin(["ED", "ES"]) & images["voxel_ml"].notna()].copy()
    part["pred_ml"] = part["lv_pred"] * part["voxel_ml"]
    part["ref_ml"] = part["lv_ref"] * part["voxel_ml"]
    volumes = part.pivot_table(index=KEYS, columns="phase", values=["pred_ml", "ref_ml"], aggfunc="sum")
    if ("pred_ml", "ED") not in volumes or ("pred_ml", "ES") not in volumes:
        return pd.DataFrame(index=volumes.index)
    out = pd.DataFrame(index=volumes.index)
    for kind in ("pred", "ref"):
        edv, esv = volumes[(f"{kind}_ml", "ED")], volumes[(f"{kind}_ml", "ES")]
        out[f"edv_{kind}_ml"], out[f"esv_{kind}_ml"] = edv, esv
        out[f"ef_{kind}_pct"] = 100 * (edv - esv) / edv.where(edv > 0)
    out["edv_error_ml"] = (out["edv_pred_ml"] - out["edv_ref_ml"]).abs()
    out["esv_error_ml"] = (out["esv_pred_ml"] - out["esv_ref_ml"]).abs()
    out["ef_error_pct"] = (out["ef_pred_pct"] - out["ef_ref_pct"]).abs()
    return out


def configurations(scores: pd.DataFrame) -> list[tuple[str, int]]:
    return [(s, int(n)) for s, n in scores[["strategy", "n"]].drop_duplicates().sort_values(["strategy", "n"]).to_numpy()]


def by_seed(scores: pd.DataFrame, config: tuple[str, int], metric: str) -> pd.DataFrame:
    """(fold, subject) x seeds matrix of one configuration's scores (NaN where a run is missing)."""
    strategy, n = config
    part = scores[(scores["strategy"] == strategy) & (scores["n"] == n)]
    return part.pivot_table(index=["fold", "subject"], columns="seed", values=metric, aggfunc="mean",
                            dropna=False).dropna(how="all")


def paired_by_seed(scores: pd.DataFrame, a: tuple[str, int], b: tuple[str, int], metric: str) -> pd.DataFrame:
    """Subjects x seeds matrix of a minus b. Subsets at one seed share their subject draws, so seeds pair;
    the base model has no seeds and pairs with every seed of the same subject."""
    return pair_matrices(by_seed(scores, a, metric), by_seed(scores, b, metric))


def pair_matrices(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
    """``paired_by_seed`` of two `by_seed` matrices."""
    subjects = left.index.intersection(right.index)
    left, right = left.loc[subjects], right.loc[subjects]
    if right.shape[1] == 1 and left.shape[1] > 1:
        return left.sub(right.iloc[:, 0], axis=0)
    if left.shape[1] == 1 and right.shape[1] > 1:
        return right.rsub(left.iloc[:, 0], axis=0)
    return left - right


def subject_differences(paired: pd.DataFrame) -> pd.Series:
    """Per subject: the seed-averaged difference (the unit every subject-level test uses)."""
    return paired.mean(axis=1, skipna=True).dropna()
