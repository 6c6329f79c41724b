"""DICOM series with Sunnybrook contours, on the real files in ../shared/data/sunnybrook."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from harness.cli import main
from harness.data.dicom import PATIENT_FIELDS, UNKNOWN, load_sunnybrook_subject, read_contour, read_series
from harness.data.sources import load_dataset, locate
from harness.errors import DataError
from tests.conftest import TINY_RUN, shared


@pytest.fixture
def sunnybrook_copy(tmp_path) -> Path:
    target = tmp_path / "sunnybrook"
    shutil.copytree(shared("sunnybrook"), target)
    return target


def test_series_is_sorted_by_geometry_and_trigger_time_not_file_names(sunnybrook_copy):
    folder = sunnybrook_copy / "dicoms" / "SCD0000101"
    (folder / "5.dcm").rename(folder / "zz-renamed.dcm")  # a file name that sorts elsewhere
    grid = read_series(folder)
    assert grid.files.shape == (12, 20)
    triggers = [float(pydicom.dcmread(image.path, stop_before_pixels=True).TriggerTime) for image in grid.files[0]]
    assert triggers == sorted(triggers) and triggers == [image.trigger for image in grid.files[0]]
    assert any(image.path.name == "zz-renamed.dcm" for image in grid.files.ravel())
    assert grid.spacing_mm == pytest.approx(1.367188) and grid.field_strength_t == 1.5


def test_trigger_times_and_rr_interval_come_from_the_headers_in_base_to_apex_order(sunnybrook_copy):
    from harness.data.dicom import pixels

    folder = shared("sunnybrook") / "dicoms" / "SCD0000101"
    stack = load_sunnybrook_subject(folder, shared("sunnybrook") / "contourfiles" / "SC-HF-I-1", "salt")
    grid = read_series(folder)
    series_slice = {}
    for (i, j), _ in np.ndenumerate(stack.images[:, :, 0, 0]):  # find each stack image's file by its pixels
        f = stack.frame_numbers[j]
        matches = [s for s in range(grid.files.shape[0]) if np.array_equal(pixels(grid.files[s, f]), stack.images[i, j])]
        assert len(matches) == 1
        series_slice[i] = matches[0]
        header = pydicom.dcmread(grid.files[matches[0], f].path, stop_before_pixels=True)
        assert stack.trigger_ms[i, j] == pytest.approx(float(header.TriggerTime))
        assert stack.rr_ms[i, j] == float(header.NominalInterval)
    assert series_slice[0] > series_slice[len(series_slice) - 1]  # stored apex first: the checks ran on a flipped stack
    assert len(np.unique(stack.rr_ms)) > 1  # each slice's breath-hold has its own cycle
    data = load_dataset(shared("sunnybrook"))
    per_subject = data.index.groupby("subject")["rr_ms"].median()  # the subject's cycle: the median of its slices'
    assert data.subjects_info.set_index("subject")["rr_ms"].to_dict() == per_subject.to_dict()
    assert sorted(per_subject) == [697.0, 759.0, 923.0]
    # without NominalInterval a slice's cycle is its frame spacing x its frames; without TriggerTime nothing
    # is made up and the frames keep their instance order
    copy = sunnybrook_copy / "dicoms" / "SCD0000101"
    for path in copy.glob("*.dcm"):
        header = pydicom.dcmread(path)
        del header.NominalInterval
        header.save_as(path)
    spaced = read_series(copy)
    steps = np.diff(spaced.trigger_ms(range(12), range(20)), axis=1)
    assert np.allclose(spaced.rr_ms(range(12), [0])[:, 0], 20 * np.median(steps, axis=1))
    for path in copy.glob("*.dcm"):
        header = pydicom.dcmread(path)
        del header.TriggerTime
        header.save_as(path)
    untimed = read_series(copy)
    assert untimed.rr_ms(range(12), range(20)) is None and untimed.trigger_ms(range(12), range(20)) is None
    numbers = [int(pydicom.dcmread(i.path, stop_before_pixels=True).InstanceNumber) for i in untimed.files[0]]
    assert numbers == sorted(numbers)


def test_sunnybrook_ed_is_late_in_the_cycle_and_myocardium_only_where_contoured():
    data = load_dataset(shared("sunnybrook"))
    info = data.subjects_info
    assert len(info) == 3 and set(info["ed"]) <= {18, 19} and set(info["es"]) <= {6, 7}
    assert set(info["slice_spacing_mm"]) == {8.0, 10.0} and (info["side_px"] == 256).all()  # from positions
    es = data.index[data.index["phase"] == "ES"].index
    ed = data.index[data.index["phase"] == "ED"].index
    assert (data.masks[es] == UNKNOWN).any() and not (data.masks[ed] == UNKNOWN).any()
    assert ((data.masks[ed] == 2).sum(axis=(1, 2)) > 0).mean() > 0.8  # epicardium contoured at ED


def test_contour_rasterisation_is_inside_the_polygon(tmp_path):
    path = tmp_path / "IM-0001-0001-icontour-manual.txt"
    path.write_text("10 10\n30 10\n30 20\n10 20\n")
    mask = read_contour(path, (40, 40))
    assert mask[15, 20] and not mask[5, 5] and abs(int(mask.sum()) - 20 * 10) <= 40


def test_contour_point_outside_the_image(tmp_path):
    path = tmp_path / "IM-0001-0001-ocontour-manual.txt"
    path.write_text("10 10\n300 10\n30 20\n")
    with pytest.raises(DataError, match=r"point \(300, 10\) lies outside the 256x256 image"):
        read_contour(path, (256, 256))


def test_truncated_and_non_dicom_files_are_named(sunnybrook_copy):
    folder = sunnybrook_copy / "dicoms" / "SCD0000201"
    (folder / "3.dcm").write_bytes((folder / "3.dcm").read_bytes()[:100])
    with pytest.raises(DataError, match=r"3\.dcm: not a DICOM file or truncated"):
        read_series(folder)


def test_two_series_in_one_folder(sunnybrook_copy):
    folder = sunnybrook_copy / "dicoms" / "SCD0000201"
    other = pydicom.dcmread(folder / "7.dcm")
    other.SeriesInstanceUID = "1.2.3.4"
    other.save_as(folder / "7.dcm")
    with pytest.raises(DataError, match="2 series are mixed in one folder"):
        read_series(folder)


def test_missing_frame_is_reported(sunnybrook_copy):
    folder = sunnybrook_copy / "dicoms" / "SCD0000201"
    (folder / "25.dcm").unlink()
    with pytest.raises(DataError, match="has 19 frames, the others 20: missing frames"):
        read_series(folder)


def test_slice_with_another_orientation(sunnybrook_copy):
    folder = sunnybrook_copy / "dicoms" / "SCD0000201"
    odd = pydicom.dcmread(folder / "30.dcm")
    odd.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    odd.save_as(folder / "30.dcm")
    with pytest.raises(DataError, match=r"30\.dcm: its orientation differs"):
        read_series(folder)


def _patient_values(root: Path) -> set[str]:
    values = set()
    for path in root.rglob("*.dcm"):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        values |= {str(header.get(k)) for k in PATIENT_FIELDS if str(header.get(k, "")).strip()}
        # UIDs and dates are in the basic de-identification profile too
        values |= {str(header.get(k)) for k in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
                                                 "FrameOfReferenceUID", "StudyDate", "SeriesDate", "AcquisitionTime")
                   if str(header.get(k, "")).strip()}
    return {v for v in values if len(v) >= 4}  # short values (e.g. 'M', '1.5') would match anything


@pytest.mark.slow
def test_no_patient_field_reaches_any_output(sunnybrook_copy, tmp_path, capsys, cache, monkeypatch):
    values = _patient_values(sunnybrook_copy / "dicoms")
    assert any(v.startswith("SCD") for v in values)  # the test files do carry patient fields
    out, study_cache = tmp_path / "study", tmp_path / "cache"
    monkeypatch.setenv("CINE_HARNESS_CACHE", str(study_cache))  # `data inspect` caches there too: scanned below
    shutil.copytree(cache / "models", study_cache / "models", dirs_exist_ok=True) if (cache / "models").exists() else None
    assert main(["data", "inspect", str(sunnybrook_copy)]) == 0
    code = main(["run", "--data", str(sunnybrook_copy), "--n", "1", "--out", str(out), "--cache-dir", str(study_cache),
                 *TINY_RUN, "--test-subjects", "1", "--val-subjects", "1"])
    assert code == 0
    printed = capsys.readouterr()
    texts = {"stdout": printed.out, "stderr": printed.err}
    for path in list(out.rglob("*")) + list(study_cache.rglob("*")):
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("latin-1")
    leaks = [(where, v) for where, text in texts.items() for v in values if v in text]
    assert not leaks, leaks[:5]
    assert (out / "report.md").exists()


def _con_from_sunnybrook(folder: Path, contour_folder: Path) -> str:
    """A QMass-style .con text holding the real Sunnybrook contours of one subject."""
    grid = read_series(folder)
    where = {int(p.stem): (s, f) for (s, f), p in np.ndenumerate(grid.files)}
    blocks = ["[XYCONTOUR_HEADER]", "Study_id=anonymous"]
    for path in sorted(contour_folder.rglob("*contour-manual.txt")):
        number = int(path.name.split("-")[2])
        slice_, frame = where[number]
        points = np.loadtxt(path, ndmin=2)
        kind = 0 if "icontour" in path.name else 1
        blocks += ["[XYCONTOUR]", f"{slice_} {frame} {kind} 1.0", str(len(points))]
        blocks += [f"{x:.2f} {y:.2f}" for x, y in points]
    blocks += ["[POINT]", "0 0 0 1.0"]
    return "\n".join(blocks) + "\n"


def test_qmass_con_export_gives_the_same_labels_as_the_contour_files(sunnybrook_copy):
    from harness.data.dicom import load_con_subject

    folder = sunnybrook_copy / "dicoms" / "SCD0000101"
    contours = sunnybrook_copy / "contourfiles" / "SC-HF-I-1"
    (folder / "SC-HF-I-1.con").write_text(_con_from_sunnybrook(folder, contours))
    via_con = load_con_subject(folder, "salt")
    via_txt = load_sunnybrook_subject(folder, contours, "salt")
    assert via_con.frame_numbers == via_txt.frame_numbers == (7, 18)
    assert np.array_equal(via_con.labels, via_txt.labels) and np.array_equal(via_con.images, via_txt.images)
    assert via_con.subject == via_txt.subject != "SCD0000101"  # folder name is the PatientID: hashed
    located = locate(sunnybrook_copy / "dicoms")
    assert located.format == "dicom-con" and [p.name for p in located.subjects] == ["SCD0000101"]


def test_malformed_con_block_names_the_line(tmp_path):
    from harness.data.dicom import read_con

    path = tmp_path / "x.con"
    path.write_text("[XYCONTOUR]\n0 5 0 1.0\n3\n1 2\n3 4\n")
    with pytest.raises(DataError, match=r"x\.con: line 1: an XYCONTOUR block must be followed by"):
        read_con(path)


def test_skip_bad_leaves_out_the_broken_subject_and_never_prints_its_folder(sunnybrook_copy, tmp_path):
    folder = sunnybrook_copy / "dicoms" / "SCD0000201"
    (folder / "3.dcm").write_bytes(b"not a dicom file at all")
    with pytest.raises(DataError) as raised:
        load_dataset(sunnybrook_copy, cache_dir=tmp_path / "c")
    assert "3.dcm: not a DICOM file or truncated" in str(raised.value) and "SCD0000201" not in str(raised.value)
    data = load_dataset(sunnybrook_copy, cache_dir=tmp_path / "c", skip_bad=True)
    # the broken file is left out first; without it a frame is missing, so the subject goes too
    assert len(data.subjects) == 2 and len(data.problems) == 2
    assert any("3.dcm: not a DICOM file or truncated" in p and "(file left out)" in p for p in data.problems)
    assert any("subject 2 of 3 left out" in p and "missing frames" in p for p in data.problems)
    assert not any("SCD0000201" in p for p in data.problems)
    again = load_dataset(sunnybrook_copy, cache_dir=tmp_path / "c", skip_bad=True)  # from the cache
    assert again.problems == data.problems


def test_unreadable_file_is_named(sunnybrook_copy, monkeypatch):
    import pydicom as real

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(real, "dcmread", refuse)
    with pytest.raises(DataError, match=r"1\.dcm: permission denied; make it readable"):
        read_series(sunnybrook_copy / "dicoms" / "SCD0000301")


def test_slices_with_different_pixel_spacing(sunnybrook_copy):
    folder = sunnybrook_copy / "dicoms" / "SCD0000201"
    odd = pydicom.dcmread(folder / "41.dcm")
    odd.PixelSpacing = [2.0, 2.0]
    odd.save_as(folder / "41.dcm")
    with pytest.raises(DataError, match=r"41\.dcm: pixel spacing \[2, 2\] mm differs from \[1.36719, 1.36719\] mm"):
        read_series(folder)


def test_enhanced_multiframe_file_gives_the_same_stack(sunnybrook_copy, tmp_path):
    """One enhanced MR file holding every image of the series, built from the real single-image files."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from harness.data.dicom import pixels

    source = sunnybrook_copy / "dicoms" / "SCD0000301"
    classic = read_series(source)
    files = sorted(source.glob("*.dcm"), key=lambda p: int(p.stem))[::-1]  # stored in reverse: order must not matter
    first = pydicom.dcmread(files[0])
    frames = []
    for path in files:
        one = pydicom.dcmread(path)
        group = Dataset()
        position, orientation, timing = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = one.ImagePositionPatient
        orientation.ImageOrientationPatient = one.ImageOrientationPatient
        timing.NominalCardiacTriggerDelayTime = one.TriggerTime
        timing.RRIntervalTimeNominal = one.NominalInterval  # where enhanced files keep the cycle
        group.PlanePositionSequence = Sequence([position])
        group.PlaneOrientationSequence = Sequence([orientation])
        group.CardiacSynchronizationSequence = Sequence([timing])
        frames.append((group, one.pixel_array))
    measures, shared = Dataset(), Dataset()
    measures.PixelSpacing = first.PixelSpacing
    shared.PixelMeasuresSequence = Sequence([measures])
    first.SharedFunctionalGroupsSequence = Sequence([shared])
    first.PerFrameFunctionalGroupsSequence = Sequence([g for g, _ in frames])
    first.NumberOfFrames = len(frames)
    first.PixelData = np.stack([a for _, a in frames]).astype(frames[0][1].dtype).tobytes()
    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "TriggerTime", "NominalInterval"):
        delattr(first, tag)
    target = tmp_path / "enhanced"
    target.mkdir()
    first.save_as(target / "cine.dcm")
    enhanced = read_series(target)
    assert enhanced.files.shape == classic.files.shape == (10, 20)
    assert np.array_equal(enhanced.trigger_ms(range(10), range(20)), classic.trigger_ms(range(10), range(20)))
    assert np.array_equal(enhanced.rr_ms(range(10), range(20)), classic.rr_ms(range(10), range(20)))
    for (s, f), image in np.ndenumerate(classic.files):
        assert np.array_equal(pixels(image), pixels(enhanced.files[s, f]))


