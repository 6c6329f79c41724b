"""Known answers from the published 7T study's per-image confusion tables (../shared/data/cmr-seg-tl)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness import stats
from harness.cli import main
from harness.errors import UsageError
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


def _two_experts(tmp_path):
    """Methods scored against two experts' annotations (methodA WS / TR) and TR scored against WS, as the published
    confusion tables: per image Dice, TR agreeing with WS at about 0.9 (LV) and 0.8 (MY)."""
    rng = np.random.default_rng(8)
    rows = []
    for subject in range(10):
        for image in range(5):
            level = rng.normal(0, 0.03)
            name = f"{subject}_slice{image:03d}_frame000"
            rows.append((name, "WS", "TR", 0.9 + level, 0.8 + level))
            for expert, shift in (("WS", 0.0), ("TR", -0.02)):
                for method, gain in (("tuned", 0.0), ("other", -0.05), ("baseModel", -0.3)):
                    rows.append((name, expert, method, 0.88 + shift + gain + level + rng.normal(0, 0.01),
                                 0.78 + shift + gain + level + rng.normal(0, 0.01)))
    table = pd.DataFrame(rows, columns=["image", "methodA", "methodB", "dice_lv", "dice_my"])
    folder = tmp_path / "tables"
    folder.mkdir()
    for expert in ("WS", "TR"):
        table[(table["methodA"] == expert) & (table["methodB"] != "TR")].to_csv(folder / f"{expert}.csv", index=False)
    table[table["methodB"] == "TR"].to_csv(folder / "WS_TR.csv", index=False)
    return folder


def test_a_folder_scored_against_two_experts_is_one_analysis_per_reference_with_the_inter_observer_line(tmp_path):
    folder = _two_experts(tmp_path)
    table = read_results([folder], base="baseModel")
    assert table.description["reference_annotation"] == "WS"  # the one the second expert was scored against
    assert table.description["other_references"] == ["TR"] and table.description["inter_observer"] == "TR"
    assert set(table.images["strategy"]) == {"tuned", "other", "base"} and len(table.images) == 3 * 50
    assert set(table.others["TR"]["strategy"]) == {"tuned", "other", "base"}
    assert set(table.inter_observer["strategy"]) == {"TR"} and len(table.inter_observer) == 50
    assert read_results([folder], reference_annotation="TR").description["reference_annotation"] == "TR"
    with pytest.raises(UsageError, match="'XX' is not a reference of these files \\(TR, WS\\)"):
        read_results([folder], reference_annotation="XX")
    assert main(["analyze", str(folder), "--base", "baseModel", "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    inter = pd.read_csv(tmp_path / "out" / "tables" / "inter_observer.csv").set_index("metric")
    assert inter.loc["dice_lv", "mean"] == pytest.approx(0.9, abs=0.02)
    assert inter.loc["dice_my", "mean"] == pytest.approx(0.8, abs=0.02)
    versus = pd.read_csv(tmp_path / "out" / "tables" / "versus_observer.csv").set_index(["strategy", "metric"])
    assert versus.loc[("tuned", "dice_lv"), "share"] == pytest.approx(0.88 / 0.9, abs=0.02)
    assert versus.loc[("tuned", "dice_lv"), "difference"] == pytest.approx(-0.02, abs=0.01)
    assert (f"Inter-observer agreement (TR against WS, mean subject Dice over 10 test subjects): LV "
            f"{inter.loc['dice_lv', 'mean']:.3f}") in md
    assert "Share of the inter-observer Dice each method reaches" in md and "tuned: LV 98%" in md
    assert "Against reference annotation TR:" in md and "## Dice on the test subjects (against TR)" in md
    assert "dotted: the inter-observer agreement, TR against the main reference" in md
    assert "Reference annotation: WS; the methods against TR were analysed the same way, separately" in md
    against = pd.read_csv(tmp_path / "out" / "tables" / "against-TR" / "summary.csv").set_index(["strategy", "metric"])
    assert against.loc[("tuned", "dice_lv"), "mean"] == pytest.approx(0.86, abs=0.02)  # TR's own numbers


def test_analyze_on_the_published_folder_takes_the_first_expert_and_draws_the_second(tmp_path, capsys):
    """The whole folder as a new user gives it: the models against both experts and the second expert against the
    first (the issue's 'same image appears twice' stop)."""
    folder = shared(TABLES)
    assert main(["analyze", str(folder), "--reference", "doubleTransferLearn", "--base", "baseModel",
                 "--out", str(tmp_path / "pub")]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert "against scaled_masks (also analysed: scaled_masks_TR); inter-observer: scaled_masks_TR" in said
    md = (tmp_path / "pub" / "report.md").read_text()
    inter = pd.read_csv(tmp_path / "pub" / "tables" / "inter_observer.csv").set_index("metric")
    assert list(inter["subjects"]) == [3, 3]  # the 3 test volunteers, subject means of the second expert's Dice
    images = stats.with_dice(read_results([folder], base="baseModel").inter_observer)
    assert images["dice_lv"].mean() == pytest.approx(0.939, abs=5e-4)  # the published per-image means
    assert images["dice_my"].mean() == pytest.approx(0.813, abs=5e-4)
    assert "Inter-observer agreement (scaled_masks_TR against scaled_masks" in md
    assert "Against reference annotation scaled_masks_TR:" in md
