"""The ED/ES rule against the published 7T study's own answer (esed_frames.tsv)."""
from __future__ import annotations

import pandas as pd

from harness.data.dataset import find_phases
from tests.conftest import shared


def test_area_rule_reproduces_the_published_ed_es_frames():
    counts = pd.read_csv(shared("cmr-seg-tl", "pixel_counts_by_class.tsv"), sep="\t", dtype={"file": str})
    parts = counts["file"].str.extract(r"^(?P<subject>[^_]+)_slice(?P<slice>\d+)_frame(?P<frame>\d+)-mask\.png$")
    index = pd.DataFrame({"subject": parts["subject"], "slice": parts["slice"].astype(int),
                          "frame": parts["frame"].astype(int), "lv_area": counts["lv"]})
    published = pd.read_csv(shared("cmr-seg-tl", "esed_frames.tsv"), sep="\t", dtype={"Id": str}).set_index("Id")

    result = find_phases(index)
    phases = result.phases.set_index("subject")
    with_lv = [s for s in published.index if index.loc[index["subject"] == s, "lv_area"].sum() > 0]
    assert len(with_lv) >= 20
    for subject in with_lv:
        assert (phases.loc[subject, "ed"], phases.loc[subject, "es"]) == (
            published.loc[subject, "ed"], published.loc[subject, "es"]), subject
    no_lv = sorted(set(index["subject"]) - set(with_lv))
    assert no_lv == ["24"]
    assert any("subject '24': no LV pixels" in w for w in result.warnings)
    assert phases.loc["24", "source"] == "none" and not result.index.loc[index["subject"] == "24", "phase"].notna().any()
