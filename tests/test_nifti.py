"""NIfTI loaders on the real ACDC and M&Ms-2 files in ../shared/data."""
from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from harness.data.dataset import find_phases, voxel_ml
from harness.data.nifti import ACDC_LABELS, LabelMap, load_acdc_subject, read_info_cfg
from harness.data.sources import load_dataset, locate
from harness.errors import DataError, UsageError
from tests.conftest import shared


@pytest.fixture(scope="module")
def acdc(tmp_path_factory):
    return load_dataset(shared("acdc"), cache_dir=tmp_path_factory.mktemp("cache"))


def test_acdc_is_detected_with_all_100_subjects():
    located = locate(shared("acdc"))
    assert located.format == "acdc" and len(located.subjects) == 100


def test_lv_area_rule_agrees_with_info_cfg_for_all_100_subjects(acdc):
    by_area = find_phases(acdc.index).phases.set_index("subject")  # no hints: the area rule alone
    info = acdc.subjects_info.set_index("subject")
    assert len(info) == 100 and (info["source"] == "Info.cfg").all()
    for subject, row in info.iterrows():
        cfg = read_info_cfg(shared("acdc", "training", subject, "Info.cfg"))
        assert (row["ed"], row["es"]) == (int(cfg["ED"]) - 1, int(cfg["ES"]) - 1)
        assert (by_area.loc[subject, "ed"], by_area.loc[subject, "es"]) == (row["ed"], row["es"]), subject


def test_acdc_labels_map_to_lv_and_myocardium(acdc):
    rows = acdc.index[acdc.index["subject"] == "patient001"]
    assert rows["n_frames"].iloc[0] == 30 and rows["slice"].nunique() == 10
    assert rows["spacing_mm"].iloc[0] == pytest.approx(1.5625)
    masks = acdc.masks[rows.index]
    assert set(np.unique(masks)) == {0, 1, 2, 3}
    # the basal slice comes first: its LV is larger than the apical slice's at ED
    ed = rows[rows["phase"] == "ED"].sort_values("slice")
    assert ed["lv_area"].iloc[1] > ed["lv_area"].iloc[-1]


def test_mnms_layout_and_its_own_label_values():
    data = load_dataset(shared("mnms2"))
    info = data.subjects_info.iloc[0]
    assert (info["subject"], info["ed"], info["es"], info["source"]) == ("001", 0, 1, "file name")
    lv_ed = data.index[(data.index["phase"] == "ED")]["lv_area"].sum()
    lv_es = data.index[(data.index["phase"] == "ES")]["lv_area"].sum()
    assert lv_ed > lv_es > 0  # label 1 read as LV: the blood pool empties in systole


def test_label_map_parsing_and_values_outside_it(tmp_path):
    assert LabelMap.parse("lv=3,my=2,rv=1") == ACDC_LABELS
    with pytest.raises(UsageError, match="must look like lv=3,my=2"):
        LabelMap.parse("lv=three,my=2")
    folder = tmp_path / "patient001"
    shutil.copytree(shared("acdc", "training", "patient001"), folder)
    with pytest.raises(DataError, match=r"patient001_frame01_gt.nii.gz: label values \[1\] are not in the mapping"):
        load_acdc_subject(folder, LabelMap(lv=3, my=2))


def test_mask_of_another_shape_names_the_file(tmp_path):
    folder = tmp_path / "patient001"
    shutil.copytree(shared("acdc", "training", "patient001"), folder)
    gt = folder / "patient001_frame12_gt.nii.gz"
    image = nib.load(str(gt))
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:, :-8], image.affine), str(gt))
    with pytest.raises(DataError, match=r"patient001_frame12_gt.nii.gz: mask is \(10, 248, 216\) but image is \(10, 256, 216\)"):
        load_acdc_subject(folder)


def test_truncated_file_names_the_file(tmp_path):
    folder = tmp_path / "patient001"
    shutil.copytree(shared("acdc", "training", "patient001"), folder)
    image = folder / "patient001_frame01.nii.gz"
    image.write_bytes(image.read_bytes()[:2000])
    with pytest.raises(DataError, match="patient001_frame01.nii.gz: not a readable NIfTI file"):
        load_acdc_subject(folder)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no known cine layout found \\(it is empty\\)"):
        locate(tmp_path)


def test_second_load_comes_from_the_cache_and_is_identical(tmp_path):
    source = tmp_path / "data"
    for name in ("patient001", "patient002"):
        shutil.copytree(shared("acdc", "training", name), source / name)
    first = load_dataset(source, cache_dir=tmp_path / "cache")
    second = load_dataset(source, cache_dir=tmp_path / "cache")
    assert np.array_equal(first.images, second.images) and first.index.equals(second.index)
    assert len(list((tmp_path / "cache" / "prepared").glob("*/meta.json"))) == 1
    (source / "patient002" / "Info.cfg").write_text((source / "patient002" / "Info.cfg").read_text() + "\n")
    load_dataset(source, cache_dir=tmp_path / "cache")  # changed content: prepared again
    assert len(list((tmp_path / "cache" / "prepared").glob("*/meta.json"))) == 2


