"""Every run's training record (issue 30.1): train.csv beside its results, in status.json, `harness status
--json`, `harness.open_study(...).training` and the report; a study written before 0.9 still reads."""
from __future__ import annotations

import json

import pandas as pd
import pytest

import harness
from harness.cli import main
from harness.store import TRAINING_COLUMNS

# the plateau schedule (the default) on a study small enough for seconds: one split, the cap at 2 checks
TINY_PLATEAU = ["--executor", "inprocess", "--size", "64", "--pretrain-steps", "4", "--target-subjects", "6",
                "--source-subjects", "3", "--test-subjects", "2", "--val-subjects", "1", "--seeds", "1",
                "--folds", "1", "--max-checks", "2", "--strategy", "ed_es", "--n", "1,2"]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("record") / "study"
    cache = tmp_path_factory.mktemp("record-cache")
    assert main(["run", *TINY_PLATEAU, "--out", str(out), "--cache-dir", str(cache)]) == 0
    return out


@pytest.mark.slow
def test_every_fine_tune_writes_its_training_record_and_the_api_gives_it(tiny_study, capsys):
    fine_tuned = [p for p in (tiny_study / "runs").iterdir() if p.is_dir() and not p.name.startswith("base__")]
    assert len(fine_tuned) == 2
    for folder in fine_tuned:
        record = pd.read_csv(folder / "train.csv")
        status = json.loads((folder / "status.json").read_text())
        assert list(record.columns) == TRAINING_COLUMNS and "train.csv" in status["files"]  # checksummed
        assert record["step"].iloc[0] == 0 and record["val_score"].notna().all()  # the start is a check
        assert record["kept"].sum() == 1
        train = status["train"]
        assert train["stop_reason"] in ("plateau", "cap") and train["converged"] == (train["stop_reason"] == "plateau")
        assert train["steps_run"] == record["step"].iloc[-1] and train["kept_step"] == record.loc[record["kept"], "step"].item()
        assert len(record) <= 1 + 2  # the cap of 2 checks
        cost = status["validation_cost"]
        assert cost["images"] > 0 and cost["minutes"] > 0  # the validation labels are counted
    results = harness.open_study(tiny_study)
    training = results.training
    assert set(training["run"]) == {f.name for f in fine_tuned}
    assert {"run", "strategy", "init", "n", "seed", "fold", *TRAINING_COLUMNS} <= set(training.columns)
    runs = results.runs.set_index("run")
    for name, part in training.groupby("run"):
        assert runs.loc[name, "kept_step"] == part.loc[part["kept"].astype(bool), "step"].item()
        assert runs.loc[name, "steps"] == part["step"].max() and runs.loc[name, "validation_images"] > 0
    assert runs.loc[[n for n in runs.index if n.startswith("base__")], "steps"].isna().all()
    capsys.readouterr()
    assert main(["status", str(tiny_study), "--json"]) == 0
    rows = {r["run"]: r for r in json.loads(capsys.readouterr().out)}
    for folder in fine_tuned:
        assert {"steps", "epochs", "stop_reason", "converged"} <= set(rows[folder.name])
    md = (tiny_study / "report.md").read_text()
    assert "training_curves.png" in md and (tiny_study / "tables" / "training.csv").exists()
    assert "| steps | epochs | stopped | converged |" in md
    assert "Validation labels: 1 subjects per fold" in md and "max(5, 0.5 × the checks" in md
    images = runs["validation_images"].dropna().median()
    assert f"Not in these columns: every run's validation labels, {images:.0f} validation images" in md  # cost table


@pytest.mark.slow
def test_a_study_written_before_the_training_record_still_reads(tiny_study, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(tiny_study, old)
    for folder in (old / "runs").iterdir():
        status_path = folder / "status.json"
        status = json.loads(status_path.read_text())
        (folder / "train.csv").unlink(missing_ok=True)
        status["files"].pop("train.csv", None)
        status.pop("validation_cost", None)
        if "train" in status:  # what 0.8 recorded: steps per stage, epochs, losses, checks
            status["train"] = {"steps": [50, 50], "epochs": 10.0, "loss_frozen": 0.1, "loss_unfrozen": 0.05,
                               "checks": [], "selected_step": 100, "precision": "bf16"}
        status_path.write_text(json.dumps(status))
    results = harness.open_study(old)
    assert results.training.empty and list(results.training.columns)[:6] == ["run", "strategy", "init", "n", "seed",
                                                                            "fold"]
    tuned = results.runs[results.runs["strategy"] != "base"]
    assert (tuned["steps"] == 100).all() and tuned["converged"].isna().all()
    assert (tuned["stop_reason"] == "schedule").all()
    assert main(["report", str(old)]) == 0
    md = (old / "report.md").read_text()
    assert "No convergence check ran" in md and "training_curves.png" not in md


@pytest.mark.slow
def test_a_study_without_validation_subjects_runs_and_says_no_convergence_check_ran(tmp_path, cache):
    out = tmp_path / "noval"
    args = list(TINY_PLATEAU)
    del args[args.index("--max-checks"):args.index("--max-checks") + 2]  # the fast schedule has no rule
    args[args.index("--val-subjects") + 1] = "0"
    assert main(["run", *args, "--schedule", "fast", "--steps", "2", "--out", str(out), "--cache-dir", str(cache)]) == 0
    results = harness.open_study(out)
    tuned = results.runs[results.runs["strategy"] != "base"]
    assert tuned["converged"].isna().all() and tuned["validation_images"].isna().all()
    assert results.training["val_score"].isna().all() and results.training["loss"].notna().any()
    md = (out / "report.md").read_text()
    assert "No convergence check ran: the runs have no validation subjects (--val-subjects 0)" in md
    assert "training_curves.png" in md  # the losses are drawn; no validation curve


def test_bad_training_options_are_one_line(tmp_path, capsys):
    for args, message in ((["--min-delta", "1.5"], "minimum improvement 1.5 must lie in [0, 1)"),
                          (["--patience", "0"], "must be at least 1"),
                          (["--val-subjects", "-1"], "--val-subjects -1: give 0 (no convergence check) or more"),
                          (["--schedule", "fast", "--select", "best-val", "--val-subjects", "0"],
                           "--select best-val needs validation subjects, but --val-subjects is 0"),
                          (["--val-subjects", "0", "--patience", "3", "--select", "best-val"],
                           "--patience, --select best-val: the stopping rule reads validation Dice, but --val-subjects "
                           "is 0")):
        assert main(["run", *TINY_PLATEAU[:2], "--out", str(tmp_path / "x"), *args]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_rule_whose_phases_cannot_fit_in_its_cap_is_warned_before_any_work(tmp_path):
    from harness.grid import StudySettings
    from harness.progress import Reporter
    from harness.runner import Study
    from harness.train.settings import TrainSettings

    class Warnings(Reporter):
        def __init__(self):
            self.seen: list[str] = []

        def warn(self, text: str) -> None:
            self.seen.append(text)

    # each phase of the rule lasts at least the patience: 3 phases (2 reductions) of 5 need 15 checks
    for reductions, cap, warned in ((2, 14, True), (2, 15, False), (0, 4, True), (0, 5, False)):
        reporter = Warnings()
        Study(StudySettings(train=TrainSettings(patience=5, max_checks=cap, reductions=reductions)), None, reporter,
              tmp_path)
        assert any("no run can stop on a plateau" in w for w in reporter.seen) == warned, reporter.seen
