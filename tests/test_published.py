"""Known answers from the published 7T study's per-image confusion tables (../shared/data/cmr-seg-tl)."""
from __future__ import annotations

import pytest

from harness import stats
from harness.cli import main
from harness.results import read_results
from tests.conftest import shared

TABLES = "cmr-seg-tl/confusion_tables"
FILES = {"all_frames": "confusion_WS_doubleTransferLearn.tsv", "ed_es": "confusion_WS_doubleTL-esed.tsv",
         "base": "confusion_WS_base.tsv", "second_expert": "confusion_WS_TR.tsv"}


@pytest.fixture(scope="module")
def published():
    folder = shared(TABLES)
    table = read_results([folder / f for f in FILES.values()], base="baseModel")
    return stats.with_dice(table.images)


def test_per_image_means_are_the_published_numbers(published):
    means = published.groupby("strategy")[["dice_lv", "dice_my"]].mean().round(3)
    assert means.loc["doubleTransferLearn"].tolist() == [0.900, 0.791]
    assert means.loc["doubleTransferLearn_esed"].tolist() == [0.908, 0.805]
    assert means.loc["base"].tolist() == [0.835, 0.670]
    assert means.loc["scaled_masks_TR"].tolist() == [0.939, 0.813]
    assert published.groupby("strategy").size().unique().tolist() == [955]
    assert sorted(published["subject"].unique()) == ["26", "27", "28"]


def test_image_level_wilcoxon_equals_r(published):
    """R 4.2.2: wilcox.test(esed, all, paired = TRUE) on the 955 test images (exact = NULL picks the normal
    approximation with continuity correction because of ties and zeros)."""
    wide = published.pivot_table(index="image", columns="strategy", values=["dice_lv", "dice_my"])
    r_results = {"dice_lv": (147705, 4.9778932594396473e-05), "dice_my": (151160, 4.265064923137357e-05)}
    for metric, (v, p) in r_results.items():
        d = (wide[(metric, "doubleTransferLearn_esed")] - wide[(metric, "doubleTransferLearn")]).to_numpy()
        result = stats.image_level_wilcoxon(d)
        assert result["V"] == v
        assert result["p"] == pytest.approx(p, rel=1e-9)


def test_subject_level_noninferiority_of_ed_es_is_the_published_weak_verdict(published):
    scores = stats.subject_scores(published)
    for metric, p in (("dice_lv", 0.051), ("dice_my", 0.035)):
        table = stats.noninferiority_table(scores, metric, ("doubleTransferLearn", 0), margin=0.02)
        row = table.set_index("strategy").loc["doubleTransferLearn_esed"]
        assert round(row["p"], 3) == p and row["subjects"] == 3
        # CONSORT: the 90% interval reaches beyond the margin exactly when p >= 0.05
        assert (row["ci_low"] < -0.02) == (row["p"] >= 0.05) and row["ci_level"] == 0.90


def test_analyze_command_writes_the_verdict_and_why_it_is_weak(tmp_path, capsys):
    folder = shared(TABLES)
    out = tmp_path / "report"
    code = main(["analyze", *(str(folder / f) for f in FILES.values()), "--reference", "doubleTransferLearn",
                 "--base", "baseModel", "--out", str(out)])
    assert code == 0
    text = (out / "report.md").read_text()
    # three test subjects are too few for a guideline: the report says so instead of issuing one, and the
    # non-inferiority table still shows the published weak verdict
    assert "**No guideline from this study**: it has 3 test subject(s), and at least 6 are needed" in text
    assert "is non-inferior to" not in text
    assert ("| doubleTransferLearn_esed | 0 | doubleTransferLearn@0 | LV | +0.006 | -0.020 to 0.033 | 3 | 0.0507 "
            "| 0.1385 | not shown |") in text
    assert "scaled_masks_TR against the base model: LV +0.105 (95% CI 0.061 to 0.149), better in 3 of 3" in text
    assert "Only 3 test subjects: a rank or sign-flip test over subjects cannot reach p < 0.250" in text
    assert "| doubleTransferLearn | 0 | 0.900 (955) | 0.791 (955) |" in text
    assert "Image level (descriptive only)" in text and (out / "report.html").exists()
    assert (out / "tables" / "noninferiority.csv").exists()


def test_analyze_names_the_missing_columns(tmp_path):
    bad = tmp_path / "results.csv"
    bad.write_text("image,method,score\n1_slice001_frame001,a,0.9\n")
    from harness.errors import DataError

    with pytest.raises(DataError, match="needs Dice columns dice_lv and dice_my, or confusion counts"):
        read_results([bad])
    assert main(["analyze", str(bad), "--out", str(tmp_path / "o")]) == 2


def test_analyze_reads_every_table_in_a_folder(tmp_path):
    """A folder stands for the CSV/TSV files directly in it (the published tables' layout)."""
    from harness.errors import UsageError

    folder = tmp_path / "tables"
    folder.mkdir()
    rows = "".join(f"{s}_slice001_frame00{f},{m},{0.9 - f / 100},{0.8}\n" for s in (1, 2) for f in (1, 2)
                   for m in ("a",))
    (folder / "a.csv").write_text("image,method,dice_lv,dice_my\n" + rows)
    (folder / "b.tsv").write_text("image\tmethod\tdice_lv\tdice_my\n" + rows.replace(",a,", ",b,").replace(",", "\t"))
    (folder / "notes.txt").write_text("not a table")
    table = read_results([folder])
    assert sorted(table.images["strategy"].unique()) == ["a", "b"] and len(table.images) == 8
    assert table.description["files"] == ["a.csv", "b.tsv"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="holds no .csv, .tsv or .tab files"):
        read_results([empty])
    with pytest.raises(UsageError, match="'.*missing' does not exist"):
        read_results([tmp_path / "missing"])
    assert main(["analyze", str(folder), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "Per-image segmentation results (a.csv, b.tsv; 8 images of 2 test subjects)" in md
