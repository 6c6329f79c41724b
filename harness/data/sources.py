"""User data folders: detect the layout, load every subject, prepare once and cache on disk.

The cache key is the content of every source file used plus the preparation settings and the loaders'
code, so a changed file, setting or loader gives a new preparation and an unchanged one is read back.
"""
from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.data import dataset as ds
from harness.data import dicom, nifti, png
from harness.errors import DataError, UsageError

FORMATS = {
    "acdc": "ACDC NIfTI (patientNNN/patientNNN_frameXX.nii.gz + _gt, Info.cfg)",
    "mnms": "M&Ms NIfTI (NNN/NNN_SA_ED.nii.gz, _SA_ES + _gt)",
    "nifti-4d": "4D NIfTI cines (<id>/<id>_4d.nii.gz) with a 4D label map (_4d_gt) or 3D frame maps (_frameXX_gt)",
    "png": "PNG pairs <subject>_slice<SSS>_frame<FFF>-image.png / -mask.png",
    "dicom-nifti": "DICOM cine series with a 4D NIfTI label map (labels.nii.gz) per subject folder",
    "dicom-png": "DICOM cine series with a PNG mask <file stem>-mask.png beside each labelled image's file",
    "dicom-con": "DICOM cine series with a Medis QMass .con contour export per subject folder",
    "sunnybrook": "DICOM cine + Sunnybrook contours (dicoms/<id>/N.dcm, contourfiles/<id>/{i,o}-contours, link.csv)",
}
DEFAULT_LABELS = {"acdc": nifti.ACDC_LABELS, "mnms": nifti.MNMS_LABELS, "nifti-4d": nifti.MNMS_LABELS,
                  "sunnybrook": nifti.MNMS_LABELS, "dicom-con": nifti.MNMS_LABELS,  # contours: 1 LV, 2 MY
                  "png": nifti.LabelMap(lv=1, my=2), "dicom-nifti": nifti.MNMS_LABELS,
                  "dicom-png": nifti.LabelMap(lv=1, my=2)}
DICOM_FORMATS = ("sunnybrook", "dicom-con", "dicom-nifti", "dicom-png")
HINT_SOURCE = {"acdc": "Info.cfg", "mnms": "file name"}  # layouts whose metadata name ED/ES


def walk_files(root: Path) -> list[Path]:
    """Every file under ``root``, following symlinked folders (a data folder is often a set of links to
    subjects kept elsewhere); each real folder is visited once, so link cycles end."""
    seen: set[str] = set()
    out = []
    for folder, dirs, names in os.walk(root, followlinks=True, onerror=_raise):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        out += [Path(folder) / name for name in names if (Path(folder) / name).is_file()]
    return sorted(out)


def _raise(exc: OSError) -> None:
    raise exc


@dataclass(frozen=True)
class Located:
    """What was found in a data folder: the layout and one folder (or file group) per subject."""

    root: Path
    format: str
    subjects: tuple[Path, ...]

    @property
    def ids(self) -> tuple[str, ...]:
        """Each subject's id: its folder's name, or, where two subjects' folders share a name, the folder's
        path relative to the data folder (siteA/patient001 and siteB/patient001): ids are unique, the same
        rule in every layout (PNG subjects are named by file prefix, and by folder/prefix where they clash)."""
        names = [p.name for p in self.subjects]
        return tuple(p.name if names.count(p.name) == 1 else p.relative_to(self.root).as_posix()
                     for p in self.subjects)

    def files(self) -> list[Path]:
        if self.format == "png":
            return [p for p in walk_files(self.root) if p.suffix == ".png"]
        folders = list(self.subjects)
        if self.format == "sunnybrook":
            folders += [self.root / "contourfiles"]
        extra = [self.root / "link.csv"] if self.format == "sunnybrook" else []
        return sorted(extra + [p for folder in folders for p in walk_files(folder)])


