from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.errors import UsageError
from harness import evaluate
from harness.evaluate import dice, image_metrics, subject_metrics


def test_dice_known_values_and_empty_conventions():
    assert dice(5, 10, 10)[()] == pytest.approx(0.5)
    assert dice(0, 0, 0, "both-one")[()] == 1.0
    assert np.isnan(dice(0, 0, 0, "ignore")[()])
    assert dice(0, 4, 0, "both-one")[()] == 0.0 and dice(0, 0, 4, "ignore")[()] == 0.0
    with pytest.raises(UsageError, match="empty-mask convention"):
        dice(1, 1, 1, "zero")


def test_image_and_subject_metrics():
    ref = np.zeros((2, 4, 4), np.uint8)
    pred = np.zeros((2, 4, 4), np.uint8)
    ref[0, :2, :2] = 1          # 4 LV pixels
    pred[0, :2, :1] = 1         # 2 of them predicted
    ref[1, 0, 0] = 3            # RV is background for LV/MY Dice
    rows = pd.DataFrame({"subject": ["a", "a"], "slice": [0, 0], "frame": [0, 1], "phase": ["ED", None]})
    images = image_metrics(rows, pred, ref)
    assert images["dice_lv"].tolist() == pytest.approx([2 * 2 / 6, 1.0])
    assert images["dice_my"].tolist() == [1.0, 1.0]  # empty in both images
    per_subject = subject_metrics(images)
    assert per_subject.loc[0, "dice_lv"] == pytest.approx((4 / 6 + 1) / 2)
    assert per_subject.loc[0, "dice3d_lv"] == pytest.approx(4 / 6)
    assert per_subject.loc[0, "images"] == 2


def test_test_frames_keeps_ed_es_and_every_kth_frame_from_ed():
    rows = pd.DataFrame({"subject": ["a"] * 10 + ["b"] * 7, "slice": 0,
                         "frame": list(range(10)) + list(range(7)), "phase": None})
    rows.loc[4, "phase"], rows.loc[8, "phase"] = "ED", "ES"  # subject a: ED frame 4, ES frame 8
    assert evaluate.test_frames(rows, 1) is rows
    kept = evaluate.test_frames(rows, 3)
    assert kept[kept["subject"] == "a"]["frame"].tolist() == [1, 4, 7, 8]  # 4 - 3, ED, 4 + 3, ES
    assert kept[kept["subject"] == "b"]["frame"].tolist() == [0, 3, 6]  # no ED known: counted from frame 0
    with pytest.raises(UsageError, match="at least 1"):
        evaluate.test_frames(rows, 0)


def test_examples_pick_the_mid_ventricular_ed_slice_at_ed_and_es():
    rows = pd.DataFrame([{"subject": "a", "slice": s, "frame": f, "phase": ph}
                         for s in range(5) for f, ph in ((0, "ED"), (1, None), (3, "ES"))])
    ref = np.zeros((len(rows), 8, 8), np.uint8)
    ref[:, 2:5, 2:5] = 1
    ref[rows.index[(rows["slice"] == 4)], :, :] = 0  # apex without LV: not a candidate
    ref[:, 0, 0] = 3  # RV: not shown as a class
    pred = ref.copy()
    pixels = np.full((len(rows), 8, 8), 0.5, np.float16)
    metrics = image_metrics(rows, pred, ref)
    shown = evaluate.examples(metrics, pixels, pred, ref)
    assert shown["phase"].tolist() == ["ED", "ES"] and shown["slice"].tolist() == [2, 2]  # middle of slices 0-3
    assert shown["image"].dtype == np.uint8 and int(shown["image"].max()) == 128
    assert shown["ref"].max() == 1 and shown["subject"].tolist() == ["a", "a"]
