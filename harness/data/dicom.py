"""DICOM cine series (pydicom) with Sunnybrook-style contour files.

Images are grouped by geometry, never by file name: slice = position along the slice normal
(ImagePositionPatient . (row x column direction)), frame = order of TriggerTime within the slice.
No patient field is ever read into anything the harness keeps: subject ids are folder names, or a
salted hash of them when a folder name equals a patient field of its files.
"""
from __future__ import annotations

import functools
import hashlib
import re
import secrets
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data.dataset import RawStack, check_voxels, order_base_to_apex
from harness.data.nifti import LabelMap
from harness.errors import DataError

# DICOM PS3.15 basic profile attributes that identify the patient (those a cine header commonly holds)
PATIENT_FIELDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex", "PatientAge",
                  "PatientAddress", "OtherPatientIDs", "OtherPatientNames", "PatientMotherBirthName",
                  "PatientTelephoneNumbers", "AccessionNumber", "InstitutionName", "InstitutionAddress",
                  "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "StudyID",
                  "StudyDate", "StudyTime", "SeriesDate", "AcquisitionDate", "ContentDate", "DeviceSerialNumber",
                  "StationName", "PatientWeight", "PatientSize")
UNKNOWN = 255  # label value for pixels whose class was not contoured (e.g. myocardium without epicardium)
CONTOUR = re.compile(r"^IM-\d+-(?P<number>\d+)-(?P<kind>[io])contour-manual\.txt$")


@dataclass(frozen=True)
class SeriesGrid:
    """A cine series sorted into (slice, frame) by geometry and trigger time."""

    files: np.ndarray  # (slices, frames) of DicomImage, slice order along the normal
    spacing_mm: float
    slice_thickness_mm: float | None
    field_strength_t: float | None
    patient_values: frozenset[str]  # only to keep them out of ids; never stored
    slice_spacing_mm: float | None = None  # median distance between slice positions along the normal

    def trigger_ms(self, slices: Iterable[int], frames: Iterable[int]) -> np.ndarray | None:
        """Trigger time (ms after the R wave) of the cells (slice, frame), in the order given; NaN where a file
        has none; None where no file has one."""
        times = self._cells("trigger_ms", slices, frames)
        return None if np.isnan(times).all() else times

    def rr_ms(self, slices: Iterable[int], frames: Iterable[int]) -> np.ndarray | None:
        """The cardiac cycle (RR interval, ms) of each cell: its file's NominalInterval (RRIntervalTimeNominal
        in enhanced files); where a slice has none, its frames' spacing times the frames of the cine (retrospective
        gating spreads them over one cycle). Each slice is its own breath-hold, so cycles differ by slice.
        None where no cell has either."""
        slices, frames = list(slices), list(frames)
        every = range(self.files.shape[1])
        nominal = self._cells("rr_ms", slices, every)
        steps = np.diff(self._cells("trigger_ms", slices, every), axis=1)
        with warnings.catch_warnings():  # a slice without any value gets NaN, which the result says
            warnings.simplefilter("ignore", RuntimeWarning)
            spacing = np.nanmedian(np.where(steps > 0, steps, np.nan), axis=1) * self.files.shape[1]
            per_slice = np.nanmedian(nominal, axis=1)
        per_slice = np.where(np.isnan(per_slice), spacing, per_slice)
        return None if np.isnan(per_slice).all() else np.repeat(per_slice[:, None], len(frames), axis=1)

    def _cells(self, field: str, slices: Iterable[int], frames: Iterable[int]) -> np.ndarray:
        frames = list(frames)
        return np.array([[np.nan if getattr(self.files[s, f], field) is None else getattr(self.files[s, f], field)
                          for f in frames] for s in slices], dtype=float).reshape(-1, len(frames))


def _quiet_pydicom() -> None:
    """pydicom warns about header values that break the standard (e.g. UIDs); the data stay readable."""
    import pydicom

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


def _header(path: Path):
    import pydicom

    _quiet_pydicom()
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except PermissionError:
        raise DataError(f"{path}: permission denied; make it readable (chmod +r) or remove it") from None
    except Exception as exc:  # pydicom raises several types for non-DICOM or truncated files
        raise DataError(f"{path}: not a DICOM file or truncated ({exc.__class__.__name__}); "
                        "remove it or use --skip-bad") from None