def locate(root: Path, fmt: str | None = None) -> Located:
    """Find the subjects under ``root``; the layout is detected unless ``fmt`` names it."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; --data needs a folder of subjects")
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"--format '{fmt}' is not known; choose one of {', '.join(FORMATS)}")
    try:
        files = walk_files(root)  # one walk of the tree for every layout
    except PermissionError as exc:
        raise DataError(f"{exc.filename}: permission denied; make it readable (chmod +r) or remove it") from None
    def folders(pattern: str) -> list[Path]:
        return sorted({p.parent for p in files if fnmatch.fnmatch(p.name, pattern)})

    dicom_files = {p for p in files if p.suffix.lower() == ".dcm"}
    sunnybrook = (root / "link.csv").exists() and (root / "contourfiles").is_dir()
    found = {
        "acdc": folders("*_frame[0-9]*_gt.nii*"),
        "mnms": folders("*_SA_ED_gt.nii*"),
        "nifti-4d": folders("*_4d.nii*"),
        "dicom-con": folders("*.con"),
        "dicom-nifti": folders(dicom.LABEL_MAP_NAME),
        "dicom-png": sorted({p.parent for p in files if p.name.endswith("-mask.png")
                             and p.with_name(p.name.replace("-mask.png", ".dcm")) in dicom_files}),
        "png": [root / subject for subject in png.group(root)],  # one group of files per subject
        "sunnybrook": sorted({p.parent for p in dicom_files if p.parent.parent == root / "dicoms"}) if sunnybrook else [],
    }
    if fmt is None:
        # an ACDC folder may also hold the 4D cine: it is ACDC unless --format says otherwise
        claimed = set(found["acdc"]) | set(found["mnms"])
        present = [name for name, subjects in found.items()
                   if subjects and (name != "nifti-4d" or set(subjects) - claimed)]
        if not present:
            names = sorted(p.name for p in root.iterdir())[:5]
            what = f"it holds {', '.join(names)}{', ...' if len(names) == 5 else ''}" if names else "it is empty"
            raise DataError(f"{root}: no known cine layout found ({what}); known: "
                            + "; ".join(FORMATS.values()))
        if len(present) > 1:
            raise DataError(f"{root}: holds more than one layout ({', '.join(present)}); choose with --format")
        fmt = present[0]
    if not found[fmt]:
        raise DataError(f"{root}: no subjects in the {FORMATS[fmt]} layout")
    return Located(root, fmt, tuple(found[fmt]))


def _code_version() -> str:
    digest = hashlib.sha256()
    for module in (ds, nifti, dicom, png):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:8]


def content_key(located: Located, labels: nifti.LabelMap, size: int, skip_bad: bool = False) -> str:
    """Hash of every source file's bytes and relative path, the label map, size, loader code and
    whether broken subjects are skipped."""
    digest = hashlib.sha256(f"{located.format}|{labels}|{size}|{skip_bad}|{_code_version()}".encode())
    for path in located.files():
        digest.update(str(path.relative_to(located.root)).encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:12]


def _sunnybrook_links(root: Path) -> dict[str, str]:
    """link.csv: DICOM folder name -> contour folder name."""
    import csv

    with (root / "link.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    return {r[0].strip(): r[1].strip() for r in rows[1:] if len(r) >= 2}


def _read_stacks(located: Located, labels: nifti.LabelMap, salt: str, skip_bad: bool,
                 on_subject: Callable[[int, int], None] | None) -> tuple[list[ds.RawStack], tuple[str, ...]]:
    """One RawStack per subject, in the layout's own way. With ``skip_bad``, DICOM files that cannot be
    used are left out one by one, and a subject that still cannot be read is left out whole; every such
    problem is returned instead of raised."""
    # per-subject lists the file-level readers fill under --skip-bad (None: every problem is an error)
    file_problems: list[list[str] | None] = [[] if skip_bad else None for _ in located.subjects]
    ids = located.ids
    if located.format in DICOM_FORMATS:  # a parent folder may be a patient's name: never part of an id
        ids = tuple(i if "/" not in i else f"{folder.name}-{dicom.hashed_id(i, salt)[4:10]}"
                    for i, folder in zip(ids, located.subjects))
    if located.format == "png":
        groups = png.group(located.root)
        readers = [lambda s=s, p=p: png.load_png_subject(s, p, labels) for s, p in groups.items()]
    elif located.format == "sunnybrook":
        links = _sunnybrook_links(located.root)
        missing = [f.name for f in located.subjects if f.name not in links]
        if missing:
            raise DataError(f"{located.root / 'link.csv'}: no row for {len(missing)} DICOM folder(s); add them")
        readers = [lambda f=f, k=k: dicom.load_sunnybrook_subject(f, located.root / "contourfiles" / links[f.name],
                                                                   salt, file_problems[k], ids[k])
                   for k, f in enumerate(located.subjects)]
    elif located.format == "dicom-nifti":
        readers = [lambda f=f, k=k: dicom.load_label_map_subject(f, labels, salt, file_problems[k], ids[k])
                   for k, f in enumerate(located.subjects)]
    elif located.format == "dicom-png":
        readers = [lambda f=f, k=k: dicom.load_png_masked_subject(f, labels, salt, file_problems[k], ids[k])
                   for k, f in enumerate(located.subjects)]
    elif located.format == "dicom-con":
        readers = [lambda f=f, k=k: dicom.load_con_subject(f, salt, file_problems[k], ids[k])
                   for k, f in enumerate(located.subjects)]
    elif located.format == "nifti-4d":
        readers = [lambda f=f, k=k: nifti.load_4d_subject(f, labels, ids[k]) for k, f in enumerate(located.subjects)]
    else:
        loader = nifti.load_acdc_subject if located.format == "acdc" else nifti.load_mnms_subject
        readers = [lambda f=f, k=k: loader(f, labels, file_problems[k], ids[k]) for k, f in enumerate(located.subjects)]

    def private(message: str, number: int) -> str:
        if located.format not in DICOM_FORMATS:  # a DICOM folder name may be a patient field: never print it
            return message
        folder = located.subjects[number - 1]
        hidden = f"<subject {number}: {dicom.hashed_id(ids[number - 1], salt)}>"
        for name in (str(folder), folder.relative_to(located.root).as_posix(), ids[number - 1], folder.name):
            # as a path or quoted only: a folder named 'cine' leaves the word 'cine' alone
            message = re.sub(rf"(?<![^/'\"(]){re.escape(name)}(?![^/'\"):])", lambda _: hidden, message)
        return message

    stacks, problems = [], []
    for number, read in enumerate(readers, start=1):
        try:
            stacks.append(read())
        except DataError as exc:
            if not skip_bad:
                raise DataError(private(str(exc), number)) from None
            problems.append(f"subject {number} of {len(readers)} left out: {private(str(exc), number)}")
        except (ArithmeticError, AttributeError, IndexError, KeyError, OSError, TypeError, ValueError) as exc:
            # a malformed value no check names (a header field that is not a number, say): still one line, with
            # the cause chained for --debug
            message = private(f"{located.subjects[number - 1]}: cannot be read ({exc.__class__.__name__}: {exc}); "
                              "check its files, or use --skip-bad to leave it out (--debug shows where it "
                              "failed)", number)
            if not skip_bad:
                raise DataError(message) from exc
            problems.append(f"subject {number} of {len(readers)} left out: {message}")
        if number <= len(file_problems) and file_problems[number - 1]:
            problems += [private(p, number) for p in file_problems[number - 1]]
        if on_subject:
            on_subject(number, len(readers))
    if not stacks:
        raise DataError(f"{located.root}: every subject has a problem; the first: {problems[0]}")
    return stacks, tuple(problems)


def load_dataset(root: Path, fmt: str | None = None, labels: nifti.LabelMap | None = None, size: int = 128,
                 cache_dir: Path | None = None, on_subject: Callable[[int, int], None] | None = None,
                 skip_bad: bool = False) -> ds.CineDataset:
    """Every subject of a data folder at the training size; read back from the cache when unchanged.

    ``skip_bad`` leaves out subjects with broken files and lists why in ``dataset.problems``.
    """
    located = locate(root, fmt)
    labels = labels or DEFAULT_LABELS[located.format]
    key = content_key(located, labels, size, skip_bad)
    path = cache_dir / "prepared" / f"{located.format}-{key}" if cache_dir else None
    if path is not None and ds.is_cached(path):
        return ds.load(path)
    stacks, problems = _read_stacks(located, labels, dicom.local_salt(cache_dir), skip_bad, on_subject)
    dataset = ds.prepare(f"{located.format}:{located.root.name}", stacks, size, key,
                         HINT_SOURCE.get(located.format, "metadata"),
                         problems)
    if path is not None:
        dataset = ds.save(dataset, path)
    return dataset
