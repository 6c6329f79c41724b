"""The one dataset model every source becomes: a tidy frame index plus arrays at the training size.

Row i of ``index`` describes ``images[i]`` and ``masks[i]``. Images are padded to a square (keeping the
aspect ratio, as the published study did), resampled to the training size and scaled per image to
[0, 1] between the 1st and 99th intensity percentiles. Masks keep the source labels
(1 LV, 2 MY, 3 RV); training decides which classes it learns.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterable
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
    subjects_info: pd.DataFrame | None = None  # per subject: slices, frames, spacing, ED/ES and their source
    problems: tuple[str, ...] = ()  # subjects left out under --skip-bad, each with the reason
    path: str | None = None  # its file in the cache, where workers of other processes read it
    hashes: np.ndarray | None = None  # per index row: image_hash of the image as loaded (None: prepared before 0.7)

    @property
    def subjects(self) -> list[str]:
        return list(dict.fromkeys(self.index["subject"]))

    def rows_of(self, subjects: list[str] | tuple[str, ...]) -> pd.DataFrame:
        return self.index[self.index["subject"].isin(subjects)]


#: Revision of what a prepared dataset holds (0.7: per-image content hashes; 0.8: trigger times and RR interval
#: in the index); part of cache keys.
PREPARED_REVISION = 3


def image_hash(image: np.ndarray) -> str:
    """A 2D image's identity by content: sha256 of its pixel values as loaded (float32, original size, before
    any resampling), the smallest over its 8 flips and transposes, 16 hex digits. File names, subject ids,
    the training size and the orientation a loader reads it in do not enter it, so copies of a dataset give
    the same hashes, a DICOM copy of a NIfTI included; a resampled or rescaled copy does not. An image
    without content (every pixel equal: padding slices) has no identity: ''."""
    pixels = np.ascontiguousarray(image, dtype="<f4")
    if pixels.size == 0 or pixels.min() == pixels.max():
        return ""
    views = [pixels, pixels.T]
    views += [v[::-1] for v in views]
    views += [v[:, ::-1] for v in views]
    return min(hashlib.sha256(repr(v.shape).encode() + np.ascontiguousarray(v).tobytes()).hexdigest()[:16]
               for v in views)


#: Most voxels one file may hold (a 4D cine of 512 x 512 x 20 slices x 50 frames is 262 M): a header that
#: claims more is corrupt or not a cine, and is refused before anything is allocated.
MAX_VOXELS = 300_000_000


def check_voxels(path: Path | str, shape: tuple[int, ...]) -> None:
    """Refuse a file whose header claims more than MAX_VOXELS voxels, before its data are read."""
    count = math.prod(max(int(d), 0) for d in shape) if len(shape) else 0
    if count > MAX_VOXELS:
        dims = " x ".join(str(int(d)) for d in shape)
        raise DataError(f"{path}: its header claims {dims} = {count:,} voxels, more than the {MAX_VOXELS:,} one "
                        "cine file may hold; the file is corrupt or not a cine: replace or remove it")


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


def index_stack(subject: str, labels: np.ndarray, spacing_mm: float,
                frame_numbers: tuple[int, ...] | None = None, n_frames: int | None = None,
                trigger_ms: np.ndarray | None = None, rr_ms: np.ndarray | None = None) -> pd.DataFrame:
    """Frame index rows for one subject's (slices, frames, H, W) labels at their original size.

    ``frame_numbers`` are the cine frame numbers of the labelled frames (default 0..F-1, every frame
    labelled) and ``n_frames`` the frames of the whole cine; ``trigger_ms`` and ``rr_ms`` (slices, frames)
    the timing where the data carry it (NaN in the index where they do not).
    """
    n_slices, n_labelled = labels.shape[:2]
    timing = {}
    for name, values in (("trigger_ms", trigger_ms), ("rr_ms", rr_ms)):
        values = np.full((n_slices, n_labelled), np.nan) if values is None else np.asarray(values, float)
        if values.shape != (n_slices, n_labelled):
            raise DataError(f"subject '{subject}': {name} is {values.shape}, not one value per image "
                            f"({n_slices} slices x {n_labelled} frames)")
        timing[name] = np.round(values.ravel(), 3)
    numbers = np.asarray(frame_numbers if frame_numbers is not None else range(n_labelled))
    n_frames = n_frames if n_frames is not None else n_labelled
    slices, frames = np.meshgrid(np.arange(n_slices), numbers, indexing="ij")
    lv_area = (labels == 1).sum(axis=(2, 3))
    return pd.DataFrame({
        "subject": subject,
        "slice": slices.ravel(),
        "frame": frames.ravel(),
        "phase": None,
        "slice_pos": (slices.ravel() / max(n_slices - 1, 1)).astype(float),
        "lv_area": lv_area.ravel().astype(int),
        "spacing_mm": round(float(spacing_mm), 6),  # float32 headers: 1.2000000476 -> 1.2
        "n_slices": n_slices,
        "n_frames": n_frames,
        **timing,
    })[list(FRAME_COLUMNS)]


MIN_FRAMES_FOR_AREA_RULE = 3  # with fewer labelled frames, a metadata hint (Info.cfg, file names) wins


@dataclass(frozen=True)
class PhaseResult:
    """ED/ES per subject and where they came from; subjects without an answer carry a warning."""

    index: pd.DataFrame
    phases: pd.DataFrame  # subject, ed, es, source, warning

    @property
    def warnings(self) -> list[str]:
        return [w for w in self.phases["warning"] if w]


def find_phases(index: pd.DataFrame, hints: dict[str, dict[str, int]] | None = None,
                hint_source: str = "metadata") -> PhaseResult:
    """Mark ED and ES frames per subject, with the published study's rule where it can apply.

    With at least ``MIN_FRAMES_FOR_AREA_RULE`` labelled frames: ED/ES = the frames with the largest /
    smallest LV area summed over slices (ties: earliest frame). With fewer, a hint from the dataset's
    metadata ({subject: {"ED": frame, "ES": frame}}) is used when there is one, otherwise the same area
    rule over the labelled frames. A subject without LV pixels gets a warning and no phases.
    """
    hints = hints or {}
    index = index.copy()
    index["phase"] = None
    rows_out = []
    for subject, rows in index.groupby("subject", sort=False):
        area = rows.groupby("frame")["lv_area"].sum()
        hint = hints.get(subject)
        if len(area) == 1:  # one labelled frame cannot be both: name it only if the metadata does
            frame = int(area.index[0])
            ed = frame if hint and hint.get("ED") == frame else None
            es = frame if hint and hint.get("ES") == frame else None
            source = hint_source if ed is not None or es is not None else "none"
            warning = f"subject '{subject}': only frame {frame} is labelled, so it has no ED/ES pair"
        elif (len(area) < MIN_FRAMES_FOR_AREA_RULE and hint and {"ED", "ES"} <= set(hint)
                and hint["ED"] in area.index and hint["ES"] in area.index):
            ed, es, source, warning = hint["ED"], hint["ES"], hint_source, ""
        elif area.max() == 0:
            ed = es = None
            source = "none"
            warning = (f"subject '{subject}': no LV pixels in any labelled frame, so ED/ES cannot be found "
                       "from LV area; it has no ED/ES frames (strategies that need them will fail on it)")
        else:
            ed, es = int(area.idxmax()), int(area.idxmin())
            source = "LV area" if len(area) >= MIN_FRAMES_FOR_AREA_RULE else "LV area of the labelled frames"
            warning = ""
        if ed is not None:
            index.loc[rows.index[rows["frame"] == ed], "phase"] = "ED"
        if es is not None:
            index.loc[rows.index[rows["frame"] == es], "phase"] = "ES"
        rows_out.append({"subject": subject, "ed": ed, "es": es, "source": source, "warning": warning})
    return PhaseResult(index, pd.DataFrame(rows_out, columns=["subject", "ed", "es", "source", "warning"]))


@dataclass(frozen=True)
class RawStack:
    """One subject as a loader reads it, before preparation: labelled frames of a short-axis stack.

    Labels use the harness's values (1 LV, 2 MY, 3 RV); loaders map each dataset's own values.
    """

    subject: str
    images: np.ndarray  # (slices, labelled frames, H, W), base -> apex
    labels: np.ndarray  # same shape, uint8
    spacing_mm: float
    frame_numbers: tuple[int, ...]  # cine frame (0-based) of each labelled frame
    n_frames: int  # frames in the whole cine
    phase_hint: dict[str, int] | None = None  # {"ED": frame, "ES": frame} from metadata
    field_strength_t: float | None = None
    slice_thickness_mm: float | None = None
    slice_spacing_mm: float | None = None  # between slice centres (thickness + gap); volumes use it
    trigger_ms: np.ndarray | None = None  # (slices, labelled frames): ms after the R wave; NaN/None where unknown
    rr_ms: np.ndarray | None = None  # same shape: the cardiac cycle (RR interval, ms) each image was acquired in


def order_base_to_apex(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Put the base first when the file stores apex first: the basal half holds more LV blood pool."""
    area = (labels == 1).sum(axis=(1, 2, 3)).astype(float)
    half = len(area) // 2
    flip = area[:half].sum() < area[len(area) - half:].sum()
    return (images[::-1], labels[::-1], True) if flip else (images, labels, False)