@dataclass(frozen=True)
class DicomImage:
    """One 2D image: a classic single-image file, or frame ``frame`` of an enhanced multi-frame file."""

    path: Path
    frame: int | None
    orientation: tuple[float, ...]
    spacing: tuple[float, float]
    position: tuple[float, float, float]
    trigger: float  # sort key within the slice: the trigger time, else the instance / temporal position
    trigger_ms: float | None = None  # TriggerTime (NominalCardiacTriggerDelayTime) where the header has one
    rr_ms: float | None = None  # NominalInterval (RRIntervalTimeNominal) where the header has a plausible one

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def name(self) -> str:
        return self.path.name if self.frame is None else f"{self.path.name}[frame {self.frame + 1}]"

    def __str__(self) -> str:
        return str(self.path) if self.frame is None else f"{self.path} (frame {self.frame + 1})"


def _images_of(path: Path, h) -> list[DicomImage]:
    """The 2D images a file holds, with their geometry and trigger time."""
    try:
        n = int(h.get("NumberOfFrames", 1) or 1)
        check_voxels(path, (int(h.get("Rows", 0) or 0), int(h.get("Columns", 0) or 0), n))
        if n == 1:
            trigger_ms = _number(h.get("TriggerTime"))
            return [DicomImage(path, None, tuple(map(float, h.ImageOrientationPatient)),
                               tuple(map(float, h.PixelSpacing)), tuple(map(float, h.ImagePositionPatient)),
                               trigger_ms if trigger_ms is not None else float(h.get("InstanceNumber", 0) or 0),
                               trigger_ms, _cycle(h.get("NominalInterval")))]
        shared = h.SharedFunctionalGroupsSequence[0]
        images = []
        for index, group in enumerate(h.PerFrameFunctionalGroupsSequence):
            def item(name: str, group=group):
                return (group.get(name) or shared.get(name))[0]
            timing = group.get("CardiacSynchronizationSequence") or shared.get("CardiacSynchronizationSequence")
            trigger_ms = _number(timing[0].get("NominalCardiacTriggerDelayTime")) if timing else None
            rr_ms = _cycle(timing[0].get("RRIntervalTimeNominal")) if timing else None
            trigger = trigger_ms if trigger_ms is not None else float(
                item("FrameContentSequence").get("TemporalPositionIndex", index))
            images.append(DicomImage(path, index, tuple(map(float, item("PlaneOrientationSequence").ImageOrientationPatient)),
                                     tuple(map(float, item("PixelMeasuresSequence").PixelSpacing)),
                                     tuple(map(float, item("PlanePositionSequence").ImagePositionPatient)), trigger,
                                     trigger_ms, rr_ms if rr_ms is not None else _cycle(h.get("NominalInterval"))))
        return images
    except (AttributeError, TypeError, IndexError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: lacks the geometry of a cine image (position, orientation, pixel spacing: "
                        f"{exc.__class__.__name__}); is it a localiser or a report?") from None


def read_series(folder: Path, problems: list[str] | None = None) -> SeriesGrid:
    """The folder's cine series. With ``problems`` (--skip-bad), files that cannot be read and images
    whose orientation or spacing differ from the stack's (a localiser, say) are left out and listed there;
    without it, each is an error."""
    def trouble(error: DataError) -> None:
        if problems is None:
            raise error
        problems.append(f"{error} (file left out)")

    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".dcm", ""))
    headers, images = [], []
    for path in files:
        try:
            header = _header(path)
            images += _images_of(path, header)
            headers.append((path, header))
        except DataError as exc:
            trouble(exc)
    if not images:
        raise DataError(f"{folder}: no readable DICOM images")
    series = {str(h.get("SeriesInstanceUID", "")) for _, h in headers}
    if len(series) > 1:
        raise DataError(f"{folder}: {len(series)} series are mixed in one folder; put each series in its own folder")
    # the stack's geometry is what most images have, so one odd image is the one named
    orientation = np.asarray(max({i.orientation for i in images}, key=[i.orientation for i in images].count))
    spacing = np.asarray(max({i.spacing for i in images}, key=[i.spacing for i in images].count))
    reference = next(i for i in images if np.allclose(i.orientation, orientation) and np.allclose(i.spacing, spacing))
    normal = np.cross(orientation[:3], orientation[3:])
    by_slice: dict[float, list[DicomImage]] = {}
    for image in images:
        if not np.allclose(image.orientation, orientation, atol=1e-3):
            trouble(DataError(f"{image}: its orientation differs from {reference.name} in the same stack; "
                              "one short-axis stack per folder"))
            continue
        if not np.allclose(image.spacing, spacing, rtol=1e-3):
            other = ", ".join(f"{v:g}" for v in image.spacing)
            trouble(DataError(f"{image}: pixel spacing [{other}] mm differs from "
                              f"[{spacing[0]:g}, {spacing[1]:g}] mm in the same stack; one stack per folder"))
            continue
        position = round(float(np.dot(image.position, normal)), 2)
        by_slice.setdefault(position, []).append(image)
    counts = {pos: len(v) for pos, v in by_slice.items()}
    if len(set(counts.values())) > 1:
        most = max(set(counts.values()), key=list(counts.values()).count)
        odd = next(pos for pos, c in counts.items() if c != most)
        raise DataError(f"{folder}: the slice at {odd} mm has {counts[odd]} frames, the others {most}: "
                        "missing frames or duplicate positions")
    grid = []
    for position in sorted(by_slice):
        frames = sorted(by_slice[position], key=lambda image: image.trigger)
        triggers = [image.trigger for image in frames]
        if len(set(triggers)) != len(triggers):
            raise DataError(f"{frames[0]}: two images share position {position} mm and trigger time; "
                            "duplicate images in the series")
        grid.append(frames)
    first = headers[0][1]
    thickness = _number(first.get("SliceThickness"))
    positions = sorted(by_slice)
    if thickness is None and len(positions) > 1:
        thickness = float(np.median(np.diff(positions)))  # enhanced files keep it in functional groups
    patient = frozenset(str(first.get(k, "")) for k in PATIENT_FIELDS if str(first.get(k, "")).strip())
    field = _number(first.get("MagneticFieldStrength"))
    if abs(spacing[0] - spacing[1]) > 1e-3 * spacing[0]:
        raise DataError(f"{reference}: non-square pixels [{spacing[0]:g}, {spacing[1]:g}] mm are not supported yet; "
                        "resample first")
    files_grid = np.empty((len(grid), len(grid[0])), dtype=object)
    for s, row in enumerate(grid):
        for f, image in enumerate(row):
            files_grid[s, f] = image
    gap = float(np.median(np.diff(positions))) if len(positions) > 1 else None
    return SeriesGrid(files_grid, float(spacing[0]), thickness, field, patient, gap)


