from __future__ import annotations

import numpy as np

from harness.analysis import Options, analyse_images
from harness.reports.guideline import guideline
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


def test_strategies_that_select_the_same_images_are_named_as_one(tmp_path):
    """On ACDC-like data (only ED/ES labelled) ed_es, subject_random and slice_stratified choose the same
    images: the report must say so rather than compare them; a strategy that differs in one run is not named."""
    from types import SimpleNamespace

    from harness.analysis import identical_selections

    def run(strategy, seed, frames, n=2):
        folder = tmp_path / f"{strategy}-{seed}-{n}"
        folder.mkdir()
        (folder / "selection.csv").write_text("subject,slice,frame,phase\n" + "".join(
            f"s{seed},{k},{f},ED\n" for k in range(2) for f in frames))
        return SimpleNamespace(strategy=strategy, init="source", n=n, seed=seed, fold=0, folder=folder)

    specs = [run("base", 0, []),
             *(run(name, seed, (0, 9)) for name in ("ed_es", "subject_random", "slice_stratified") for seed in (0, 1)),
             run("all_frames", 0, (0, 9)), run("all_frames", 1, (0, 5, 9))]  # differs at seed 1
    store = SimpleNamespace(folder=lambda spec: spec.folder)
    (sentence,) = identical_selections(store, specs, ["source"])
    assert sentence.startswith("ed_es, slice_stratified and subject_random selected exactly the same training "
                               "images in all 2 runs they share") and "all_frames" not in sentence
    assert identical_selections(store, [s for s in specs if s.strategy in ("base", "ed_es", "all_frames")],
                                ["source"]) == []


def test_replication_probability_known_values():
    """Goodman (1992): a result exactly at α replicates with probability 1/2; p = 0.001 one-sided against
    α = 0.05 gives Φ((3.090 - 1.645) / √2) = 0.847; a 'not shown' at p = 0.9 repeats with 0.981."""
    import pytest

    from harness.reports.guideline import replication_probability

    assert replication_probability(0.05, 0.05) == pytest.approx(0.5)
    assert replication_probability(0.001, 0.05) == pytest.approx(0.8466, abs=1e-3)
    assert replication_probability(0.9, 0.05) == pytest.approx(0.9807, abs=1e-3)
    assert 0.5 < replication_probability(1.0, 0.05) <= 1.0 and 0.5 < replication_probability(0.0, 0.05) <= 1.0


def test_reference_dice_is_parsed_per_metric_and_bad_input_named():
    import pytest

    from harness.cli.report import parse_reference_dice
    from harness.errors import UsageError

    assert parse_reference_dice("LV=0.939,MY=0.813") == {"dice_lv": 0.939, "dice_my": 0.813}
    assert parse_reference_dice(None) == {} and parse_reference_dice("my=0.8") == {"dice_my": 0.8}
    for bad in ("RV=0.9", "LV=1.5", "LV=high", "LV"):
        with pytest.raises(UsageError, match="give METRIC=DICE pairs"):
            parse_reference_dice(bad)


HOSTILE = "<script>alert(1)</script>"
LINK = "[click](javascript:alert(1))|x"
TICKS = "``<img src=x onerror=alert(1)> `[a](javascript:alert(2))`"


def test_markdown_report_shows_hostile_strategy_and_subject_names_as_text(tmp_path):
    """Issue 19.6: a plug-in named like HTML, a subject named like a link with a table bar: report.md must
    show both as text (entities and escapes), keep every table's column count, and keep its own markup."""
    import re

    from harness.reports.render import write

    images = study(np.random.default_rng(5), {("all_frames", 5): 0.0, ("ed_es", 5): 0.01, ("few", 5): -0.05})
    images["strategy"] = images["strategy"].replace({"ed_es": HOSTILE, "few": TICKS})
    first = images["subject"].iloc[0]
    images["subject"] = images["subject"].replace({first: LINK + "\nline"})
    settings = {"kind": "table", "files": ["x.csv"], "rows": len(images), "set": None, "subject_from": "subject",
                "method_column": "strategy", "counts": False}
    analysis = analyse_images(images, settings, Options())
    md, _ = write(analysis, tmp_path, "Hostile names")
    text = md.read_text()
    assert not re.search(r"<[A-Za-z/!?]", text) and "](javascript" not in text  # not even in code spans
    assert "&lt;script>alert(1)&lt;/script>" in text  # shown as text by any markdown renderer
    assert "**" in text  # the report's own bold stays
    for table in re.findall(r"(?m)^(\|.*\|)\n\|(?:---\|)+\n((?:\|.*\|\n)+)", text):
        header, rows = table
        cells = len(re.findall(r"(?<!\\)\|", header))
        assert all(len(re.findall(r"(?<!\\)\|", row)) == cells for row in rows.splitlines()), header


def test_tuning_is_described_per_fold_and_a_0_6_tuning_is_named_as_leaky():
    from harness.reports.methods import tuned_lines

    part = {"params": {"lr_frozen": 0.001, "steps_frozen": 40}, "trials": 5, "value": 0.81, "default_value": 0.8}
    nested = tuned_lines({"tuned": {"ed_es__source__n2": {"metric": "both", "folds": {"0": part, "1": part}}}})
    assert "nested in the cross-validation" in nested[0] and "fold 1: 5 trials" in nested[0]
    old = tuned_lines({"tuned": {"ed_es__source__n2": {"params": {}, "validation_subjects": ["v01", "v02"]}}})
    assert "by cine-harness 0.6 on fold 0's validation subjects (v01, v02)" in old[0] and "saw their labels" in old[0]


def test_markdown_text_cannot_start_a_block_and_numbers_stay_plain():
    from harness.reports.render import _markdown

    assert _markdown("# heading") == "\\# heading" and _markdown("1. item") == "1\\. item"
    assert _markdown("```") == "\\```" and _markdown("- x") == "\\- x" and _markdown("> q") == "\\> q"
    assert _markdown("**ed_es**: p < 0.05, n = 5") == "**ed_es**: p < 0.05, n = 5"
    assert _markdown("+0.006", cell=True) == "+0.006" and _markdown("0.786 (0.7-0.8)") == "0.786 (0.7-0.8)"


def test_methods_say_how_random_init_and_the_plateau_rule_trained():
    from harness.reports.methods import fine_tuning_text
    from harness.train.settings import SCHEDULES, TrainSettings

    fast = {**TrainSettings().to_dict(), "schedule": "fast", **SCHEDULES["fast"]}
    assert "no frozen stage" in fine_tuning_text(fast, random_init=True)
    assert "one stage of all layers" in fine_tuning_text(fast, random_init=True)
    assert "one-cycle to 0.0003" in fine_tuning_text(fast, random_init=True)  # its one stage's rate: stage 2's
    assert "no frozen stage" not in fine_tuning_text(fast, random_init=False)
    plateau = {**TrainSettings().to_dict(), **SCHEDULES["plateau"]}
    text = fine_tuning_text(plateau, random_init=True)
    assert "no frozen stage" not in text and "multiplied the learning rate by 0.2" in text
    assert "constant learning rate" not in text
    fixed = fine_tuning_text({**plateau, "reductions": 0})
    assert "constant learning rate" in fixed and "multiplied" not in fixed and "training stopped there" in fixed
    unchecked = fine_tuning_text(plateau, checked=False)  # no validation subjects: no rule, no lowered rate
    assert "constant learning rate" in unchecked and "no convergence check ran" in unchecked
    assert "multiplied" not in unchecked
