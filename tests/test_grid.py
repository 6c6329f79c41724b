"""The grid and its bookkeeping in seconds: a stand-in executor runs the real claim-and-record path with a
trivial run function (the subset is drawn as in a real run; no model is trained)."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys

import pandas as pd
import pytest

from harness import registry
from harness.errors import UsageError
from harness.executors.base import Executor
from harness.grid import BASE, StudySettings, select
from harness.runner import Study
from harness.store import RunStore
from harness.train.settings import TrainSettings
from harness.worker import dataset_of, strategies_of, work


def fake_run(spec, context, on_step, on_total) -> None:
    """What a run would train on, stored as its result, with one image row per test subject."""
    dataset = dataset_of(context, spec.dataset)
    selection = (dataset.index.iloc[:0] if spec.strategy == BASE
                 else select(spec, strategies_of(context.settings)[spec.strategy], dataset))
    images = pd.DataFrame({"subject": spec.split["test"], "dice_lv": 0.5, "dice_my": 0.5})
    context.store().save_run(spec, selection[["subject", "slice", "frame", "phase"]], images,
                             images[["subject"]], {})


class StandIn(Executor):
    name = "stand-in"

    def __init__(self):
        self.seen: list[str] = []

    def run(self, context, specs, reporter, retry_failed=False):
        self.seen += [s.folder_name for s in specs]
        work(context, specs, "stand-in", retry_failed, run=fake_run)


SMALL = dict(target_subjects=10, test_subjects=3, val_subjects=1, folds=1, seeds=3, ns=(1, 2, 4),
             inits=("random",), train=TrainSettings(size=32))


@pytest.fixture
def study(tmp_path, cache):
    def make(**changes) -> tuple[Study, RunStore]:
        store = RunStore(tmp_path / "study")
        store.prepare()
        settings = StudySettings(**{**SMALL, **changes})
        return Study(settings, store, cache=cache), store
    return make


def _selections(store: RunStore) -> dict[tuple, set[str]]:
    out = {}
    for folder in store.runs.iterdir():
        spec = pd.read_json(folder / "spec.json", typ="series")
        if spec["strategy"] != BASE:
            out[spec["strategy"], spec["n"], spec["seed"]] = set(pd.read_csv(folder / "selection.csv")["subject"])
    return out


def test_strategies_share_subjects_at_each_seed_and_budgets_nest(study):
    s, store = study(strategies=("ed_es", "subject_random", "all_frames"))
    summary = s.run(StandIn())
    assert summary["done"] == 3 * 3 * 3 and not summary["failed"]
    chosen = _selections(store)
    for seed in range(3):
        for n in (1, 2, 4):
            assert chosen["ed_es", n, seed] == chosen["subject_random", n, seed] == chosen["all_frames", n, seed]
            assert len(chosen["ed_es", n, seed]) == n
        assert chosen["ed_es", 1, seed] < chosen["ed_es", 2, seed] < chosen["ed_es", 4, seed]
    assert len({frozenset(chosen["ed_es", 2, seed]) for seed in range(3)}) > 1


def test_test_and_validation_subjects_never_enter_a_subset(study):
    s, store = study(strategies=("all_frames",), folds=3, seeds=1)
    s.run(StandIn())
    splits = store.read_study()["splits"]
    tested = [x for split in splits for x in split["test"]]
    assert sorted(tested) == sorted(set(tested)) and len(tested) == 10
    for folder in store.runs.iterdir():
        spec = pd.read_json(folder / "spec.json", typ="series")
        chosen = set(pd.read_csv(folder / "selection.csv")["subject"])
        split = splits[spec["fold"]]
        assert chosen <= set(split["pool"])


def test_a_failing_run_is_recorded_with_its_reason_and_the_grid_goes_on(study, monkeypatch):
    real = registry.discover()
    fake = registry.StrategyEntry("fails_at_two", "tests", "tests.fake_strategies:FailsAtTwoStrategy")
    monkeypatch.setattr(registry, "discover", lambda: {**real, "fails_at_two": fake})
    s, store = study(strategies=("fails_at_two",))
    summary = s.run(StandIn())
    assert summary["done"] == 6 and len(summary["failed"]) == 3
    assert all("this strategy refuses n=2" in f for f in summary["failed"])
    failed = [store.status(n) for n in store.read_study()["runs"] if "__n2__" in n]
    assert all(f["state"] == "failed" and f["owner"] == "stand-in" for f in failed)

    again = StandIn()
    summary = s.run(again)  # failed runs are not retried unless asked
    assert again.seen == [] and summary["failed_before"] == 3
    retry = StandIn()
    s.run(retry, retry_failed=True)
    assert len(retry.seen) == 3 and all("__n2__" in name for name in retry.seen)


def test_a_corrupt_result_is_run_again_and_only_it(study):
    s, store = study(strategies=("ed_es",), seeds=1)
    s.run(StandIn())
    victim = store.read_study()["runs"][1]
    (store.runs / victim / "images.csv").write_text("subject\n")  # damaged after it was written
    again = StandIn()
    s.run(again)
    assert again.seen == [victim] and store.state(victim).state == "done"


def test_the_grid_imports_no_torch():
    code = "import sys, harness.grid, harness.store, harness.executors; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_status_lists_done_running_failed_abandoned_and_pending(study, monkeypatch, capsys):
    from harness.cli import main

    real = registry.discover()
    fake = registry.StrategyEntry("fails_at_two", "tests", "tests.fake_strategies:FailsAtTwoStrategy")
    monkeypatch.setattr(registry, "discover", lambda: {**real, "fails_at_two": fake})
    s, store = study(strategies=("fails_at_two",), seeds=1)
    s.run(StandIn())
    names = store.read_study()["runs"]
    running, abandoned = [n for n in names if "__n4__" in n][0], [n for n in names if "__n1__" in n][0]
    for name in (running, abandoned):
        shutil.rmtree(store.runs / name)
    claim = store.claim(running, "local-0 node-3")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.claim_path(abandoned).write_text(json.dumps({"owner": "local-1", "host": socket.gethostname(),
                                                       "pid": dead.pid, "token": "x", "started": 0}))
    capsys.readouterr()
    assert main(["status", str(store.root), "--json"]) == 0
    rows = {r["run"]: r for r in json.loads(capsys.readouterr().out)}
    assert main(["status", str(store.root)]) == 0  # the table, while the claim is held
    out = capsys.readouterr().out
    claim.release()
    # (the table's title holds the study path, whose test-folder name says "running": look at rows only)
    table = out.split("┏", 1)[1]
    assert "running" in table and "local-0" in table and "refuses n=2" in table
    assert rows[running]["state"] == "running" and "local-0 node-3" in rows[running]["detail"]
    assert rows[abandoned]["state"] == "abandoned" and "is gone" in rows[abandoned]["detail"]
    failed = [r for r in rows.values() if r["state"] == "failed"]
    assert len(failed) == 1 and "this strategy refuses n=2" in failed[0]["detail"]
    assert len(rows) == 3  # random init has no base model to evaluate: n = 1, 2, 4


def test_the_cached_base_model_is_keyed_by_the_training_arithmetic(monkeypatch):
    """A cache must not serve a base model trained by arithmetic the current code no longer does."""
    import harness.grid as grid

    settings = StudySettings()
    before = grid.base_fingerprint(settings)
    assert grid.base_fingerprint(StudySettings()) == before  # stable
    monkeypatch.setattr(grid, "TRAINING_REVISION", grid.TRAINING_REVISION + 1)
    assert grid.base_fingerprint(settings) != before


@pytest.mark.parametrize("subjects, folds, val", [(24, 3, 2), (10, 5, 2), (7, 3, 2), (9, 3, 3)])
def test_every_fold_has_its_own_validation_subjects_outside_its_test_and_pool(subjects, folds, val):
    from harness.grid import fold_splits

    names = [f"s{i:02d}" for i in range(subjects)]
    splits = fold_splits(names, StudySettings(folds=folds, val_subjects=val))
    validation = [s for split in splits for s in split["validation"]]
    assert len(validation) == folds * val and len(set(validation)) == folds * val
    for split in splits:
        assert len(split["validation"]) == val
        assert not set(split["validation"]) & (set(split["test"]) | set(split["pool"]))
        assert sorted(split["validation"] + split["test"] + split["pool"]) == names


def test_more_validation_subjects_than_a_fold_holds_is_refused():
    from harness.grid import fold_splits

    with pytest.raises(UsageError, match="folds would share validation subjects"):
        fold_splits([f"s{i}" for i in range(6)], StudySettings(folds=3, val_subjects=3))