def test_png_masks_beside_dicom_files_give_the_contoured_labels(sunnybrook_copy):
    from PIL import Image

    folder = sunnybrook_copy / "dicoms" / "SCD0000101"
    contours = sunnybrook_copy / "contourfiles" / "SC-HF-I-1"
    reference = load_sunnybrook_subject(folder, contours, "salt")  # frames (7, 18): ES, ED
    grid = read_series(folder)
    kept = [s for s in range(grid.files.shape[0])
            if (contours / "i-contours" / f"IM-0001-{grid.files[s, 18].stem.zfill(4)}-icontour-manual.txt").exists()]
    for i, s in enumerate(kept):  # ED masks only, written as PNGs in slice order of the series
        Image.fromarray(reference.labels[i, 1]).save(folder / f"{grid.files[s, 18].stem}-mask.png")
    shutil.rmtree(folder.parent / "SCD0000201")
    shutil.rmtree(folder.parent / "SCD0000301")
    for s in set(range(grid.files.shape[0])) - set(kept):  # uncontoured slices leave the stack
        for image in grid.files[s]:
            image.path.unlink()
    data = load_dataset(folder.parent)
    assert locate(folder.parent).format == "dicom-png"
    assert data.subjects_info.iloc[0]["labelled_frames"] == 1
    assert np.array_equal(data.masks, load_dataset_masks(reference, data.images.shape[-1]))


