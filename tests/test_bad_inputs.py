"""Every broken input ends in one line naming the file, and --skip-bad leaves the broken subject (or frame) out.

Each case breaks one file of an otherwise good folder and runs `harness data inspect` on it twice: without
--skip-bad it must exit 2 with exactly one `error:` line and no traceback; with --skip-bad it must succeed
with the broken subject (or frame) left out and listed as a warning. The DICOM layouts are built from the
phantom's own DICOM export (no real data needed); the Sunnybrook and QMass layouts use ../shared/data.
"""
from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from harness.cli import main
from harness.data.dataset import MAX_VOXELS
from harness.data.dicom import read_series
from harness.data.export import write_phantom
from harness.data.sources import load_dataset
from harness.data.phantom import generate_subject
from tests.conftest import shared


def one_error(capsys, argv: list[str]) -> str:
    """Run the CLI; it must fail with exactly one 'error:' line and no traceback. Returns that line."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def skipped(capsys, folder: Path) -> tuple[str, str]:
    """`data inspect --skip-bad`: must succeed; returns (stdout, warnings)."""
    capsys.readouterr()
    assert main(["data", "inspect", str(folder), "--skip-bad"]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return out, err


@pytest.fixture(scope="module")
def phantom_dicom(tmp_path_factory) -> Path:
    """Two phantom subjects as DICOM series with a 4D NIfTI label map each (the dicom-nifti layout)."""
    out = tmp_path_factory.mktemp("phantom-dicom")
    write_phantom(out, "target", 2, 0)
    return out


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _second_subject(root: Path) -> Path:
    return sorted(p for p in root.iterdir() if p.is_dir())[1]


def _shrink(path: Path, by: int = 8) -> None:
    """Rewrite a DICOM file with its image cropped: a series with one image of another size."""
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array[:-by, :-by].copy()
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = pixels.tobytes()
    ds.save_as(path)


def _claim_huge(path: Path) -> None:
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 31623  # 10^9 pixels claimed; the pixel data stay small
    ds.save_as(path)


def _to_dicom_png(root: Path) -> None:
    """dicom-nifti -> dicom-png: each label image as <file stem>-mask.png beside its DICOM file."""
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        grid = read_series(folder)
        labels = np.asarray(nib.load(str(folder / "labels.nii.gz")).dataobj).transpose(2, 3, 1, 0)
        for (s, f), image in np.ndenumerate(grid.files):
            lv_my = np.where(labels[s, f] <= 2, labels[s, f], 0).astype(np.uint8)  # the layout's default: lv=1,my=2
            Image.fromarray(lv_my).save(folder / f"{image.stem}-mask.png")
        (folder / "labels.nii.gz").unlink()


def _middle_file(folder: Path) -> Path:
    grid = read_series(folder)
    return grid.files[grid.files.shape[0] // 2, grid.files.shape[1] // 2].path


@pytest.mark.parametrize("layout", ["dicom-nifti", "dicom-png"])
@pytest.mark.parametrize("damage", ["other size", "claims 10^9 voxels", "0 bytes"])
def test_a_broken_dicom_file_is_one_line_and_skip_bad_skips_it(layout, damage, phantom_dicom, tmp_path, capsys):
    root = _copy(phantom_dicom, tmp_path / "data")
    if layout == "dicom-png":
        _to_dicom_png(root)
    path = _middle_file(_second_subject(root))
    if damage == "other size":
        _shrink(path)
    elif damage == "claims 10^9 voxels":
        _claim_huge(path)
    else:
        path.write_bytes(b"")
    line = one_error(capsys, ["data", "inspect", str(root)])
    assert path.name in line
    expected = {"other size": "image is 184x184 but the series' images are 192x192",
                "claims 10^9 voxels": f"more than the {MAX_VOXELS:,} one cine file may hold",
                "0 bytes": "not a DICOM file or truncated"}[damage]
    assert expected in line, line
    out, err = skipped(capsys, root)
    assert "subject 2 of 2 left out" in err or "file left out" in err, err
    assert generate_subject(0, "target", 0).name in out


def test_a_dicom_label_map_of_another_image_size_is_one_line(phantom_dicom, tmp_path, capsys):
    root = _copy(phantom_dicom, tmp_path / "data")
    path = _second_subject(root) / "labels.nii.gz"
    image = nib.load(str(path))
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:-8, :-8], image.affine), str(path))
    line = one_error(capsys, ["data", "inspect", str(root)])
    assert "labels.nii.gz: mask is 184x184 but image" in line and "is 192x192" in line
    out, err = skipped(capsys, root)
    assert "subject 2 of 2 left out" in err


def test_a_dicom_label_map_with_a_value_outside_the_label_map_is_one_line(phantom_dicom, tmp_path, capsys):
    root = _copy(phantom_dicom, tmp_path / "data")
    path = _second_subject(root) / "labels.nii.gz"
    image = nib.load(str(path))
    labels = np.asarray(image.dataobj).copy()
    labels[0, 0, 0, 0] = 7
    nib.save(nib.Nifti1Image(labels, image.affine), str(path))
    line = one_error(capsys, ["data", "inspect", str(root)])
    assert "label values [7] are not in the mapping lv=1,my=2,rv=3; give the right one with --labels" in line


@pytest.fixture
def sunnybrook_copy(tmp_path) -> Path:
    return _copy(shared("sunnybrook"), tmp_path / "sunnybrook")


def _contoured_file(root: Path) -> Path:
    """A DICOM file of Sunnybrook subject SCD0000201 that has an endocardial contour (so it is read)."""
    contour = sorted((root / "contourfiles").rglob("*icontour-manual.txt"))[0]
    subject = contour.parts[len(root.parts) + 1]
    links = dict(line.split(",")[:2] for line in (root / "link.csv").read_text().splitlines()[1:])
    folder = next(k for k, v in links.items() if v.strip() == subject)
    return root / "dicoms" / folder.strip() / f"{int(contour.name.split('-')[2])}.dcm"


@pytest.mark.parametrize("layout", ["sunnybrook", "dicom-con"])
def test_a_contoured_dicom_image_of_another_size_is_one_line(layout, sunnybrook_copy, capsys):
    from tests.test_dicom import _con_from_sunnybrook

    root = sunnybrook_copy
    if layout == "dicom-con":
        links = dict(line.split(",")[:2] for line in (root / "link.csv").read_text().splitlines()[1:])
        for folder, contours in links.items():
            dicoms = root / "dicoms" / folder.strip()
            (dicoms / "export.con").write_text(_con_from_sunnybrook(dicoms, root / "contourfiles" / contours.strip()))
        shutil.rmtree(root / "contourfiles")
        data = root / "dicoms"
    else:
        data = root
    path = _contoured_file(sunnybrook_copy) if layout == "sunnybrook" else None
    if path is None:  # the .con holds the same contours: the same file is contoured
        (root / "contourfiles").mkdir(exist_ok=True)
        path = sorted((root / "dicoms").rglob("*.dcm"))[0].parent / "1.dcm"
        grid = read_series(path.parent)
        con = (path.parent / "export.con").read_text().splitlines()
        s, f = (int(v) for v in con[con.index("[XYCONTOUR]") + 1].split()[:2])
        path = grid.files[s, f].path
    _shrink(path)
    line = one_error(capsys, ["data", "inspect", str(data), "--format", layout])
    assert "image is 248x248 but the series' images are 256x256" in line
    assert path.parent.name not in line  # a DICOM folder name may be a patient field: never printed
    out, err = skipped(capsys, data)
    assert "left out" in err


# -- NIfTI (ACDC layout, written from the phantom) ----------------------------------------------------------

def _acdc_subject(root: Path, name: str, number: int) -> Path:
    """A phantom subject as an ACDC patient folder: ED and ES frames with label maps and Info.cfg."""
    subject = generate_subject(0, "target", number)
    folder = root / name
    folder.mkdir(parents=True)
    ed = subject.anatomy.ed_frame
    es = (ed + subject.images.shape[1] // 3) % subject.images.shape[1]
    affine = np.diag([subject.spacing_mm, subject.spacing_mm, 8.0, 1.0])
    values = np.array([0, 3, 2, 1], np.uint8)  # phantom 1 LV, 2 MY, 3 RV -> ACDC 3 LV, 2 MY, 1 RV
    for frame in (ed, es):
        stem = folder / f"{name}_frame{frame + 1:02d}"
        nib.save(nib.Nifti1Image(subject.images[:, frame].transpose(2, 1, 0), affine), f"{stem}.nii.gz")
        nib.save(nib.Nifti1Image(values[subject.labels[:, frame]].transpose(2, 1, 0), affine), f"{stem}_gt.nii.gz")
    (folder / "Info.cfg").write_text(f"ED: {ed + 1}\nES: {es + 1}\nNbFrame: {subject.images.shape[1]}\n")
    return folder


@pytest.fixture
def acdc_like(tmp_path) -> Path:
    root = tmp_path / "acdc"
    _acdc_subject(root, "patient001", 0)
    _acdc_subject(root, "patient002", 1)
    return root


def _frame(folder: Path, gt: bool = False) -> Path:
    return sorted(folder.glob("*_gt.nii.gz" if gt else "*_frame[0-9][0-9].nii.gz"))[0]


def _huge_header(path: Path) -> None:
    """A NIfTI whose header claims 1000 x 1000 x 1000 voxels; its data are a few bytes."""
    import gzip

    small = nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4))
    raw = bytearray(small.header.binaryblock) + b"\0" * 4 + np.zeros(8, np.int16).tobytes()
    raw[40:56] = struct.pack("<8h", 3, 1000, 1000, 1000, 1, 1, 1, 1)
    path.write_bytes(gzip.compress(bytes(raw)))


NIFTI_CASES = {
    "label map of another shape": ("mask is (", "but image is"),
    "4th dimension": ("expected a 3D volume (x, y, slices), got shape", ""),
    "label value outside the label map": ("label values [9] are not in the mapping lv=3,my=2,rv=1", ""),
    "claims 10^9 voxels": ("1000 x 1000 x 1000 = 1,000,000,000 voxels", "cine file may hold"),
    "0 bytes": ("not a readable NIfTI file", ""),
}


@pytest.mark.parametrize("damage", NIFTI_CASES)
def test_a_broken_nifti_file_is_one_line_and_skip_bad_skips_it(damage, acdc_like, capsys):
    folder = acdc_like / "patient002"
    image, gt = _frame(folder), _frame(folder, gt=True)
    if damage == "label map of another shape":
        data = nib.load(str(gt))
        nib.save(nib.Nifti1Image(np.asarray(data.dataobj)[:-4], data.affine), str(gt))
        named = gt
    elif damage == "4th dimension":
        data = nib.load(str(image))
        nib.save(nib.Nifti1Image(np.stack([np.asarray(data.dataobj)] * 2, axis=3), data.affine), str(image))
        named = image
    elif damage == "label value outside the label map":
        data = nib.load(str(gt))
        values = np.asarray(data.dataobj).copy()
        values[0, 0, 0] = 9
        nib.save(nib.Nifti1Image(values, data.affine), str(gt))
        named = gt
    elif damage == "claims 10^9 voxels":
        _huge_header(image)
        named = image
    else:
        image.write_bytes(b"")
        named = image
    line = one_error(capsys, ["data", "inspect", str(acdc_like)])
    first, second = NIFTI_CASES[damage]
    assert named.name in line and first in line and second in line, line
    out, err = skipped(capsys, acdc_like)
    assert "(frame left out)" in err or "left out" in err
    assert "patient001" in out


def test_a_trailing_dimension_of_length_one_is_a_3d_volume(acdc_like, capsys):
    image = _frame(acdc_like / "patient002")
    data = nib.load(str(image))
    before = load_dataset(acdc_like, size=64)
    nib.save(nib.Nifti1Image(np.asarray(data.dataobj)[..., None], data.affine), str(image))
    after = load_dataset(acdc_like, size=64)  # a new preparation (the file changed), the same images
    assert after.fingerprint != before.fingerprint and after.index.equals(before.index)
    assert np.array_equal(after.images, before.images) and list(after.hashes) == list(before.hashes)


# -- PNG -------------------------------------------------------------------------------------------------

def _png_with_header(path: Path, width: int, height: int) -> None:
    """A PNG whose IHDR claims width x height 8-bit grey pixels, with one empty IDAT: no decoder gets far."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("damage", ["mask of another size", "claims 10^9 pixels", "0 bytes"])