def _cycle(value) -> float | None:
    """An RR interval from a header: a number of 200-3000 ms (20-300 beats a minute), else None."""
    number = _number(value)
    return number if number is not None and 200 <= number <= 3000 else None


def _number(value) -> float | None:
    """An optional header number (slice thickness, field strength); None where absent or not a number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


@functools.lru_cache(maxsize=2)
def _all_pixels(path: Path) -> np.ndarray:
    import pydicom

    try:
        return pydicom.dcmread(str(path)).pixel_array
    except Exception as exc:
        raise DataError(f"{path}: pixel data cannot be read ({exc.__class__.__name__}); remove it or use --skip-bad") from None


def pixels(image: DicomImage) -> np.ndarray:
    """The image's pixels as float32 (a multi-frame file is decoded once for all its frames)."""
    data = _all_pixels(image.path)
    pixels = data if image.frame is None else data[image.frame]
    if pixels.ndim != 2:
        raise DataError(f"{image}: pixel data of shape {pixels.shape}, not one greyscale image (colour or a "
                        "stack in one frame); export the cine as greyscale")
    return pixels.astype(np.float32)


def fill(grid: SeriesGrid, slices: Iterable[int], frames: Iterable[int],
         label_of: Callable[[int, int, tuple[int, int]], tuple[np.ndarray, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of the cells (slice, frame) of a series, in the order given: the one loop that reads
    the pixels of every DICOM layout, with every check in it. ``label_of(slice, frame, image shape)`` gives a
    cell's label image (harness values) and where it came from; a label or image whose size differs from the
    series' is an error naming its file."""
    slices, frames = list(slices), list(frames)
    images = labels = None
    try:
        for i, s in enumerate(slices):
            for j, f in enumerate(frames):
                file = grid.files[s, f]
                image = pixels(file)
                if images is None:
                    images = np.zeros((len(slices), len(frames)) + image.shape, np.float32)
                    labels = np.zeros(images.shape, np.uint8)
                elif image.shape != images.shape[2:]:
                    raise DataError(f"{file}: image is {_size(image.shape)} but the series' images are "
                                    f"{_size(images.shape[2:])}; one image size per series")
                label, where = label_of(s, f, image.shape)
                if label.shape != image.shape:
                    raise DataError(f"{where}: mask is {_size(label.shape)} but image {file.name} is "
                                    f"{_size(image.shape)}")
                images[i, j], labels[i, j] = image, label
    finally:
        _all_pixels.cache_clear()
    if images is None:
        raise DataError(f"{grid.files[0, 0].path.parent}: no labelled image to read")
    return images, labels


def _size(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def read_contour(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Inside of a Sunnybrook contour file (x y pixel coordinates, one point a line) as a boolean mask."""
    try:
        points = np.loadtxt(path, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{path}: not a list of 'x y' points ({exc})") from None
    return polygon_mask(points, shape, str(path))


def polygon_mask(points: np.ndarray, shape: tuple[int, int], where: str) -> np.ndarray:
    """Pixels whose centres lie inside a closed polygon of (x = column, y = row) points."""
    from matplotlib.path import Path as Polygon

    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
        raise DataError(f"{where}: a contour needs at least 3 'x y' points, got shape {points.shape}")
    rows, cols = shape
    outside = (points[:, 0] < -0.5) | (points[:, 0] > cols - 0.5) | (points[:, 1] < -0.5) | (points[:, 1] > rows - 0.5)
    if outside.any():
        x, y = points[outside][0]
        raise DataError(f"{where}: point ({x:g}, {y:g}) lies outside the {cols}x{rows} image; wrong image or scaling")
    yy, xx = np.mgrid[0:rows, 0:cols]
    inside = Polygon(points).contains_points(np.column_stack([xx.ravel(), yy.ravel()]))
    return inside.reshape(shape)


CON_TYPES = {0: "i", 1: "o"}  # QMass contour types: 0 endocardium, 1 epicardium (others are not used)


def read_con(path: Path) -> dict[tuple[int, int], dict[str, np.ndarray]]:
    """Contours of a Medis QMass ``.con`` export: {(slice, frame): {"i" | "o": (k, 2) x y points}}.

    Each block starts with a line ``XYCONTOUR`` (or ``[XYCONTOUR]``), then a line ``slice frame type ...``, a line with
    the point count, and that many ``x y`` lines.
    """
    lines = path.read_text(errors="replace").splitlines()
    contours: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    i = 0
    while i < len(lines):
        if lines[i].strip().strip("[]") != "XYCONTOUR":
            i += 1
            continue
        try:
            slice_, frame, kind = (int(float(v)) for v in lines[i + 1].split()[:3])
            count = int(lines[i + 2].split()[0])
            points = np.array([[float(v) for v in lines[i + 3 + k].split()[:2]] for k in range(count)])
        except (IndexError, ValueError):
            raise DataError(f"{path}: line {i + 1}: an XYCONTOUR block must be followed by 'slice frame type', "
                            "a point count and that many 'x y' lines") from None
        if kind in CON_TYPES:
            contours.setdefault((slice_, frame), {})[CON_TYPES[kind]] = points
        i += 3 + count
    if not contours:
        raise DataError(f"{path}: no XYCONTOUR block with an endocardial (0) or epicardial (1) contour")
    return contours


def subject_id(folder_name: str, patient_values: frozenset[str], salt: str) -> str:
    """The folder name (or the folder's relative path, where names clash), unless it holds a patient field's
    value: then a salted hash of it."""
    if any(v and (v in folder_name or folder_name in v) for v in patient_values):
        return hashed_id(folder_name, salt)
    return folder_name


def hashed_id(folder_name: str, salt: str) -> str:
    return "sub-" + hashlib.sha256((salt + folder_name).encode()).hexdigest()[:10]


def local_salt(cache_dir: Path | None) -> str:
    """A random salt kept beside the cache (never in a study), so hashed ids are stable on this machine.
    Without a cache folder (library use, tests) the salt is fixed and the ids only pseudonymous."""
    if cache_dir is None:
        return "cine-harness"
    path = cache_dir / "id-salt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(16))
    return path.read_text().strip()


def load_sunnybrook_subject(dicom_folder: Path, contour_folder: Path, salt: str,
                            problems: list[str] | None = None, name: str | None = None) -> RawStack:
    """One Sunnybrook subject; contour file IM-0001-NNNN belongs to DICOM file NNNN (as ``N.dcm``)."""
    grid = read_series(dicom_folder, problems)
    where = {int(p.stem): (s, f) for (s, f), p in np.ndenumerate(grid.files) if p.stem.isdigit()}
    contours: dict[tuple[int, int], dict[str, np.ndarray | Path]] = {}
    for path in sorted(contour_folder.rglob("*contour-manual.txt")):
        match = CONTOUR.match(path.name)
        if not match:
            continue
        number = int(match["number"])
        if number not in where:
            raise DataError(f"{path}: no DICOM file {number}.dcm in the series for this contour")
        contours.setdefault(where[number], {})[match["kind"]] = path
    return stack_from_contours(grid, contours, subject_id(name or dicom_folder.name, grid.patient_values, salt),
                               contour_folder)


def stack_from_contours(grid: SeriesGrid, contours: dict[tuple[int, int], dict[str, np.ndarray | Path]],
                        subject: str, where: Path) -> RawStack:
    """Labelled stack from endocardial ("i") and epicardial ("o") contours per (slice, frame).

    Frames with an endocardial contour are labelled; only slices contoured in every labelled frame are
    kept. Myocardium = inside o minus inside i; where a labelled image has no o-contour (ES in
    Sunnybrook), its non-LV pixels are UNKNOWN, not background.
    """
    labelled_frames = sorted({f for (s, f), kinds in contours.items() if "i" in kinds})
    slices = [s for s in range(grid.files.shape[0]) if all("i" in contours.get((s, f), {}) for f in labelled_frames)]
    if not labelled_frames or not slices:
        raise DataError(f"{where}: no slice has an endocardial contour in every labelled frame")
    outside = [k for k in contours if not (0 <= k[0] < grid.files.shape[0] and 0 <= k[1] < grid.files.shape[1])]
    if outside:
        raise DataError(f"{where}: contour for slice {outside[0][0]}, frame {outside[0][1]} but the series has "
                        f"{grid.files.shape[0]} slices x {grid.files.shape[1]} frames")
    def label_of(s: int, f: int, shape: tuple[int, int]) -> tuple[np.ndarray, str]:
        kinds = contours[(s, f)]
        label = np.full(shape, UNKNOWN, np.uint8)  # no epicardium: non-LV pixels are not known
        if "o" in kinds:
            label[:] = 0
            label[_mask(kinds["o"], shape, where)] = 2
        label[_mask(kinds["i"], shape, where)] = 1
        return label, str(kinds["i"] if isinstance(kinds["i"], Path) else where)

    images, labels = fill(grid, slices, labelled_frames, label_of)
    images, labels, flipped = order_base_to_apex(images, labels)
    return RawStack(subject, images, labels, grid.spacing_mm, tuple(labelled_frames), grid.files.shape[1],
                    None, grid.field_strength_t, grid.slice_thickness_mm,
                    grid.slice_spacing_mm, *_timing(grid, slices, labelled_frames, flipped))


def _timing(grid: SeriesGrid, slices: Iterable[int], frames: Iterable[int],
            flipped: bool) -> tuple[np.ndarray | None, float | None]:
    """RawStack's trigger_ms and rr_ms for the cells read, in the stack's base -> apex order."""
    slices, frames = list(slices), list(frames)
    times, cycles = grid.trigger_ms(slices, frames), grid.rr_ms(slices, frames)
    return tuple(None if a is None else (a[::-1] if flipped else a) for a in (times, cycles))


def _mask(contour: np.ndarray | Path, shape: tuple[int, int], where: Path) -> np.ndarray:
    return read_contour(contour, shape) if isinstance(contour, Path) else polygon_mask(contour, shape, str(where))


def load_con_subject(folder: Path, salt: str, problems: list[str] | None = None, name: str | None = None) -> RawStack:
    """A DICOM series with its QMass ``.con`` export in the same folder (slices in stack order)."""
    cons = sorted(folder.glob("*.con"))
    if len(cons) != 1:
        raise DataError(f"{folder}: expected one .con contour export beside the DICOM files, found {len(cons)}")
    grid = read_series(folder, problems)
    return stack_from_contours(grid, read_con(cons[0]), subject_id(name or folder.name, grid.patient_values, salt),
                               cons[0])


LABEL_MAP_NAME = "labels.nii.gz"


def load_label_map_subject(folder: Path, labels: LabelMap, salt: str, problems: list[str] | None = None,
                           name: str | None = None) -> RawStack:
    """A DICOM series with a 4D NIfTI label map ``labels.nii.gz`` (columns, rows, slices, frames) beside it,
    slices and frames in the series' geometric and trigger-time order; every frame labelled."""
    from harness.data.nifti import read_volume

    grid = read_series(folder, problems)
    path = folder / LABEL_MAP_NAME
    volume = read_volume(path, (3, 4), "label map (columns, rows, slices[, frames])")[0]
    if volume.ndim == 3:
        volume = volume[..., None]
    label_grid = np.rint(volume).astype(int).transpose(2, 3, 1, 0)  # -> (slices, frames, rows, columns)
    if label_grid.shape[:2] != grid.files.shape:
        raise DataError(f"{path}: label map has {label_grid.shape[0]} slices x {label_grid.shape[1]} frames but the "
                        f"series has {grid.files.shape[0]} x {grid.files.shape[1]}")
    images, masks = fill(grid, range(grid.files.shape[0]), range(grid.files.shape[1]),
                         lambda s, f, shape: (labels.apply(label_grid[s, f], str(path)), str(path)))
    images, masks, flipped = order_base_to_apex(images, masks)
    n_slices, n_frames = grid.files.shape
    return RawStack(subject_id(name or folder.name, grid.patient_values, salt), images, masks, grid.spacing_mm,
                    tuple(range(n_frames)), n_frames, None, grid.field_strength_t, grid.slice_thickness_mm,
                    grid.slice_spacing_mm, *_timing(grid, range(n_slices), range(n_frames), flipped))


def load_png_masked_subject(folder: Path, labels: LabelMap, salt: str, problems: list[str] | None = None,
                            name: str | None = None) -> RawStack:
    """A DICOM series with PNG masks beside its files (``<file stem>-mask.png``): the frames whose every
    slice has a mask are labelled."""
    from harness.data.png import read_png

    grid = read_series(folder, problems)
    masks_of = {(s, f): folder / f"{image.stem}-mask.png" for (s, f), image in np.ndenumerate(grid.files)
                if image.frame is None}
    frames = [f for f in range(grid.files.shape[1])
              if all(masks_of.get((s, f), Path("-")).exists() for s in range(grid.files.shape[0]))]
    if not frames:
        raise DataError(f"{folder}: no frame has a <file>-mask.png beside the DICOM file of every slice")
    def label_of(s: int, f: int, shape: tuple[int, int]) -> tuple[np.ndarray, str]:
        where = str(masks_of[(s, f)])
        return labels.apply(read_png(masks_of[(s, f)]).astype(int), where), where

    images, masks = fill(grid, range(grid.files.shape[0]), frames, label_of)
    images, masks, flipped = order_base_to_apex(images, masks)
    return RawStack(subject_id(name or folder.name, grid.patient_values, salt), images, masks, grid.spacing_mm,
                    tuple(frames), grid.files.shape[1], None, grid.field_strength_t, grid.slice_thickness_mm,
                    grid.slice_spacing_mm, *_timing(grid, range(grid.files.shape[0]), frames, flipped))
