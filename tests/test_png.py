from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from harness.data.phantom import generate_subject
from harness.data.sources import load_dataset, locate
from harness.errors import DataError


def _write(root, subject="26", frames=range(0, 20, 2)):
    """Phantom slices as the published study's PNG pairs (8-bit image, mask 1 LV / 2 MY)."""
    phantom = generate_subject(0, "target", 1)
    for s in range(phantom.images.shape[0]):
        for f in frames:
            stem = root / f"{subject}_slice{s:03d}_frame{f:03d}"
            image = np.clip(phantom.images[s, f] / phantom.images.max() * 255, 0, 255).astype(np.uint8)
            Image.fromarray(image).save(f"{stem}-image.png")
            Image.fromarray(np.where(phantom.labels[s, f] <= 2, phantom.labels[s, f], 0).astype(np.uint8)).save(
                f"{stem}-mask.png")
    return phantom


def test_png_pairs_are_found_grouped_and_phased(tmp_path):
    phantom = _write(tmp_path)
    _write(tmp_path, subject="27", frames=range(0, 6))
    located = locate(tmp_path)
    assert located.format == "png" and sorted(p.name for p in located.subjects) == ["26", "27"]
    data = load_dataset(tmp_path)
    rows = data.index[data.index["subject"] == "26"]
    assert rows["frame"].nunique() == 10 and rows["slice"].nunique() == phantom.images.shape[0]
    lv = (phantom.labels == 1).sum(axis=(0, 2, 3))[list(range(0, 20, 2))]
    ed = data.subjects_info.set_index("subject").loc["26", "ed"]
    assert ed == 2 * int(np.argmax(lv))  # LV-area rule over the labelled frames (cine frame numbers)
    assert set(np.unique(data.masks)) <= {0, 1, 2}


def test_image_without_mask_and_missing_slice(tmp_path):
    _write(tmp_path, frames=[0, 1, 2])
    (tmp_path / "26_slice001_frame002-mask.png").unlink()
    with pytest.raises(DataError, match="26_slice001_frame002-image.png: has no mask file beside it"):
        load_dataset(tmp_path)
    (tmp_path / "26_slice001_frame002-image.png").unlink()
    with pytest.raises(DataError, match="subject '26': no image for slice 1, frame 2"):
        load_dataset(tmp_path)


def test_mask_values_outside_the_mapping(tmp_path):
    _write(tmp_path, frames=[0])
    mask = tmp_path / "26_slice002_frame000-mask.png"
    Image.fromarray(np.full((192, 192), 7, np.uint8)).save(mask)
    with pytest.raises(DataError, match=r"26_slice002_frame000-mask.png: label values \[7\] are not in the mapping"):
        load_dataset(tmp_path)
