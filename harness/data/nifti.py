"""NIfTI cine datasets (nibabel): the ACDC and M&Ms layouts.

* ACDC: ``patientNNN/patientNNN_frameXX.nii.gz`` + ``_gt.nii.gz`` and ``Info.cfg`` (ED, ES, NbFrame;
  frame numbers 1-based). Labels 1 RV, 2 MY, 3 LV.
* M&Ms: ``NNN/NNN_SA_ED.nii.gz`` + ``_gt`` and the same for ES. Labels 1 LV, 2 MY, 3 RV.

Volumes are (x, y, slice); each slice becomes a (rows = y, columns = x) image.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data.dataset import RawStack, check_voxels, order_base_to_apex
from harness.errors import DataError, UsageError

ACDC_FRAME = re.compile(r"^(?P<subject>.+)_frame(?P<frame>\d+)\.nii(\.gz)?$")
MNMS_PHASE = re.compile(r"^(?P<subject>.+)_SA_(?P<phase>ED|ES)\.nii(\.gz)?$")


@dataclass(frozen=True)
class LabelMap:
    """Which label value of a dataset means LV blood pool, LV myocardium and (optionally) RV."""

    lv: int
    my: int
    rv: int | None = None

    @classmethod
    def parse(cls, text: str) -> LabelMap:
        values: dict[str, int] = {}
        for part in text.split(","):
            key, _, value = part.partition("=")
            if key.strip() not in ("lv", "my", "rv") or not value.strip().isdigit():
                raise UsageError(f"--labels '{text}' must look like lv=3,my=2[,rv=1] (whole numbers)")
            values[key.strip()] = int(value)
        if "lv" not in values or "my" not in values:
            raise UsageError(f"--labels '{text}' must give both lv= and my=")
        if len(set(values.values())) != len(values):
            raise UsageError(f"--labels '{text}' maps two classes to the same value")
        return cls(**values)

    def apply(self, labels: np.ndarray, where: str) -> np.ndarray:
        """Dataset values -> harness values (1 LV, 2 MY, 3 RV); other non-zero values are an error."""
        known = {0, self.lv, self.my} | ({self.rv} if self.rv is not None else set())
        unknown = sorted(set(np.unique(labels).astype(int).tolist()) - known)
        if unknown:
            raise DataError(f"{where}: label values {unknown} are not in the mapping "
                            f"lv={self.lv},my={self.my}" + (f",rv={self.rv}" if self.rv is not None else "")
                            + "; give the right one with --labels")
        out = np.zeros(labels.shape, np.uint8)
        out[labels == self.lv] = 1
        out[labels == self.my] = 2
        if self.rv is not None:
            out[labels == self.rv] = 3
        return out


ACDC_LABELS = LabelMap(lv=3, my=2, rv=1)
MNMS_LABELS = LabelMap(lv=1, my=2, rv=3)


def read_volume(path: Path, ndims: tuple[int, ...], what: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """A NIfTI file's array (as stored: x, y, ...) and voxel sizes. Its dimensions must be one of ``ndims``
    (trailing dimensions of length 1 do not count), and its header may not claim more than MAX_VOXELS: both
    are checked before the data are read."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
        shape = tuple(int(d) for d in image.shape)
    except Exception as exc:  # nibabel raises many types for a broken file
        raise DataError(f"{path}: not a readable NIfTI file ({exc.__class__.__name__}: {exc}); "
                        "replace or remove it") from None
    kept = shape
    while len(kept) > min(ndims) and len(kept) not in ndims and kept[-1] == 1:
        kept = kept[:-1]
    if len(kept) not in ndims:
        raise DataError(f"{path}: expected a {what}, got shape {shape}")
    check_voxels(path, shape)
    try:
        data = np.asarray(image.dataobj).reshape(kept)
    except Exception as exc:
        raise DataError(f"{path}: not a readable NIfTI file ({exc.__class__.__name__}: {exc}); "
                        "replace or remove it") from None
    return data, tuple(float(z) for z in image.header.get_zooms())