@dataclass(frozen=True)
class PreparedStack:
    """One subject at the training size: what ``prepare`` keeps of a RawStack."""

    images: np.ndarray  # (slices x labelled frames, size, size) float16, normalised
    masks: np.ndarray  # uint8
    frames: pd.DataFrame  # index rows (phase not yet found)
    info: dict
    hint: tuple | None
    hashes: tuple[str, ...] = ()  # image_hash of each image, in the order of ``images``


def prepare_stack(stack: RawStack, size: int) -> PreparedStack:
    """Resize and normalise one subject and index its frames (top level: worker processes run it)."""
    img, lab = to_training_size(stack.images.astype(np.float32), stack.labels, size)
    info = {"subject": stack.subject, "slices": stack.images.shape[0], "frames": stack.n_frames,
            "labelled_frames": len(stack.frame_numbers), "spacing_mm": round(stack.spacing_mm, 3),
            "slice_thickness_mm": stack.slice_thickness_mm, "slice_spacing_mm": stack.slice_spacing_mm,
            "side_px": max(stack.images.shape[-2:]), "field_strength_t": stack.field_strength_t,
            "rr_ms": None if stack.rr_ms is None or np.isnan(stack.rr_ms).all() else float(np.nanmedian(stack.rr_ms))}
    hashes = tuple(image_hash(image) for image in stack.images.reshape((-1,) + stack.images.shape[-2:]))
    return PreparedStack(normalise(img).reshape(-1, size, size).astype(np.float16),
                         lab.reshape(-1, size, size).astype(np.uint8),
                         index_stack(stack.subject, stack.labels, stack.spacing_mm, stack.frame_numbers,
                                     stack.n_frames, stack.trigger_ms, stack.rr_ms), info, stack.phase_hint, hashes)


