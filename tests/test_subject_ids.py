"""Two subjects whose folders share a name stay two subjects, in every layout (issue 19.3)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.data.export import write_phantom
from harness.data.sources import load_dataset, locate
from harness.errors import DataError
from tests.test_bad_inputs import _acdc_subject


def _assert_two_sites(data, first: str, second: str, root: Path, sites: tuple[str, str] = ("siteA", "siteB"),
                      name: str | None = None) -> None:
    """Each subject has exactly the images its site alone gives (none merged into the other)."""
    assert first in data.subjects and second in data.subjects
    counts = data.index.groupby("subject").size()
    for subject, site in zip((first, second), sites):
        name = name or subject.split("/")[1]
        alone = load_dataset(root / site, size=64)
        assert counts[subject] == len(alone.rows_of([name]))
        assert sorted(data.hashes[data.rows_of([subject]).index]) == sorted(alone.hashes[alone.rows_of([name]).index])
    a, b = (data.images[data.rows_of([s]).index.to_numpy()] for s in (first, second))
    assert not np.array_equal(a, b)
    assert len(set(data.hashes[data.rows_of([first]).index]) & set(data.hashes[data.rows_of([second]).index])) == 0


def test_nifti_folders_of_the_same_name_at_two_sites(tmp_path):
    _acdc_subject(tmp_path / "siteA", "patient001", 0)
    _acdc_subject(tmp_path / "siteB", "patient001", 1)
    _acdc_subject(tmp_path / "siteB", "patient002", 2)
    located = locate(tmp_path)
    assert located.format == "acdc" and located.ids == ("siteA/patient001", "siteB/patient001", "patient002")
    data = load_dataset(tmp_path, size=64)
    assert sorted(data.subjects) == ["patient002", "siteA/patient001", "siteB/patient001"]
    assert load_dataset(tmp_path / "siteA", size=64).subjects == ["patient001"]  # one site alone: the name
    _assert_two_sites(data, "siteA/patient001", "siteB/patient001", tmp_path)


def test_dicom_folders_of_the_same_name_at_two_sites(tmp_path):
    for site, number in (("siteA", 0), ("siteB", 1)):
        written = write_phantom(tmp_path / "tmp" / site, "target", number + 1, 0)[-1]
        shutil.move(written, tmp_path / site / "cine")
    shutil.rmtree(tmp_path / "tmp")
    located = locate(tmp_path)
    assert located.format == "dicom-nifti" and located.ids == ("siteA/cine", "siteB/cine")
    data = load_dataset(tmp_path, size=64)
    # DICOM: a parent folder may be a patient's name, so the clashing ids carry a salted hash of the path instead
    first, second = data.subjects
    assert first != second and all(re.fullmatch(r"cine-[0-9a-f]{6}", s) for s in data.subjects)
    _assert_two_sites(data, first, second, tmp_path, name="cine")


def test_png_prefixes_of_the_same_name_at_two_sites(tmp_path):
    from tests.test_png import _write

    (tmp_path / "siteA").mkdir()
    (tmp_path / "siteB").mkdir()
    _write(tmp_path / "siteA", subject="26", frames=[0, 1, 2])
    _write(tmp_path / "siteB", subject="26", frames=[3, 4, 5])
    located = locate(tmp_path)
    assert located.format == "png" and located.ids == ("siteA/26", "siteB/26")
    data = load_dataset(tmp_path, size=64)
    assert data.subjects == ["siteA/26", "siteB/26"]
    frames = data.index.groupby("subject")["frame"].unique()
    assert sorted(frames["siteA/26"]) == [0, 1, 2] and sorted(frames["siteB/26"]) == [3, 4, 5]


def test_png_masks_in_a_folder_of_their_own_still_pair(tmp_path):
    from tests.test_png import _write

    (tmp_path / "images").mkdir()
    _write(tmp_path / "images", subject="26", frames=[0, 1, 2])
    (tmp_path / "masks").mkdir()
    for mask in (tmp_path / "images").glob("*-mask.png"):
        mask.rename(tmp_path / "masks" / mask.name)
    assert locate(tmp_path).ids == ("26",)
    assert load_dataset(tmp_path, size=64).subjects == ["26"]


def test_the_same_png_twice_is_an_error(tmp_path):
    from tests.test_png import _write

    (tmp_path / "images").mkdir()
    _write(tmp_path / "images", subject="26", frames=[0, 1, 2])
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks2").mkdir()
    for mask in (tmp_path / "images").glob("*-mask.png"):
        shutil.copy(mask, tmp_path / "masks2" / mask.name)
        mask.rename(tmp_path / "masks" / mask.name)
    with pytest.raises(DataError, match="subject '26' has this mask twice"):
        locate(tmp_path)


def test_png_sites_with_image_and_mask_folders_of_their_own(tmp_path):
    from tests.test_png import _write

    for site, frames in (("siteA", [0, 1, 2]), ("siteB", [3, 4, 5])):
        images, masks = tmp_path / site / "images", tmp_path / site / "masks"
        images.mkdir(parents=True)
        masks.mkdir()
        _write(images, subject="26", frames=frames)
        for mask in images.glob("*-mask.png"):
            mask.rename(masks / mask.name)
    data = load_dataset(tmp_path, size=64)
    assert data.subjects == ["siteA/26", "siteB/26"]
    frames = data.index.groupby("subject")["frame"].unique()
    assert sorted(frames["siteA/26"]) == [0, 1, 2] and sorted(frames["siteB/26"]) == [3, 4, 5]


def test_png_masks_beside_their_images_at_the_root_and_in_a_subfolder(tmp_path):
    from tests.test_png import _write

    root = tmp_path / "data"
    (root / "siteB").mkdir(parents=True)
    _write(root, subject="26", frames=[0, 1])
    _write(root / "siteB", subject="26", frames=[2, 3])
    data = load_dataset(root, size=64)
    assert data.subjects == ["data/26", "siteB/26"]
    frames = data.index.groupby("subject")["frame"].unique()
    assert sorted(frames["data/26"]) == [0, 1] and sorted(frames["siteB/26"]) == [2, 3]