def test_data_inspect_prints_every_subject_with_phases(capsys):
    from harness.cli import main

    assert main(["data", "inspect", str(shared("acdc"))]) == 0
    captured = capsys.readouterr()
    assert "detected ACDC NIfTI" in captured.err and "100 subjects" in captured.err
    table = captured.out
    assert table.count("patient") == 100 and "Info.cfg" in table
    row = next(line for line in table.splitlines() if "patient001" in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[:4] == ["patient001", "10", "30", "2"] and cells[6] == "10"  # 10 mm slices
    assert cells[8:11] == ["0", "11", "Info.cfg"]


def test_data_inspect_on_a_folder_without_cine_data(capsys, tmp_path):
    from harness.cli import main

    (tmp_path / "notes.txt").write_text("x")
    assert main(["data", "inspect", str(tmp_path)]) == 2
    assert "no known cine layout found (it holds notes.txt)" in capsys.readouterr().err


def test_4d_cine_with_a_4d_label_map_is_the_phantom(tmp_path):
    from harness.data.phantom import generate_subject, phantom_dataset

    for number in range(2):
        subject = generate_subject(0, "target", number)
        folder = tmp_path / subject.name
        folder.mkdir()
        affine = np.diag([subject.spacing_mm, subject.spacing_mm, 8.0, 1.0])
        nib.save(nib.Nifti1Image(subject.images.transpose(3, 2, 0, 1), affine), str(folder / f"{subject.name}_4d.nii.gz"))
        nib.save(nib.Nifti1Image(subject.labels.transpose(3, 2, 0, 1), affine), str(folder / f"{subject.name}_4d_gt.nii.gz"))
    data = load_dataset(tmp_path, size=64)
    assert locate(tmp_path).format == "nifti-4d"
    memory = phantom_dataset("target", 2, 0, 64)
    timing = ["trigger_ms", "rr_ms"]  # the files' time axis is unset: no timing is made up
    assert data.index[timing].isna().all().all() and memory.index[timing].notna().all().all()
    assert data.index.drop(columns=timing).equals(memory.index.drop(columns=timing))
    assert np.array_equal(data.masks, memory.masks)
    for number in range(2):  # a header with the time axis in ms: the phantom's own timing comes back
        subject = generate_subject(0, "target", number)
        path = tmp_path / subject.name / f"{subject.name}_4d.nii.gz"
        image = nib.load(str(path))
        image.header.set_xyzt_units("mm", "msec")
        image.header["pixdim"][4] = subject.rr_ms / subject.images.shape[1]
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj), image.affine, image.header), str(path))
    timed = load_dataset(tmp_path, size=64)
    assert np.allclose(timed.index[timing].to_numpy(float), memory.index[timing].to_numpy(float), atol=0.01)


def test_4d_cine_with_acdc_style_frame_label_maps(tmp_path):
    source = shared("acdc", "training", "patient001")
    folder = tmp_path / "patient001"
    folder.mkdir()
    ed, es = (nib.load(str(source / f"patient001_frame{f:02d}.nii.gz")) for f in (1, 12))
    frames = [np.asarray(ed.dataobj)] * 6 + [np.asarray(es.dataobj)] * 24  # a 30-frame cine
    nib.save(nib.Nifti1Image(np.stack(frames, axis=3), ed.affine), str(folder / "patient001_4d.nii.gz"))
    for f in (1, 12):
        shutil.copy(source / f"patient001_frame{f:02d}_gt.nii.gz", folder)
    data = load_dataset(tmp_path, fmt="nifti-4d", labels=ACDC_LABELS)
    info = data.subjects_info.iloc[0]
    assert (info["frames"], info["labelled_frames"], info["ed"], info["es"]) == (30, 2, 0, 11)


def test_skip_bad_leaves_out_a_broken_frame_and_keeps_the_subject(tmp_path):
    for name in ("patient001", "patient002"):
        shutil.copytree(shared("acdc", "training", name), tmp_path / name)
    gt = tmp_path / "patient002" / "patient002_frame12_gt.nii.gz"
    gt.write_bytes(gt.read_bytes()[:500])
    with pytest.raises(DataError, match="patient002_frame12_gt.nii.gz: not a readable NIfTI file"):
        load_dataset(tmp_path)
    data = load_dataset(tmp_path, skip_bad=True)
    info = data.subjects_info.set_index("subject")
    assert info.loc["patient002", "labelled_frames"] == 1 and info.loc["patient001", "labelled_frames"] == 2
    assert len(data.problems) == 1 and "(frame left out)" in data.problems[0]
    # one labelled frame: Info.cfg names it ED; no ES is claimed, and the subject is flagged
    phases = data.index[data.index["subject"] == "patient002"]["phase"]
    assert set(phases) == {"ED"}
    assert "only frame 0 is labelled" in info.loc["patient002", "warning"]


def test_voxel_volume_turns_training_size_masks_into_the_ground_truth_volumes(acdc):
    """EDV/ESV from the prepared (resampled) masks match the ACDC label files at full resolution."""
    volume = voxel_ml(acdc.subjects_info, acdc.masks.shape[-1])
    for subject in ("patient001", "patient051", "patient100"):
        rows = acdc.index[acdc.index["subject"] == subject]
        for phase in ("ED", "ES"):
            frame = int(rows.loc[rows["phase"] == phase, "frame"].iloc[0])
            gt = nib.load(str(shared("acdc", "training", subject, f"{subject}_frame{frame + 1:02d}_gt.nii.gz")))
            truth = (np.asarray(gt.dataobj) == 3).sum() * np.prod(gt.header.get_zooms()[:3]) / 1000
            prepared = (acdc.masks[rows.index[rows["phase"] == phase]] == 1).sum() * volume[subject]
            assert prepared == pytest.approx(truth, rel=0.03), (subject, phase)
