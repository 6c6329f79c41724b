"""A lab's own source model end to end: pretrain --data, run --init checkpoint:... against random,
the paper schedule, failures recorded per run, and Optuna tuning that never looks at test subjects."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import grid, runner, train
from harness.cli import main
from harness.store import RunSpec
from harness.train.settings import SCHEDULES, TrainSettings, stage_steps

TINY = ["--executor", "inprocess", "--steps", "3", "--target-subjects", "6", "--test-subjects", "2", "--seeds", "1",
        "--folds", "1", "--n", "1"]


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("source-data")
    assert main(["data", "phantom", "--out", str(out), "--domain", "source", "--subjects", "4"]) == 0
    return out


@pytest.fixture(scope="module")
def checkpoint(source_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "lab.pt"
    cache = tmp_path_factory.getbasetemp() / "cache"
    assert main(["pretrain", "--data", str(source_dir), "--out", str(out), "--steps", "6", "--size", "64",
                 "--val-subjects", "1", "--cache-dir", str(cache)]) == 0
    return out


@pytest.mark.slow
def test_pretrain_on_a_data_folder_writes_a_checkpoint_with_its_card(checkpoint):
    card = json.loads(checkpoint.with_suffix(".json").read_text())
    assert card["architecture"]["encoder"] == "resnet18" and card["architecture"]["size"] == 64
    assert card["architecture"]["classes"] == ["background", "LV", "MY"]
    assert card["training"]["subjects"] == 3 and len(card["training"]["validation_subjects"]) == 1
    assert 0 <= card["validation"]["dice_lv"] <= 1 and card["validation"]["subjects"] == 1
    assert card["training"]["steps"] == 6 and card["versions"]["torch"]
    assert card == train.read_checkpoint(checkpoint).card  # the same card inside the file
    assert not list(checkpoint.parent.glob(".*tmp"))


@pytest.mark.slow
def test_run_compares_a_checkpoint_with_random_init_paired(checkpoint, tmp_path, cache):
    out = tmp_path / "study"
    assert main(["run", *TINY, "--init", f"checkpoint:{checkpoint},random", "--out", str(out),
                 "--cache-dir", str(cache)]) == 0  # no --size: the card's 64 px
    specs = [RunSpec.from_dict(json.loads(p.read_text())) for p in out.glob("runs/*/spec.json")]
    by_init = {s.init: s for s in specs if s.strategy != "base"}
    assert set(by_init) == {"ckpt-lab", "random"}
    assert [s.init for s in specs if s.strategy == "base"] == ["ckpt-lab"]  # random has no base model
    assert by_init["ckpt-lab"].init_fingerprint == train.read_checkpoint(checkpoint).fingerprint
    assert by_init["ckpt-lab"].streams == by_init["random"].streams  # paired: same subsets and seeds
    assert by_init["ckpt-lab"].train["size"] == 64
    report = (out / "report.md").read_text()
    assert "Init `ckpt-lab`: your checkpoint, pre-trained on" in report and "ed_es (oracle)+random" in report
    assert "ed_es (oracle)+ckpt-lab" in (out / "tables" / "strategies.csv").read_text()


@pytest.mark.slow
def test_a_changed_checkpoint_never_reuses_old_runs(checkpoint, tmp_path, cache, capsys):
    copy = tmp_path / "lab.pt"
    copy.write_bytes(checkpoint.read_bytes())
    out = tmp_path / "study"
    args = ["run", *TINY, "--init", f"checkpoint:{copy}", "--out", str(out), "--cache-dir", str(cache)]
    assert main(args) == 0
    first = {p.name for p in (out / "runs").iterdir()}
    state = train.read_checkpoint(copy)
    model = train.model_from_checkpoint(state, "resnet18", train.DECODER_CHANNELS)
    with torch.no_grad():
        model.segmentation_head[0].bias += 0.1
    train.save_checkpoint(model, copy, state.card)
    assert main(args) == 0
    assert "0 already finished" in capsys.readouterr().err
    second = {p.name for p in (out / "runs").iterdir()} - first
    assert len(second) == len(first)  # every run again, in new folders
    fingerprints = {json.loads((out / "runs" / name / "spec.json").read_text())["init_fingerprint"]
                    for name in first | second}
    assert fingerprints == {state.fingerprint, train.read_checkpoint(copy).fingerprint} and len(fingerprints) == 2


def test_flags_that_contradict_the_card_are_refused(checkpoint, capsys):
    assert main(["run", "--init", f"checkpoint:{checkpoint}", "--size", "128"]) == 2
    err = capsys.readouterr().err
    assert "--size 128 differs from checkpoint" in err and "trained with 64" in err


def test_paper_schedule_gives_every_subset_the_same_steps_as_published():
    paper = TrainSettings(**{**SCHEDULES["paper"], "schedule": "paper"})
    assert stage_steps(paper, 5076, 5076) == (10 * 635, 10 * 635)  # E = 10 on the full set, batch 8
    assert stage_steps(paper, 448, 5076) == (113 * 56, 113 * 56)  # esed: E = round(10 * 5076 / 448) = 113
    assert stage_steps(paper, 306, 5076)[0] == 166 * 39  # v1
    for size in (306, 448, 1001, 2626, 5076):  # about the same optimiser steps whatever the subset
        assert abs(stage_steps(paper, size, 5076)[0] - 6345) / 6345 < 0.03  # partial last batches
    assert stage_steps(TrainSettings(schedule="fast"), 10, 5076) == (100, 100)
    assert stage_steps(TrainSettings(), 10, 5076) == (0, 0)  # the plateau schedule: its rule decides


@pytest.mark.slow
def test_paper_schedule_runs_and_the_report_says_so(tmp_path, cache):
    out = tmp_path / "study"
    args = [a for a in TINY if a not in ("--steps", "3")] + ["--size", "64", "--pretrain-steps", "4",
                                                             "--source-subjects", "3"]
    assert main(["run", *args, "--schedule", "paper", "--epochs", "1", "--out", str(out),
                 "--cache-dir", str(cache)]) == 0
    status = [json.loads(p.read_text()) for p in out.glob("runs/ed_es*/status.json")]
    pool_images = len(json.loads(next(out.glob("runs/ed_es*/spec.json")).read_text())["split"]["pool"])
    assert pool_images == 2
    steps = status[0]["train"]["steps"]
    assert steps[0] == steps[1] and steps[0] > 3
    assert "the published schedule: stage 1 encoder frozen" in (out / "report.md").read_text()


@pytest.mark.slow
def test_a_diverging_run_is_recorded_as_failed_and_the_grid_goes_on(tmp_path, cache, monkeypatch, capsys):
    monkeypatch.setitem(SCHEDULES, "fast", {"lr_frozen": 1e9, "lr_unfrozen": 1e9})
    out = tmp_path / "study"
    assert main(["run", *TINY, "--n", "1,2", "--size", "64", "--pretrain-steps", "4", "--source-subjects", "3",
                 "--out", str(out), "--cache-dir", str(cache)]) == 1
    states = {p.parent.name.split("__")[0] + p.parent.name.split("__")[2]: json.loads(p.read_text())
              for p in out.glob("runs/*/status.json")}
    assert states["basen0"]["state"] == "done"
    assert states["ed_esn1"]["state"] == states["ed_esn2"]["state"] == "failed"  # both tried: the grid went on
    assert "training diverged" in states["ed_esn1"]["reason"]
    assert "2 failed" in capsys.readouterr().err


@pytest.mark.slow
def test_tuning_never_predicts_test_subjects_and_resumes(tmp_path, cache, monkeypatch):
    """Test subjects' images are replaced by NaN: any prediction on them would show up in the spy."""
    real_load = runner.Study.load_target
    seen = []

    def poisoned(self):
        data = real_load(self)
        split = grid.fold_splits(data.subjects, self.settings)[0]
        images = data.images.copy()
        images[data.rows_of(split["test"]).index] = np.nan
        import dataclasses
        return dataclasses.replace(data, images=images)

    real_predict = train.predict

    def spy(model, images, *args, **kwargs):
        seen.append(bool(np.isnan(images.astype(np.float32)).any()))
        return real_predict(model, images, *args, **kwargs)

    monkeypatch.setattr(runner.Study, "load_target", poisoned)
    monkeypatch.setattr(train, "predict", spy)
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"steps_frozen": ["int", 1, 3], "steps_unfrozen": ["int", 1, 3]}))
    out = tmp_path / "study"
    args = ["tune", *TINY, "--size", "64", "--pretrain-steps", "4", "--source-subjects", "3", "--trials", "2",
            "--space", str(space), "--out", str(out), "--cache-dir", str(cache)]
    assert main(args) == 0
    assert seen and not any(seen), "tuning predicted an image of a test subject"
    tuned = json.loads((out / "tuned.json").read_text())["ed_es__source__n1"]["folds"]["0"]
    assert tuned["trials"] == 2 and 1 <= tuned["params"]["steps_frozen"] <= 3
    assert set(tuned["params"]) == {"lr_frozen", "lr_unfrozen", "steps_frozen", "steps_unfrozen", "weight_decay",
                                    "augment"}
    assert (out / "tune.db").exists()
    assert main([*args[:args.index("--trials") + 1], "3", *args[args.index("--trials") + 2:]]) == 0
    again = json.loads((out / "tuned.json").read_text())["ed_es__source__n1"]["folds"]["0"]
    assert again["trials"] == 3  # resumed: one more
    predictions = len(seen)
    assert main([*args[:args.index("--trials") + 1], "3", *args[args.index("--trials") + 2:]]) == 0
    assert len(seen) == predictions  # nothing left to do: no trial, and the untuned baseline is not trained again
    assert json.loads((out / "tuned.json").read_text())["ed_es__source__n1"]["folds"]["0"] == again
    monkeypatch.setattr(train, "predict", real_predict)
    run = ["run", *[a for a in TINY if a not in ("--steps", "3")], "--size", "64", "--pretrain-steps", "4",
           "--source-subjects", "3", "--tuned", "--out", str(out), "--cache-dir", str(cache)]
    assert main(run) == 0
    best = json.loads((out / "tuned.json").read_text())["ed_es__source__n1"]["folds"]["0"]["params"]
    spec = json.loads(next(out.glob("runs/ed_es__*/spec.json")).read_text())
    assert spec["train"]["steps_frozen"] == best["steps_frozen"] and spec["train"]["lr_frozen"] == best["lr_frozen"]
    assert "Tuned with Optuna" in (out / "report.md").read_text()