def _read(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    data, zooms = read_volume(path, (3,), "3D volume (x, y, slices)")
    return np.moveaxis(data, 2, 0).transpose(0, 2, 1), zooms


def _pair(image_path: Path, label_path: Path, labels: LabelMap) -> tuple[np.ndarray, np.ndarray, float, float]:
    if not label_path.exists():
        raise DataError(f"{image_path}: no label file {label_path.name} beside it")
    image, zooms = _read(image_path)
    label, _ = _read(label_path)
    if image.shape != label.shape:
        raise DataError(f"{label_path}: mask is {label.shape} but image is {image.shape} (slices, rows, columns)")
    if abs(zooms[0] - zooms[1]) > 1e-3 * zooms[0]:
        raise DataError(f"{image_path}: pixels are {zooms[0]:.3f} x {zooms[1]:.3f} mm; non-square pixels are "
                        "not supported yet, resample first")
    return (image.astype(np.float32), labels.apply(np.rint(label).astype(int), str(label_path)), zooms[0],
            zooms[2])


def read_info_cfg(path: Path) -> dict[str, str]:
    entries = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            entries[key.strip()] = value.strip()
    return entries


def _usable_pairs(pairs: list[tuple[int, Path]], labels: LabelMap, problems: list[str] | None) -> list[tuple]:
    """Read each (frame, image) with its label file; under --skip-bad a broken pair is left out and listed."""
    read = []
    for frame, path in pairs:
        try:
            read.append((frame, *_pair(path, path.with_name(path.name.replace(".nii", "_gt.nii")), labels)))
        except DataError as exc:
            if problems is None:
                raise
            problems.append(f"{exc} (frame left out)")
    if not read:
        raise DataError(f"{pairs[0][1].parent}: no usable labelled frame")
    return read


def load_acdc_subject(folder: Path, labels: LabelMap = ACDC_LABELS, problems: list[str] | None = None,
                      subject: str | None = None) -> RawStack:
    """One ACDC patient (id ``subject``, default the folder's name): its labelled frames (ED and ES), phase
    hints from Info.cfg (1-based there)."""
    info = read_info_cfg(folder / "Info.cfg") if (folder / "Info.cfg").exists() else {}
    frames = []
    for path in sorted(folder.glob("*_frame[0-9]*.nii*")):
        match = ACDC_FRAME.match(path.name)
        if match and not path.name.endswith(("_gt.nii.gz", "_gt.nii")):
            frames.append((int(match["frame"]) - 1, path))
    if not frames:
        raise DataError(f"{folder}: no <subject>_frameXX.nii.gz images found")
    read = _usable_pairs(frames, labels, problems)
    kept = tuple(r[0] for r in read)
    stacks = [r[1:] for r in read]
    spacing = {round(s[2], 4) for s in stacks}
    if len(spacing) > 1 or len({s[0].shape for s in stacks}) > 1:
        raise DataError(f"{folder}: its frames differ in shape or pixel spacing; one stack per subject expected")
    images = np.stack([s[0] for s in stacks], axis=1)
    masks = np.stack([s[1] for s in stacks], axis=1)
    images, masks, _ = order_base_to_apex(images, masks)
    hint = None
    if "ED" in info and "ES" in info:
        hint = {"ED": _cfg_int(folder, info, "ED") - 1, "ES": _cfg_int(folder, info, "ES") - 1}
    n_frames = _cfg_int(folder, info, "NbFrame") if "NbFrame" in info else max(f for f, _ in frames) + 1
    return RawStack(subject or folder.name, images, masks, stacks[0][2], kept, n_frames, hint,
                    slice_thickness_mm=stacks[0][3],
                    slice_spacing_mm=stacks[0][3])


def _cfg_int(folder: Path, info: dict[str, str], key: str) -> int:
    try:
        return int(float(info[key]))
    except ValueError:
        raise DataError(f"{folder / 'Info.cfg'}: {key} is {info[key]!r}, not a frame number; fix or remove the "
                        "line") from None


def load_mnms_subject(folder: Path, labels: LabelMap = MNMS_LABELS, problems: list[str] | None = None,
                      subject: str | None = None) -> RawStack:
    """One M&Ms subject: ED and ES volumes; the file names say which is which (frames 0 and 1 here)."""
    found = {}
    for path in folder.glob("*_SA_E[DS].nii*"):
        match = MNMS_PHASE.match(path.name)
        if match:
            found[match["phase"]] = path
    if set(found) != {"ED", "ES"}:
        raise DataError(f"{folder}: expected <id>_SA_ED.nii.gz and <id>_SA_ES.nii.gz, found {sorted(found)}")
    read = _usable_pairs([(0, found["ED"]), (1, found["ES"])], labels, problems)
    stacks = [r[1:] for r in read]
    if len({s[0].shape for s in stacks}) > 1:
        raise DataError(f"{folder}: ED is {stacks[0][0].shape} but ES is {stacks[1][0].shape}")
    images = np.stack([s[0] for s in stacks], axis=1)
    masks = np.stack([s[1] for s in stacks], axis=1)
    images, masks, _ = order_base_to_apex(images, masks)
    kept = tuple(r[0] for r in read)
    hint = {"ED": 0, "ES": 1} if kept == (0, 1) else None
    return RawStack(subject or folder.name, images, masks, stacks[0][2], kept, 2, hint, slice_thickness_mm=stacks[0][3],
                    slice_spacing_mm=stacks[0][3])


def frame_interval_ms(path: Path) -> float | None:
    """Milliseconds between the frames of a 4D cine, where its header says so (time units sec, msec or usec and
    a plausible 5-200 ms step); None where it does not (many writers leave the time axis unset)."""
    import nibabel as nib

    header = nib.load(str(path)).header
    unit = header.get_xyzt_units()[1]
    zooms = header.get_zooms()
    if unit not in ("sec", "msec", "usec") or len(zooms) < 4:
        return None
    step = float(zooms[3]) * {"sec": 1000.0, "msec": 1.0, "usec": 0.001}[unit]
    return step if 5 <= step <= 200 else None


def _read4d(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """A 4D NIfTI (x, y, slices, frames) as (slices, frames, rows, columns)."""
    data, zooms = read_volume(path, (4,), "4D cine (x, y, slices, frames)")
    return data.transpose(2, 3, 1, 0), zooms


def load_4d_subject(folder: Path, labels: LabelMap, subject: str | None = None) -> RawStack:
    """A 4D cine ``<id>_4d.nii.gz`` with a 4D label map ``<id>_4d_gt.nii.gz`` (every frame labelled)
    or 3D label maps of some frames ``<id>_frameXX_gt.nii.gz`` (XX 1-based, as ACDC)."""
    cines = sorted(p for p in folder.glob("*_4d.nii*"))
    if len(cines) != 1:
        raise DataError(f"{folder}: expected one <id>_4d.nii.gz cine, found {len(cines)}")
    images, zooms = _read4d(cines[0])
    gt4d = cines[0].with_name(cines[0].name.replace("_4d.nii", "_4d_gt.nii"))
    if gt4d.exists():
        label_grid, _ = _read4d(gt4d)
        frames = list(range(images.shape[1]))
        sources = [str(gt4d)] * len(frames)
    else:
        maps = sorted((int(m["frame"]) - 1, p) for p in folder.glob("*_frame[0-9]*_gt.nii*")
                      if (m := re.match(r"^.+_frame(?P<frame>\d+)_gt\.nii(\.gz)?$", p.name)))
        if not maps:
            raise DataError(f"{folder}: no label map beside {cines[0].name} (<id>_4d_gt.nii.gz or <id>_frameXX_gt.nii.gz)")
        frames = [f for f, _ in maps]
        bad = [p for f, p in maps if not 0 <= f < images.shape[1]]
        if bad:
            raise DataError(f"{bad[0]}: frame beyond the {images.shape[1]} frames of {cines[0].name}")
        read = [_read(p)[0] for _, p in maps]
        for (_, path), volume in zip(maps, read):
            if volume.shape != read[0].shape:
                raise DataError(f"{path}: label map is {volume.shape} but {maps[0][1].name} is {read[0].shape} "
                                "(slices, rows, columns)")
        label_grid = np.stack(read, axis=1)
        sources = [str(p) for _, p in maps]
    selected = images[:, frames]
    if label_grid.shape != selected.shape:
        raise DataError(f"{sources[0]}: mask is {label_grid.shape} but the cine's labelled frames are {selected.shape}")
    masks = np.stack([labels.apply(np.rint(label_grid[:, j]).astype(int), sources[j]) for j in range(len(frames))], axis=1)
    if abs(zooms[0] - zooms[1]) > 1e-3 * zooms[0]:
        raise DataError(f"{cines[0]}: non-square pixels are not supported yet; resample first")
    n_frames = images.shape[1]
    images, masks, _ = order_base_to_apex(selected.astype(np.float32), masks)
    step = frame_interval_ms(cines[0])
    shape = images.shape[:2]
    timing = ({} if step is None else  # frames evenly over the cycle from the trigger, as retrospective gating
              {"trigger_ms": np.tile(np.asarray(frames, float) * step, (shape[0], 1)),
               "rr_ms": np.full(shape, step * n_frames)})
    return RawStack(subject or folder.name, images, masks, zooms[0], tuple(frames), n_frames, slice_thickness_mm=zooms[2],
                    slice_spacing_mm=zooms[2], **timing)
