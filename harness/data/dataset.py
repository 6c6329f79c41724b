"""The one dataset model every source becomes: a tidy frame index plus arrays at the training size.

Row i of ``index`` describes ``images[i]`` and ``masks[i]``. Images are padded to a square (keeping the
aspect ratio, as the published study did), resampled to the training size and scaled per image to
[0, 1] between the 1st and 99th intensity percentiles. Masks keep the source labels
(1 LV, 2 MY, 3 RV); training decides which classes it learns.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from harness.api import FRAME_COLUMNS
from harness.errors import DataError

CLASS_NAMES = ("background", "LV", "MY")  # classes the model learns; RV (label 3) counts as background


@dataclass(frozen=True)
class CineDataset:
    name: str
    index: pd.DataFrame
    images: np.ndarray  # (N, size, size) float16 in [0, 1]
    masks: np.ndarray  # (N, size, size) uint8
    fingerprint: str  # identifies content and preparation; recorded in every run spec

    @property
    def subjects(self) -> list[str]:
        return list(dict.fromkeys(self.index["subject"]))

    def rows_of(self, subjects: list[str] | tuple[str, ...]) -> pd.DataFrame:
        return self.index[self.index["subject"].isin(subjects)]


def normalise(images: np.ndarray) -> np.ndarray:
    """Scale each image (last two axes) to [0, 1] between its 1st and 99th percentiles."""
    flat = images.reshape(-1, images.shape[-2] * images.shape[-1]).astype(np.float32)
    low, high = np.percentile(flat, [1, 99], axis=1, keepdims=True)
    scaled = np.clip((flat - low) / np.maximum(high - low, 1e-6), 0, 1)
    return scaled.reshape(images.shape)


def to_training_size(images: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad the last two axes to a centred square, then resample to size x size."""
    if images.shape != labels.shape:
        raise DataError(f"images {images.shape} and labels {labels.shape} differ in shape")
    h, w = images.shape[-2:]
    side = max(h, w)
    pad = [(0, 0)] * (images.ndim - 2) + [((side - h) // 2, side - h - (side - h) // 2),
                                          ((side - w) // 2, side - w - (side - w) // 2)]
    images = np.pad(images, pad)
    labels = np.pad(labels, pad)
    zoom = [1] * (images.ndim - 2) + [size / side, size / side]
    return (ndimage.zoom(images, zoom, order=1, grid_mode=True, mode="nearest"),
            ndimage.zoom(labels, zoom, order=0, grid_mode=True, mode="nearest"))


def index_stack(subject: str, labels: np.ndarray, spacing_mm: float) -> pd.DataFrame:
    """Frame index rows for one subject's (slices, frames, H, W) labels at their original size."""
    n_slices, n_frames = labels.shape[:2]
    slices, frames = np.meshgrid(np.arange(n_slices), np.arange(n_frames), indexing="ij")
    lv_area = (labels == 1).sum(axis=(2, 3))
    return pd.DataFrame({
        "subject": subject,
        "slice": slices.ravel(),
        "frame": frames.ravel(),
        "phase": None,
        "slice_pos": (slices.ravel() / max(n_slices - 1, 1)).astype(float),
        "lv_area": lv_area.ravel().astype(int),
        "spacing_mm": float(spacing_mm),
        "n_slices": n_slices,
        "n_frames": n_frames,
    })[list(FRAME_COLUMNS)]


def assign_phases(index: pd.DataFrame) -> pd.DataFrame:
    """Mark ED and ES per subject: the frames with the largest and smallest LV area summed over slices.

    This is the published study's rule. Ties go to the earliest frame; a subject without LV pixels is
    an error naming it, not a silent pick.
    """
    index = index.copy()
    index["phase"] = None
    for subject, rows in index.groupby("subject", sort=False):
        area = rows.groupby("frame")["lv_area"].sum()
        if area.max() == 0:
            raise DataError(f"subject '{subject}': no LV pixels in any frame, so ED/ES cannot be found")
        ed, es = int(area.idxmax()), int(area.idxmin())
        index.loc[rows.index[rows["frame"] == ed], "phase"] = "ED"
        index.loc[rows.index[rows["frame"] == es], "phase"] = "ES"
    return index


def fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def save(dataset: CineDataset, path: Path) -> None:
    """Write a prepared dataset atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, images=dataset.images, masks=dataset.masks,
             meta=np.array(json.dumps({"name": dataset.name, "fingerprint": dataset.fingerprint})))
    dataset.index.to_csv(path.with_suffix(".csv.tmp"), index=False)
    tmp.replace(path)
    path.with_suffix(".csv.tmp").replace(path.with_suffix(".csv"))


def load(path: Path) -> CineDataset:
    with np.load(path) as arrays:
        meta = json.loads(str(arrays["meta"]))
        images, masks = arrays["images"], arrays["masks"]
    index = pd.read_csv(path.with_suffix(".csv"), dtype={"subject": str})
    index["phase"] = index["phase"].astype(object).where(index["phase"].notna(), None)
    return CineDataset(meta["name"], index, images, masks, meta["fingerprint"])