def prepare(name: str, stacks: Iterable[RawStack | PreparedStack], size: int, key: str,
            hint_source: str = "metadata", problems: tuple[str, ...] = ()) -> CineDataset:
    """Stacks -> one CineDataset at the training size, with ED/ES found per subject. ``stacks`` may be a
    generator: each is resized as it comes, so only one subject is held at its original size; stacks
    prepared elsewhere (``prepare_stack`` in worker processes) are taken as they are."""
    done = [stack if isinstance(stack, PreparedStack) else prepare_stack(stack, size) for stack in stacks]
    hints = {d.info["subject"]: d.hint for d in done if d.hint}
    phases = find_phases(pd.concat([d.frames for d in done], ignore_index=True), hints, hint_source)
    subjects = pd.DataFrame([d.info for d in done]).merge(phases.phases, on="subject")
    return CineDataset(name, phases.index, np.concatenate([d.images for d in done]),
                       np.concatenate([d.masks for d in done]), key, subjects, problems,
                       hashes=np.array([h for d in done for h in d.hashes], dtype="<U16"))


def voxel_ml(info: pd.DataFrame | None, size: int) -> dict[str, float]:
    """Per subject: millilitres one pixel of the training-size image stands for, through the whole slice.

    A pixel at the training size covers (spacing x original side / size) mm in-plane; through-plane it
    stands for the distance between slice centres (the slice thickness where that is unknown), as in
    Simpson's method. Subjects with unknown spacing are left out.
    """
    if info is None or "side_px" not in info:
        return {}
    number = {c: pd.to_numeric(info[c], errors="coerce") for c in ("spacing_mm", "side_px", "slice_thickness_mm")}
    through = pd.to_numeric(info.get("slice_spacing_mm", pd.Series(np.nan, info.index)), errors="coerce")
    through = through.fillna(number["slice_thickness_mm"])
    ml = (number["spacing_mm"] * number["side_px"] / size) ** 2 * through / 1000
    return {str(s): float(v) for s, v in zip(info["subject"], ml) if np.isfinite(v) and v > 0}


def fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def is_cached(path: Path) -> bool:
    """Whether a prepared dataset is complete at ``path`` (its folder appears by one rename, when whole)."""
    return (path / "meta.json").exists()


def save(dataset: CineDataset, path: Path) -> CineDataset:
    """Write a prepared dataset as a folder of plain files (images.npy, masks.npy, index.csv, subjects.csv,
    meta.json), built under a temporary name and renamed into place; returns it with its ``path``. The
    arrays are .npy so that every worker process can memory-map them instead of holding its own copy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # never shared by two processes preparing it
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    np.save(tmp / "images.npy", dataset.images)
    np.save(tmp / "masks.npy", dataset.masks)
    if dataset.hashes is not None:
        np.save(tmp / "hashes.npy", np.asarray(dataset.hashes, dtype="<U16"))
    dataset.index.to_csv(tmp / "index.csv", index=False)
    if dataset.subjects_info is not None:
        dataset.subjects_info.to_csv(tmp / "subjects.csv", index=False)
    (tmp / "meta.json").write_text(json.dumps({"name": dataset.name, "fingerprint": dataset.fingerprint,
                                               "problems": list(dataset.problems)}))
    try:
        os.rename(tmp, path)
    except OSError:  # another process put the same dataset there first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_cached(path):
            raise
    return dataclasses.replace(dataset, path=str(path))


def load(path: Path, mmap: bool = True) -> CineDataset:
    """A prepared dataset from its cache folder; the arrays memory-mapped read-only unless ``mmap`` is False,
    so K workers on one machine share one copy in the page cache."""
    path = Path(path)
    meta = json.loads((path / "meta.json").read_text())
    mode = "r" if mmap else None
    images, masks = np.load(path / "images.npy", mmap_mode=mode), np.load(path / "masks.npy", mmap_mode=mode)
    index = pd.read_csv(path / "index.csv", dtype={"subject": str})
    index["phase"] = index["phase"].astype(object).where(index["phase"].notna(), None)
    for column in ("trigger_ms", "rr_ms"):  # prepared before revision 3 (read by hand): timing unknown
        if column not in index:
            index[column] = np.nan
    info_path = path / "subjects.csv"
    info = pd.read_csv(info_path, dtype={"subject": str}, keep_default_na=False) if info_path.exists() else None
    if info is not None and "rr_ms" in info:  # '' where unknown: a number column, not strings
        info["rr_ms"] = pd.to_numeric(info["rr_ms"], errors="coerce")
    hashes = np.load(path / "hashes.npy") if (path / "hashes.npy").exists() else None
    return CineDataset(meta["name"], index, images, masks, meta["fingerprint"], info,
                       tuple(meta.get("problems", ())), str(path), hashes)
