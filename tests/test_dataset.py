from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.data.dataset import find_phases, index_stack, normalise, to_training_size
from harness.errors import DataError


def _index(areas: dict[str, list[list[int]]]) -> pd.DataFrame:
    rows = []
    for subject, per_slice in areas.items():
        for sl, frames in enumerate(per_slice):
            for fr, area in enumerate(frames):
                rows.append({"subject": subject, "slice": sl, "frame": fr, "phase": None, "lv_area": area})
    return pd.DataFrame(rows)


def test_ed_es_are_largest_and_smallest_lv_area_summed_over_slices():
    # slice 0 alone would put ED at frame 0; the sum over slices puts it at frame 1
    index = find_phases(_index({"a": [[10, 8, 5, 7], [1, 9, 2, 3]]})).index
    assert index.loc[index["phase"] == "ED", "frame"].unique().tolist() == [1]
    assert index.loc[index["phase"] == "ES", "frame"].unique().tolist() == [2]
    assert (index["phase"] == "ED").sum() == 2  # every slice of that frame


def test_ties_go_to_the_earliest_frame():
    index = find_phases(_index({"a": [[5, 9, 9, 2, 2]]})).index
    assert index.loc[index["phase"] == "ED", "frame"].tolist() == [1]
    assert index.loc[index["phase"] == "ES", "frame"].tolist() == [3]


def test_subject_without_lv_pixels_is_named_in_a_warning_and_gets_no_phases():
    result = find_phases(_index({"ok": [[3, 1, 2]], "empty": [[0, 0, 0]]}))
    assert len(result.warnings) == 1 and "subject 'empty': no LV pixels in any labelled frame" in result.warnings[0]
    phases = result.index.groupby("subject")["phase"].apply(lambda p: sorted(p.dropna()))
    assert phases["ok"] == ["ED", "ES"] and phases["empty"] == []


def test_padding_keeps_the_aspect_ratio():
    labels = np.zeros((1, 1, 40, 80), np.uint8)
    labels[..., 10:30, 30:50] = 1  # a 20 x 20 square in a wide image
    images = labels.astype(np.float32)
    _, out = to_training_size(images, labels, 64)
    ys, xs = np.nonzero(out[0, 0] == 1)
    assert abs((ys.max() - ys.min()) - (xs.max() - xs.min())) <= 1  # still a square
    assert out.shape == (1, 1, 64, 64)


def test_shape_mismatch_is_a_data_error():
    with pytest.raises(DataError, match="differ in shape"):
        to_training_size(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)), 64)


def test_normalise_maps_percentiles_to_unit_range():
    rng = np.random.default_rng(0)
    base = rng.normal(100, 10, size=(32, 32))
    img = np.stack([base, 5 * base + 20, 0.1 * base])
    out = normalise(img)
    assert out.min() == 0 and out.max() == 1
    assert np.allclose(out[1], out[0], atol=1e-5) and np.allclose(out[2], out[0], atol=1e-5)  # per image


def test_index_stack_describes_every_image():
    labels = np.zeros((3, 4, 8, 8), np.uint8)
    labels[1, 2, :2, :2] = 1
    index = index_stack("s", labels, 1.25)
    assert len(index) == 12 and index["slice_pos"].tolist()[::4] == [0.0, 0.5, 1.0]
    assert index.loc[(index["slice"] == 1) & (index["frame"] == 2), "lv_area"].item() == 4