def test_a_broken_png_is_one_line_and_skip_bad_skips_it(damage, tmp_path, capsys):
    from tests.test_png import _write

    _write(tmp_path, subject="26", frames=[0, 1, 2])
    _write(tmp_path, subject="27", frames=[0, 1, 2])
    mask = tmp_path / "27_slice001_frame001-mask.png"
    if damage == "mask of another size":
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(mask)
        expected = "mask is (10, 10) but image is"
    elif damage == "claims 10^9 pixels":
        _png_with_header(mask, 31623, 31623)
        expected = "not a readable PNG (DecompressionBombError)"
    else:
        mask.write_bytes(b"")
        expected = "not a readable PNG"
    line = one_error(capsys, ["data", "inspect", str(tmp_path)])
    assert mask.name in line and expected in line, line
    out, err = skipped(capsys, tmp_path)
    assert "subject 2 of 2 left out" in err and "26" in out


def test_an_info_cfg_with_words_for_frame_numbers_is_one_line(acdc_like, capsys):
    (acdc_like / "patient002" / "Info.cfg").write_text("ED: abc\nES: 5\n")
    line = one_error(capsys, ["data", "inspect", str(acdc_like)])
    assert "patient002/Info.cfg: ED is 'abc', not a frame number" in line
    out, err = skipped(capsys, acdc_like)
    assert "subject 2 of 2 left out" in err


