from __future__ import annotations

import numpy as np

from reports.render import Options, analyse_images, guideline
from tests.simulation import study


def test_guideline_says_which_metric_stopped_the_sequence_and_which_was_never_tested():
    images = study(np.random.default_rng(3), {("all_frames", 10): 0.0, ("ed_es", 5): 0.03, ("ed_es", 10): 0.03,
                                              ("few", 5): -0.1, ("few", 10): -0.1})
    images.loc[images["strategy"] == "ed_es", "dice_my"] = np.nan  # as where myocardium was not contoured
    analysis = analyse_images(images, {"kind": "table"}, Options())
    sentences = guideline(analysis)
    ed_es = next(s for s in sentences if s.startswith("**ed_es**"))
    assert "No budget studied was non-inferior to all_frames at n = 10 on both LV and MY within margin 0.02" in ed_es
    assert "LV was non-inferior down to n = 5 (difference +0.0" in ed_es and "90% CI" in ed_es
    assert "MY could not be tested at n = 10: no test subject has a score on both sides" in ed_es
    few = next(s for s in sentences if s.startswith("**few**"))
    assert "LV was not shown non-inferior at n = 10 (difference -0.0" in few
    assert "MY was not shown non-inferior at n = 10 (difference -0.0" in few
