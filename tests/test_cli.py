from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from harness import registry, runner
from harness.cli import main
from harness.cost import CONTOURS
from harness.data.phantom import LABEL_LV, SLICE_THICKNESS_MM, generate_subject
from harness.analysis import analyse
from tests.conftest import TINY_RUN


def test_unknown_strategy_is_one_line_with_a_suggestion(capsys):
    assert main(["run", "--strategy", "ed_es,slice_stratifed"]) == 2
    err = capsys.readouterr().err
    assert "unknown strategy 'slice_stratifed'; did you mean 'slice_stratified'?" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("value", ["2,x", "0,5", "", "2;5"])
def test_malformed_n(capsys, value):
    assert main(["run", "--n", value]) == 2
    assert f"--n '{value}' is not a comma list of positive whole numbers" in capsys.readouterr().err


@pytest.fixture
def made(monkeypatch):
    """Records any phantom generation, so a test can show an error came before any work."""
    calls = []
    monkeypatch.setattr(runner, "phantom_dataset", lambda *a, **k: calls.append(a) or pytest.fail("data was made"))
    return calls


def test_n_larger_than_pool_fails_before_any_work(capsys, made):
    assert main(["run", "--n", "2,15"]) == 2
    assert "--n 15 is larger than the training pool of 14 subjects" in capsys.readouterr().err
    assert made == []