def test_a_malformed_value_no_check_names_is_still_one_line(acdc_like, capsys, monkeypatch):
    """Whatever a loader trips over (here a ValueError planted in it), the command ends in one line naming the
    subject, and --skip-bad leaves that subject out."""
    from harness.data import nifti

    real = nifti.load_acdc_subject

    def tripping(folder, *args, **kwargs):
        if folder.name == "patient002":
            raise ValueError("could not convert string to float: 'x'")
        return real(folder, *args, **kwargs)

    monkeypatch.setattr(nifti, "load_acdc_subject", tripping)
    line = one_error(capsys, ["data", "inspect", str(acdc_like)])
    assert "patient002: cannot be read (ValueError: could not convert string to float: 'x')" in line
    out, err = skipped(capsys, acdc_like)
    assert "subject 2 of 2 left out" in err and "patient001" in out


def test_nonnumeric_optional_dicom_header_values_are_ignored(phantom_dicom, tmp_path, capsys, monkeypatch):
    from pydicom.dataelem import DataElement

    monkeypatch.setattr(pydicom.config.settings, "writing_validation_mode", pydicom.config.IGNORE)
    monkeypatch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.IGNORE)
    root = _copy(phantom_dicom, tmp_path / "data")
    for path in sorted(_second_subject(root).glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.add(DataElement(0x00180087, "LO", "strong"))  # MagneticFieldStrength, as a broken writer stores it
        ds.add(DataElement(0x00180050, "LO", "thin"))  # SliceThickness
        ds.save_as(path)
    info = load_dataset(root, size=64).subjects_info.set_index("subject")
    broken, good = info.iloc[1], info.iloc[0]
    assert np.isnan(float(broken["field_strength_t"])) and float(good["field_strength_t"]) == 7.0
    assert float(broken["slice_thickness_mm"]) == pytest.approx(8.0)  # from the slice positions instead


def test_a_colour_dicom_image_is_one_line(phantom_dicom, tmp_path, capsys):
    root = _copy(phantom_dicom, tmp_path / "data")
    path = _middle_file(_second_subject(root))
    ds = pydicom.dcmread(path)
    grey = ds.pixel_array
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rgb.tobytes()
    ds.save_as(path)
    line = one_error(capsys, ["data", "inspect", str(root)])
    assert path.name in line and "not one greyscale image" in line


def test_a_png_over_the_voxel_limit_is_refused_before_it_is_decoded(tmp_path, capsys, monkeypatch):
    from harness.data import dataset
    from tests.test_png import _write

    _write(tmp_path, subject="26", frames=[0])
    monkeypatch.setattr(dataset, "MAX_VOXELS", 1000)  # every PNG of the subject is now too big
    line = one_error(capsys, ["data", "inspect", str(tmp_path)])
    assert "voxels, more than the 1,000 one cine file may hold" in line and ".png" in line


def test_4d_cine_frame_label_maps_of_different_shapes_are_one_line(tmp_path, capsys):
    subject = generate_subject(0, "target", 0)
    folder = tmp_path / subject.name
    folder.mkdir()
    affine = np.diag([subject.spacing_mm, subject.spacing_mm, 8.0, 1.0])
    nib.save(nib.Nifti1Image(subject.images.transpose(3, 2, 0, 1), affine), str(folder / f"{subject.name}_4d.nii.gz"))
    for frame, crop in ((1, 0), (5, 4)):
        labels = subject.labels[:, frame - 1].transpose(2, 1, 0)
        nib.save(nib.Nifti1Image(labels[: labels.shape[0] - crop], affine), str(folder / f"{subject.name}_frame{frame:02d}_gt.nii.gz"))
    line = one_error(capsys, ["data", "inspect", str(tmp_path), "--format", "nifti-4d"])
    assert "_frame05_gt.nii.gz: label map is" in line