def load_dataset_masks(stack, size):
    from harness.data.dataset import to_training_size

    _, labels = to_training_size(stack.images[:, 1:], stack.labels[:, 1:], size)
    return labels.reshape(-1, size, size)


def test_duplicate_image_in_a_series(sunnybrook_copy):
    folder = sunnybrook_copy / "dicoms" / "SCD0000201"
    shutil.copy(folder / "30.dcm", folder / "999.dcm")
    (folder / "31.dcm").unlink()  # same count per slice, but two images share a position and trigger time
    with pytest.raises(DataError, match="two images share position .* and trigger time; duplicate images"):
        read_series(folder)


def test_skip_bad_leaves_out_a_stray_localiser_but_keeps_the_subject(sunnybrook_copy):
    folder = sunnybrook_copy / "dicoms" / "SCD0000301"
    localiser = pydicom.dcmread(folder / "1.dcm")
    localiser.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    localiser.save_as(folder / "localiser.dcm")
    with pytest.raises(DataError, match=r"localiser\.dcm: its orientation differs from 1\.dcm"):
        load_dataset(sunnybrook_copy)
    data = load_dataset(sunnybrook_copy, skip_bad=True)
    assert len(data.subjects) == 3
    assert len(data.problems) == 1 and "localiser.dcm" in data.problems[0] and "(file left out)" in data.problems[0]