def test_unwritable_out(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["run", "--out", str(blocker / "study")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write study folder '{blocker / 'study'}'" in err and "choose another --out" in err


def test_debug_shows_the_traceback():
    with pytest.raises(Exception, match="unknown strategy"):
        main(["--debug", "run", "--strategy", "nope"])


def test_offline_imagenet_weights_fail_fast(capsys, tmp_path, made, monkeypatch):
    import segmentation_models_pytorch as smp

    monkeypatch.setattr(smp, "Unet", lambda *a, **k: pytest.fail("smp tried to build (and download) the model"))
    assert main(["pretrain", "--encoder-weights", "imagenet", "--cache-dir", str(tmp_path), "--size", "64"]) == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err
    assert made == []  # checked before any data is made, and no download is tried


def test_subprocess_error_has_no_traceback_and_nonzero_exit():
    result = subprocess.run([sys.executable, "-m", "harness", "run", "--strategy", "nope"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown strategy 'nope'" in result.stderr


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "s"
    cache = tmp_path_factory.getbasetemp() / "cache"
    args = ["run", "--strategy", "ed_es,subject_random", "--n", "1,2", "--out", str(out),
            "--cache-dir", str(cache), *TINY_RUN]
    return out, args, main(args)


@pytest.mark.slow
def test_study_writes_every_run_and_the_reports(tiny_study):
    out, _, code = tiny_study
    assert code == 0
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert len(runs) == 1 + 2 * 2 * 2  # base + strategies x n x seeds
    study = json.loads((out / "study.json").read_text())
    assert study["pool_views"] == {} and study["selection_models"] == {}  # no model-aware strategy: no view made
    assert study["strategy_uses"] == {"ed_es": ["labels"], "subject_random": []}
    specs = {name: json.loads((out / "runs" / name / "spec.json").read_text()) for name in runs}
    for name, spec in specs.items():
        assert set(spec["streams"]) == {"subset", "select", "init", "order", "augment"}
        status = json.loads((out / "runs" / name / "status.json").read_text())
        selection = pd.read_csv(out / "runs" / name / "selection.csv")
        assert status["cost"]["images"] == len(selection)  # every run records its cost
        if len(selection):
            assert status["cost"]["minutes"] == pytest.approx(CONTOURS.total(selection), abs=1e-3)
        assert name.startswith(f"{spec['strategy']}__{spec['init']}__n{spec['n']}__s{spec['seed']}__f0__")
        status = json.loads((out / "runs" / name / "status.json").read_text())
        assert status["state"] == "done"
        images = pd.read_csv(out / "runs" / name / "images.csv")
        assert set(images["subject"]) == set(study["split"]["test"])
        subjects = pd.read_csv(out / "runs" / name / "subjects.csv")
        assert sorted(subjects["subject"]) == sorted(study["split"]["test"])
        assert subjects["dice3d_lv"].between(0, 1).all() and (subjects["images"] > 0).all()
        selection = pd.read_csv(out / "runs" / name / "selection.csv")
        held_out = set(study["split"]["test"]) | set(study["split"]["validation"])
        assert not set(selection["subject"]) & held_out
    # the phantom's test images: ED, ES and every 3rd frame from ED, the same for every run
    assert study["test_stride"] == 3
    for name in runs:
        images = pd.read_csv(out / "runs" / name / "images.csv")
        for _, subject in images.groupby("subject"):
            ed = subject.loc[subject["phase"] == "ED", "frame"].iloc[0]
            off_cycle = subject[subject["phase"].isna() & ((subject["frame"] - ed) % 3 != 0)]
            assert len(off_cycle) == 0 and subject["phase"].notna().sum() >= 2
    # every image's and every subject's Dice beside the report
    per_image = pd.read_csv(out / "tables" / "images.csv")
    assert len(per_image) == sum(len(pd.read_csv(out / "runs" / n / "images.csv")) for n in runs)
    per_subject = pd.read_csv(out / "tables" / "subjects.csv")
    assert len(per_subject) == len(runs) * len(study["split"]["test"])
    assert {"strategy", "n", "seed", "fold", "subject", "dice_lv", "dice_my"} <= set(per_subject)
    md = (out / "report.md").read_text()
    assert "How much target data is enough" in md and "source-only base model" in md
    assert "over ED, ES and every 3rd frame of the cycle" in md and "`tables/images.csv`" in md
    # every run in the run table, with where it ran, its Dice and the software that computed it then
    run_rows = pd.read_csv(out / "tables" / "runs.csv")
    assert sorted(run_rows["run"]) == runs and (run_rows["state"] == "done").all()
    assert run_rows["dice_lv"].between(0, 1).all() and (run_rows["seconds"] > 0).all()
    assert (run_rows["seconds"] == run_rows["seconds"].round(1)).all()
    # no float artefacts (0.30000000000000004) in any table beside the report: at most 10 significant digits
    for table in (out / "tables").glob("*.csv"):
        for number in re.findall(r"\b\d+\.\d+", table.read_text()):
            assert len(number.replace(".", "").lstrip("0")) <= 10, (table.name, number)
    assert run_rows["software"].str.startswith("cine-harness ").all() and "## Runs" in md
    assert "Software, as recorded by the runs when they ran: cine-harness" in md
    # overlays of the best, median and worst test subject, from the runs' examples.npz
    assert (out / "examples.png").stat().st_size > 5000 and "Test images of the best, median and worst" in md
    with np.load(out / "runs" / runs[-1] / "examples.npz") as shown:
        assert set(shown["phase"]) == {"ED", "ES"} and shown["image"].dtype == np.uint8
        assert set(shown["subject"]) == set(study["split"]["test"])
    methods = md.split("## Methods (ready to paste)\n\n")[1].split("\n")[0]
    assert methods.startswith("We studied how many labelled subjects fine-tuning needs on the built-in synthetic")
    for part in ("n = 1, 2 subjects", "strategies ed_es, subject_random", "Holm's correction", "Software, as recorded by the runs: "
                 "cine-harness", f"`{study['dataset']}`", "ED, ES and every 3rd frame"):
        assert part in methods, part
    # 2 test subjects: no guideline, said first; the tables still show every configuration
    assert "**No guideline from this study**: it has 2 test subject(s)" in md and "| ed_es (oracle) | 2 |" in md
    assert " nan " not in md and "| base | 1 |" not in md  # no empty strategy x n rows
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "http" not in html.replace("http-equiv", "")


@pytest.mark.slow
def test_subjects_are_paired_across_strategies_and_nested_across_n(tiny_study):
    out, _, _ = tiny_study
    chosen = {}
    for folder in (out / "runs").iterdir():
        spec = json.loads((folder / "spec.json").read_text())
        if spec["strategy"] != "base":
            chosen[spec["strategy"], spec["n"], spec["seed"]] = set(pd.read_csv(folder / "selection.csv")["subject"])
    for seed in (0, 1):
        assert chosen["ed_es", 1, seed] == chosen["subject_random", 1, seed]
        assert chosen["ed_es", 2, seed] == chosen["subject_random", 2, seed]
        assert chosen["ed_es", 1, seed] < chosen["ed_es", 2, seed]
    assert chosen["ed_es", 2, 0] != chosen["ed_es", 2, 1] or chosen["ed_es", 1, 0] != chosen["ed_es", 1, 1]


@pytest.mark.slow
def test_volumes_and_ejection_fraction_come_out_of_a_study(tiny_study):
    """The runner records each test subject's voxel volume, so EDV/ESV/EF and their errors reach the report;
    the reference volumes agree with the phantom's own labels at full resolution (not just "a number")."""
    out, _, _ = tiny_study
    study = json.loads((out / "study.json").read_text())
    images = pd.concat([pd.read_csv(f / "images.csv").assign(run=f.name) for f in (out / "runs").iterdir()])
    assert images["voxel_ml"].notna().all()
    for subject in study["split"]["test"]:
        phantom = generate_subject(study["data_seed"], "target", int(subject.split("-")[1]))
        truth = (phantom.labels == LABEL_LV).sum(axis=(0, 2, 3)) * phantom.spacing_mm ** 2 * SLICE_THICKNESS_MM / 1000
        rows = images[(images["subject"] == subject) & (images["run"] == images["run"].iloc[0])]
        measured = rows.groupby("phase")["lv_ref"].sum() * rows["voxel_ml"].iloc[0]
        assert measured["ED"] == pytest.approx(truth.max(), rel=0.05)
        assert measured["ES"] == pytest.approx(truth.min(), rel=0.08)
    analysis = analyse(out)
    ef = analysis.extra[analysis.extra["metric"] == "ef_error_pct"]
    assert len(ef) == 5 and ef["mean"].between(0, 100).all()  # base + 2 strategies x 2 budgets
    assert analysis.reference_volumes["ef_ref_pct"].between(30, 80).all()
    md = (out / "report.md").read_text()
    assert "| ed_es (oracle) | 2 | EF absolute error (%-points) |" in md and "Reference (manual) values over the 2 test subjects" in md


@pytest.mark.slow
def test_a_notebook_gets_the_runs_tables_and_the_report_s_analysis_from_open_study(tiny_study):
    import harness

    out, _, _ = tiny_study
    results = harness.open_study(out)
    assert len(results.runs) == 9 and set(results.runs["state"]) == {"done"}
    assert set(results.runs["strategy"]) == {"base", "ed_es (oracle)", "subject_random"}
    analysis = results.analysis()
    pd.testing.assert_frame_equal(results.subjects.reset_index(drop=True), analysis.subjects.reset_index(drop=True))
    pd.testing.assert_frame_equal(results.images.reset_index(drop=True), analysis.images.reset_index(drop=True))
    written = pd.read_csv(out / "tables" / "summary.csv")
    assert np.allclose(analysis.tables()["summary"]["mean"], written["mean"], rtol=1e-8)
    runs = pd.read_csv(out / "tables" / "runs.csv")
    assert sorted(runs["run"]) == sorted(results.runs["run"])
    # the report's figure of mean Dice against n, from the API in a few lines (docs/notebooks.md shows it)
    summary = analysis.summary[analysis.summary["metric"] == "dice_lv"]
    curve = summary.pivot(index="n", columns="strategy", values="mean")
    assert list(curve.index) == [1, 2] and set(curve.columns) == {"ed_es (oracle)", "subject_random"}


@pytest.mark.slow
def test_second_identical_command_resumes_and_redoes_only_missing_runs(tiny_study, capsys):
    out, args, _ = tiny_study
    capsys.readouterr()
    assert main(args) == 0
    assert "0 runs done, 9 already finished, 0 failed" in capsys.readouterr().err
    victim = next(p for p in (out / "runs").iterdir() if p.name.startswith("ed_es__source__n2__s1"))
    (victim / "status.json").unlink()  # as if the process died while writing it
    assert main(args) == 0
    assert "1 runs done, 8 already finished" in capsys.readouterr().err


@pytest.mark.slow
def test_a_failing_run_is_recorded_and_the_grid_goes_on(monkeypatch, tmp_path, capsys, cache):
    real = registry.discover()
    fake = registry.StrategyEntry("fails_at_two", "tests", "tests.fake_strategies:FailsAtTwoStrategy")
    monkeypatch.setattr(registry, "discover", lambda: {**real, "fails_at_two": fake})
    out = tmp_path / "s"
    code = main(["run", "--strategy", "fails_at_two", "--n", "1,2", "--out", str(out),
                 "--cache-dir", str(cache), *TINY_RUN])
    assert code == 1
    err = capsys.readouterr().err
    assert "3 runs done" in err and "2 failed" in err and "this strategy refuses n=2" in err
    failed = [json.loads(p.read_text()) for p in (out / "runs").glob("*n2*/status.json")]
    assert [f["state"] for f in failed] == ["failed", "failed"]
    assert "this strategy refuses n=2" in (out / "report.md").read_text()


@pytest.mark.slow
def test_cross_validation_tests_every_subject_once_and_keeps_validation_on_the_training_side(tmp_path, cache):
    out = tmp_path / "cv"
    args = ["run", "--strategy", "ed_es", "--n", "1", "--out", str(out), "--cache-dir", str(cache),
            *TINY_RUN[:-2], "--folds", "3", "--seeds", "1", "--val-subjects", "1"]
    assert main(args) == 0
    study = json.loads((out / "study.json").read_text())
    splits = study["splits"]
    tested = [s for split in splits for s in split["test"]]
    assert sorted(tested) == sorted(set(tested)) and len(tested) == 6  # every subject exactly once
    for split in splits:
        assert not set(split["validation"]) & set(split["test"])
        assert not set(split["pool"]) & (set(split["test"]) | set(split["validation"]))
    validation = [s for split in splits for s in split["validation"]]
    assert len(validation) == 3 and len(set(validation)) == 3  # no two folds share a validation subject
    runs = [json.loads(p.read_text()) for p in (out / "runs").glob("*/spec.json")]
    assert sorted((r["strategy"], r["fold"]) for r in runs) == sorted(
        [("base", f) for f in range(3)] + [("ed_es", f) for f in range(3)])
    for folder in (out / "runs").iterdir():
        spec = json.loads((folder / "spec.json").read_text())
        images = pd.read_csv(folder / "images.csv")
        assert set(images["subject"]) == set(splits[spec["fold"]]["test"])
        selection = pd.read_csv(folder / "selection.csv")
        assert set(selection["subject"]) <= set(splits[spec["fold"]]["pool"])
    md = (out / "report.md").read_text()
    assert "Cross-validation over subjects, 3 folds" in md


@pytest.mark.slow
def test_quiet_logs_plain_lines_and_json_prints_the_verdicts(tiny_study, capsys):
    """The same command again with --quiet --json: timestamped lines without live bars on stderr, and on
    stdout one JSON object with the outcome, the report paths and every non-inferiority verdict."""
    out, args, _ = tiny_study
    capsys.readouterr()
    assert main([*args, "--quiet", "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["done"] == 0 and summary["already_finished"] == 9 and summary["failed"] == []
    assert summary["report_md"] == str(out / "report.md")
    verdicts = pd.read_csv(out / "tables" / "noninferiority.csv")
    assert len(summary["noninferiority"]) == len(verdicts) > 0
    assert {v["metric"] for v in summary["noninferiority"]} == {"dice_lv", "dice_my"}
    assert "ETA" not in captured.err and "Mean subject Dice (95% CI)" in captured.err


def test_phantom_and_real_data_get_their_own_defaults_for_steps_and_test_frames():
    """The default schedule is the plateau rule everywhere; the fast schedule's phantom default is smaller
    (50 + 50 steps) than real data's 100 + 100; the phantom scores every 3rd test frame, real data every
    labelled one; flags win over all."""
    from harness.cli import parser
    from harness.cli.run import stride_from, training_overrides
    from harness.errors import UsageError
    from harness.train.settings import TrainSettings

    phantom = parser().parse_args(["run"])
    real = parser().parse_args(["run", "--data", "/data/my7T"])
    def settings(args) -> TrainSettings:  # what a run gets: the defaults with the overrides in place (settings_from)
        return dataclasses.replace(TrainSettings(), **training_overrides(args))

    default = settings(phantom)
    assert (default.schedule, default.select, default.lr_unfrozen) == ("plateau", "best-val", 1e-3)
    assert "steps_frozen" not in training_overrides(phantom) and stride_from(phantom) == 3
    # the plateau schedule trains under a quarter of the published augmentation; fast and paper keep it all
    assert (default.rotate_deg, default.zoom, default.brightness, default.contrast) == (22.5, 1.05, 0.1, 0.1)
    for schedule in ("paper", "fast"):
        published = settings(parser().parse_args(["run", "--schedule", schedule]))
        assert (published.rotate_deg, published.zoom, published.brightness, published.contrast) == (90.0, 1.2, 0.4, 0.4)
    fast = parser().parse_args(["run", "--schedule", "fast"])
    assert training_overrides(fast)["steps_frozen"] == 50 and training_overrides(fast)["select"] == "last"
    fast_real = parser().parse_args(["run", "--schedule", "fast", "--data", "/data/my7T"])
    assert "steps_frozen" not in training_overrides(fast_real) and TrainSettings().steps_frozen == 100
    assert stride_from(real) == 1
    given = parser().parse_args(["run", "--schedule", "fast", "--steps", "7", "--test-stride", "2"])
    assert training_overrides(given)["steps_unfrozen"] == 7 and stride_from(given) == 2
    with pytest.raises(UsageError, match="--test-stride 0"):
        stride_from(parser().parse_args(["run", "--test-stride", "0"]))


def test_stopping_rule_flags_are_checked_and_belong_to_the_plateau_schedule():
    from harness.cli import parser
    from harness.cli.run import training_overrides
    from harness.errors import UsageError

    doubled = training_overrides(parser().parse_args(["run", "--patience", "10", "--patience-fraction", "1",
                                                      "--max-checks", "80"]))
    assert (doubled["patience"], doubled["patience_fraction"], doubled["max_checks"]) == (10, 1.0, 80)
    with pytest.raises(UsageError, match="patience fraction -1 must lie in"):
        training_overrides(parser().parse_args(["run", "--patience-fraction", "-1"]))
    with pytest.raises(UsageError, match="--patience belongs to the stopping rule of --schedule plateau"):
        training_overrides(parser().parse_args(["run", "--schedule", "paper", "--patience", "3"]))
    with pytest.raises(UsageError, match="stopping rule .* must be at least 1"):
        training_overrides(parser().parse_args(["run", "--max-checks", "0"]))
    assert training_overrides(parser().parse_args(["run", "--steps", "10"]))["schedule"] == "fast"  # --steps: fast
    with pytest.raises(UsageError, match="--steps sets the fast schedule's steps; leave out --schedule plateau"):
        training_overrides(parser().parse_args(["run", "--schedule", "plateau", "--steps", "10"]))


def test_slurm_missing_from_path_is_one_line(capsys, monkeypatch, tmp_path):
    """Issue 19.6: without sbatch/srun on PATH (CI installs SLURM; it is hidden here) one line, no traceback."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["run", "--executor", "slurm", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "--executor slurm: SLURM was not found on this machine (sbatch and srun not on PATH)" in err
    assert "--executor local" in err


@pytest.mark.parametrize("option, message", [
    ("qos=short\n#SBATCH --output=/etc/x", "values one line (no newline)"),
    ("output=/tmp/elsewhere", "--slurm-option output: the harness sets it"),
    ("--error=/tmp/x", "--slurm-option error: the harness sets it"),
    ("outp=/tmp/x", "--slurm-option outp: the harness sets it"),  # sbatch takes a beginning of --output too
    ("a b=c", "keys are letters, digits, - and _"),
])
def test_slurm_options_that_would_change_the_job_script_are_refused(capsys, tmp_path, option, message):
    assert main(["run", "--executor", "slurm", f"--slurm-option={option}", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_paths_that_look_like_rich_markup_are_printed_as_text(capsys, tmp_path):
    """Issue 19.6: a data folder named '[/b]' raised rich's MarkupError."""
    from io import StringIO

    from rich.console import Console

    from harness.cli.console import RichReporter
    from tests.test_png import _write

    folder = tmp_path / "data[/b][red]x"
    folder.mkdir(parents=True)
    _write(folder, subject="26", frames=[0, 1, 2])
    assert main(["data", "inspect", str(folder)]) == 0
    assert "data[/b][red]x" in capsys.readouterr().err.replace("\n", "")
    out = StringIO()
    RichReporter(Console(file=out, width=200)).say(f"data: detected PNG in {folder}, 1 subjects")
    assert "data[/b][red]x" in out.getvalue()