TUNE_SPACE = {"steps_frozen": ["int", 1, 3], "steps_unfrozen": ["int", 1, 3]}
SMALL_MODEL = ["--size", "64", "--pretrain-steps", "4", "--source-subjects", "3"]


@pytest.mark.slow
def test_parameters_tuned_on_another_split_are_refused(tmp_path, cache, capsys):
    """The reproduction of issue 19.1: tuned with one split of 2 test subjects, run with 2 folds."""
    space = tmp_path / "space.json"
    space.write_text(json.dumps(TUNE_SPACE))
    out = tmp_path / "study"
    common = [*TINY, *SMALL_MODEL, "--out", str(out), "--cache-dir", str(cache)]
    assert main(["tune", *common, "--trials", "1", "--space", str(space)]) == 0  # --folds 1 --test-subjects 2
    tuned = json.loads((out / "tuned.json").read_text())["ed_es__source__n1"]
    assert set(tuned["folds"]) == {"0"} and len(tuned["folds"]["0"]["tuning_subjects"]) == 4
    capsys.readouterr()
    folds2 = [a if a != "1" or common[i - 1] != "--folds" else "2" for i, a in enumerate(common)]
    assert main(["run", *folds2, "--tuned"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    assert "--tuned: the parameters of ed_es__source__n1 for fold 0 were tuned on" in err and "test subjects" in err
    assert not list((out / "runs").glob("ed_es__*")), "no run may start with those parameters"


@pytest.mark.slow
def test_every_tuning_seed_reports_its_checks_at_steps_of_its_own(tmp_path, cache):
    """The median pruner compares trials at equal steps: seed 1's check k is at the same step in every trial,
    however many checks seed 0 ran (its steps do not follow on from seed 0's)."""
    import optuna

    from harness.train.settings import FIXED_CHECKS, TrainSettings

    space = tmp_path / "space.json"
    space.write_text(json.dumps(TUNE_SPACE))
    out = tmp_path / "study"
    assert main(["tune", *TINY, *SMALL_MODEL, "--trials", "2", "--tune-seeds", "2", "--space", str(space),
                 "--out", str(out), "--cache-dir", str(cache)]) == 0
    d = TrainSettings()
    stride = max(d.max_checks, FIXED_CHECKS, 2 * d.checks) + 1
    storage = f"sqlite:///{out / 'tune.db'}"
    trials = [t for name in optuna.get_all_study_names(storage)
              for t in optuna.load_study(study_name=name, storage=storage).trials]
    assert trials
    for trial in trials:
        steps = sorted(trial.intermediate_values)
        first, second = [s for s in steps if s < stride], [s - stride for s in steps if s >= stride]
        assert first and second == first, steps  # the same check numbers, one stride apart


@pytest.mark.slow
def test_nested_tuning_never_predicts_a_fold_test_subject_while_choosing_its_parameters(tmp_path, cache,
                                                                                       monkeypatch):
    """Every image predicted while fold f is tuned is traced to its subject: none is a test subject of f."""
    from harness import tune, worker

    loaded, current, predicted, trained = [], [], [], []
    real_load, real_tune_fold, real_predict = runner.Study.load_target, tune.Tuner.tune_fold, train.predict
    real_select = worker.select  # tuning trains through the runs' own path (worker.train_run)

    def select(spec, strategy, dataset, view=None):
        rows = real_select(spec, strategy, dataset, view)
        trained.append((current[-1][0], set(rows["subject"])))
        return rows

    def load_target(self):
        loaded.append(real_load(self))
        return loaded[-1]

    def tune_fold(self, dataset, split, fold, *args, **kwargs):
        current.append((fold, split))
        return real_tune_fold(self, dataset, split, fold, *args, **kwargs)

    def spy(model, images, *args, **kwargs):
        owner = {np.asarray(image, np.float16).tobytes(): subject
                 for image, subject in zip(loaded[-1].images, loaded[-1].index["subject"])}
        predicted.append((current[-1][0], {owner[np.asarray(image, np.float16).tobytes()] for image in images}))
        return real_predict(model, images, *args, **kwargs)

    monkeypatch.setattr(runner.Study, "load_target", load_target)
    monkeypatch.setattr(tune.Tuner, "tune_fold", tune_fold)
    monkeypatch.setattr(train, "predict", spy)
    monkeypatch.setattr(worker, "select", select)
    space = tmp_path / "space.json"
    space.write_text(json.dumps(TUNE_SPACE))
    out = tmp_path / "study"
    common = [*[a if a != "--folds" else "--folds" for a in TINY], *SMALL_MODEL, "--val-subjects", "1",
              "--out", str(out), "--cache-dir", str(cache)]
    common[common.index("--folds") + 1] = "2"
    assert main(["tune", *common, "--trials", "2", "--space", str(space)]) == 0
    splits = dict(current)
    assert sorted(splits) == [0, 1] and predicted
    for fold, subjects in predicted:
        assert not subjects & set(splits[fold]["test"]), f"fold {fold} tuning predicted a test subject"
        assert subjects == set(splits[fold]["validation"])  # the spy sees what validation predicts
    assert sorted({fold for fold, _ in trained}) == [0, 1]
    for fold, subjects in trained:  # and every fine-tune of a trial trains on the fold's pool only
        assert subjects and subjects <= set(splits[fold]["pool"]), (fold, subjects)
    entry = json.loads((out / "tuned.json").read_text())["ed_es__source__n1"]
    for fold, split in splits.items():
        part = entry["folds"][str(fold)]
        assert part["tuning_subjects"] == sorted(split["pool"] + split["validation"])
        assert not set(part["tuning_subjects"]) & set(split["test"])
    monkeypatch.setattr(train, "predict", real_predict)
    assert main(["run", *common, "--tuned"]) == 0  # the same folds: accepted, each fold its own parameters
    for path in out.glob("runs/ed_es__*/spec.json"):
        spec = json.loads(path.read_text())
        best = entry["folds"][str(spec["fold"])]["params"]
        assert (spec["train"]["steps_frozen"], spec["train"]["lr_frozen"]) == (best["steps_frozen"], best["lr_frozen"])
    assert "nested in the cross-validation" in (out / "report.md").read_text()


def test_tuned_parameters_missing_for_a_fold_or_from_other_weights_are_refused(tmp_path, monkeypatch):
    """check_tuned on hand-made entries: a fold never tuned, and weights that changed since tuning."""
    from harness.errors import UsageError

    splits = [{"pool": ["a", "b"], "validation": ["c"], "test": ["d"]},
              {"pool": ["c", "d"], "validation": ["b"], "test": ["a"]}]
    part = {"params": {}, "tuning_subjects": ["a", "b", "c"]}
    entry = {"init": "source", "init_fingerprint": "w1", "dataset": "D", "folds": {"0": part}}
    with pytest.raises(UsageError, match="has no tuned parameters for fold 1 .*--fold 1"):
        grid.check_tuned({"ed_es__source__n1": entry}, splits, "D", {"source": "w1"})
    both = {**entry, "folds": {"0": part, "1": {"params": {}, "tuning_subjects": ["b", "c", "d"]}}}
    grid.check_tuned({"ed_es__source__n1": both}, splits, "D", {"source": "w1"})  # accepted
    with pytest.raises(UsageError, match="tuned from other initial weights"):
        grid.check_tuned({"ed_es__source__n1": both}, splits, "D", {"source": "w2"})
    with pytest.raises(UsageError, match="for fold 1 were tuned on 1 of its 1 test subjects \\(a\\)"):
        grid.check_tuned({"ed_es__source__n1": {**both, "folds": {"0": part, "1": part}}}, splits, "D",
                         {"source": "w1"})


def test_tuned_json_of_version_0_6_is_refused(tmp_path):
    from harness.errors import UsageError
    from harness.tune import tuned_overrides

    (tmp_path / "tuned.json").write_text(json.dumps({"ed_es__source__n2": {"params": {}, "dataset": "D"}}))
    with pytest.raises(UsageError, match="tuned by cine-harness < 0.7 on fold 0 only"):
        tuned_overrides(tmp_path, ("ed_es",), ["source"], (2,))


def test_tuned_without_a_tune_names_the_command(tmp_path, capsys):
    assert main(["run", "--tuned", "--out", str(tmp_path / "s")]) == 2
    assert "run `harness tune --strategy ed_es --init ... --n 2` with the same --out first" in capsys.readouterr().err


@pytest.mark.slow
def test_real_data_source_model_transfers_to_another_real_dataset(tmp_path, cache):
    """Pre-train on the real ACDC NIfTI cines (a few subjects, a few steps: the plumbing, not the Dice), then
    fine-tune it against random init on the real Sunnybrook DICOM series, paired, with cross-validation."""
    from tests.conftest import shared

    acdc, sunnybrook = shared("acdc", "training"), shared("sunnybrook")
    subset = tmp_path / "acdc"
    subset.mkdir()
    for name in ("patient001", "patient021", "patient041", "patient061"):
        (subset / name).symlink_to(acdc / name, target_is_directory=True)
    model = tmp_path / "acdc.pt"
    assert main(["pretrain", "--data", str(subset), "--out", str(model), "--steps", "4", "--size", "64",
                 "--val-subjects", "1", "--cache-dir", str(cache)]) == 0
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["training"]["subjects"] == 3 and card["training"]["data"].startswith("acdc")
    out = tmp_path / "study"
    assert main(["run", "--data", str(sunnybrook), "--init", f"checkpoint:{model},random", "--n", "1",
                 "--folds", "3", "--val-subjects", "1", "--seeds", "1", "--steps", "2", "--out", str(out),
                 "--cache-dir", str(cache)]) == 0
    runs = sorted(p.name.split("__")[0] + "+" + p.name.split("__")[1] for p in (out / "runs").iterdir())
    assert runs == ["base+ckpt-acdc"] * 3 + ["ed_es+ckpt-acdc"] * 3 + ["ed_es+random"] * 3
    report = (out / "report.md").read_text()
    assert "ed_es (oracle)+ckpt-acdc" in report and "pre-trained on acdc" in report


def test_pretraining_on_real_data_defaults_to_192_px(source_dir, tmp_path, cache):
    out = tmp_path / "m.pt"
    assert main(["pretrain", "--data", str(source_dir), "--out", str(out), "--steps", "1", "--val-subjects", "1",
                 "--cache-dir", str(cache)]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["architecture"]["size"] == 192


def _stack(subject: str, seed: int):
    from harness.data.dataset import RawStack

    rng = np.random.default_rng(seed)
    labels = np.zeros((2, 3, 40, 40), np.uint8)
    labels[:, :, 10:30, 10:30] = 2
    labels[:, :, 14:26, 14:26] = 1
    return RawStack(subject, rng.random((2, 3, 40, 40)).astype(np.float32), labels, 1.5, (0, 1, 2), 3)


def test_source_overlap_finds_subjects_by_pixels_not_by_name():
    from harness.data.dataset import prepare
    from harness.pretraining import source_overlap

    source = prepare("src", [_stack("patient001", 1), _stack("patient002", 2)], 32, "k1")
    copy = prepare("copy", [_stack("renamed-a", 1), _stack("other", 3), _stack("renamed-b", 2)], 64, "k2")
    card = {"training": {"image_hashes": sorted(set(source.hashes.tolist()))}}
    found = source_overlap(card, copy, ["renamed-a", "other", "renamed-b"])
    assert found == {"checked": True, "subjects": ["renamed-a", "renamed-b"], "images": 12, "of_subjects": 3,
                     "source_images": 12}
    assert source_overlap(card, copy, ["other"])["subjects"] == []
    assert source_overlap(None, copy, ["other"])["checked"] is False
    # a copy read in another orientation (a DICOM export of NIfTI data, say) is the same images
    stack = _stack("turned", 2)
    turned = dataclasses.replace(stack, images=stack.images.swapaxes(2, 3)[..., ::-1].copy(),
                                 labels=stack.labels.swapaxes(2, 3)[..., ::-1].copy())
    assert source_overlap(card, prepare("t", [turned], 32, "k3"), ["turned"])["subjects"] == ["turned"]
    # images without content (padding slices) are no evidence of a shared subject
    blank = dataclasses.replace(_stack("blank-a", 4), images=np.zeros((2, 3, 40, 40), np.float32))
    blanks = prepare("b", [blank], 32, "k4")
    card = {"training": {"image_hashes": sorted(set(blanks.hashes.tolist()))}}
    other = dataclasses.replace(_stack("blank-b", 5), images=np.full((2, 3, 40, 40), 7, np.float32))
    assert source_overlap(card, prepare("c", [other], 32, "k5"), ["blank-b"])["subjects"] == []
    assert "before cine-harness 0.7" in source_overlap({"training": {}}, copy, ["other"])["why"]


@pytest.mark.slow
def test_a_source_model_trained_on_the_test_subjects_is_refused(checkpoint, source_dir, tmp_path, cache, capsys):
    """The reproduction of issue 19.2: pre-trained on 3 of 4 subjects, then a study of the same 4 (and of a copy
    whose subject folders are renamed): refused; --allow-source-overlap runs and the report says so first."""
    import shutil

    copy = tmp_path / "copy"
    for k, folder in enumerate(sorted(p for p in source_dir.iterdir() if p.is_dir())):
        shutil.copytree(folder, copy / f"renamed-{k}")
    study = ["run", "--init", f"checkpoint:{checkpoint}", "--folds", "2", "--val-subjects", "1", "--seeds", "1",
             "--n", "1", "--steps", "1", "--executor", "inprocess", "--cache-dir", str(cache)]
    for data in (source_dir, copy):
        capsys.readouterr()
        assert main([*study, "--data", str(data), "--out", str(tmp_path / "refused")]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len([line for line in err.splitlines() if line.startswith("error:")]) == 1
        assert "its source model was trained on images of 3 of this study's 4 test and validation subjects" in err
        assert "--allow-source-overlap" in err
    assert not (tmp_path / "refused" / "runs").exists() or not list((tmp_path / "refused" / "runs").iterdir())
    # the model that chooses the frames is held to the same rule: the choice depends on it
    chooser = [arg if not arg.startswith("checkpoint:") else "random" for arg in study]
    assert main([*chooser, "--data", str(copy), "--strategy", "uncertain", "--selection-model",
                 f"checkpoint:{checkpoint}", "--out", str(tmp_path / "chooser")]) == 2
    err = capsys.readouterr().err
    assert f"--selection-model checkpoint:{checkpoint}: its source model was trained on images of 3" in err
    out = tmp_path / "allowed"
    assert main([*study, "--data", str(copy), "--out", str(out), "--allow-source-overlap"]) == 0
    report = (out / "report.md").read_text()
    first = report[report.index("\n> ") + 3:].splitlines()[0]
    assert first.startswith("**Init `ckpt-lab`'s source model was trained on") and "3 of this study's 4" in first


@pytest.mark.slow
def test_a_plain_state_dict_is_reported_as_unchecked(checkpoint, tmp_path, cache):
    plain = tmp_path / "plain.pt"
    torch.save(train.read_checkpoint(checkpoint).state_dict, plain)
    out = tmp_path / "study"
    assert main(["run", *TINY, "--size", "64", "--init", f"checkpoint:{plain}", "--out", str(out),
                 "--cache-dir", str(cache)]) == 0
    assert ("Whether init `ckpt-plain`'s source model was trained on this study's test subjects could not be "
            "checked: a plain state_dict has no model card") in (out / "report.md").read_text()
    study = json.loads((out / "study.json").read_text())
    assert study["source_overlap"]["ckpt-plain"]["checked"] is False


@pytest.mark.slow
def test_the_phantom_base_model_is_checked_and_clear(tmp_path, cache):
    out = tmp_path / "study"
    assert main(["run", *TINY, *SMALL_MODEL, "--out", str(out), "--cache-dir", str(cache)]) == 0
    overlap = json.loads((out / "study.json").read_text())["source_overlap"]["source"]
    assert overlap["checked"] and overlap["subjects"] == [] and overlap["source_images"] > 0
    assert "none of its" in (out / "report.md").read_text()
