"""Optuna tuning of one (strategy, n, init) configuration, nested in the study's cross-validation.

Each fold is tuned on its own training side: the fine-tunes of a trial draw their subsets from the fold's
training pool and are scored on the fold's validation subjects; the fold's test subjects are never
predicted while its parameters are chosen. ``run --tuned`` then uses fold f's parameters for fold f's runs
only, after checking that none of the subjects they were tuned on is a test subject of that fold (so a
tuning made with another split is refused, not silently reused). The search space is plain data
(``SEARCH_SPACE``, overridable with a JSON file); the sampler is a seeded TPE and a median pruner stops
trials whose intermediate validation Dice (at the training's validation checks) falls below the median of
earlier trials at the same check.

Trials live in an Optuna storage (SQLite in the study folder by default; any Optuna URL; ``journal:PATH``
for a journal file on a shared filesystem), one Optuna study per configuration and fold, so the same
command resumes them. The best parameters of each configuration and fold are written to ``tuned.json`` in
the study folder, with the subjects they were tuned on, where ``run --tuned`` finds them.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness import pool_view
from harness.data.dataset import fingerprint
from harness.errors import TrainingError, UsageError
from harness.grid import fold_splits, model_aware, stream_seeds
from harness.runner import Study
from harness.worker import set_threads, train_run, validation_rows, validation_score
from harness.store import RunSpec, write_json
from harness.train.settings import FIXED_CHECKS, config_key, with_params

#: name -> [kind, low, high]; kind "log" (log-uniform float), "float" or "int". Names are TrainSettings
#: fields, plus "augment": one strength in [0, 1] scaling rotation (up to 90 degrees), zoom (up to 1.2),
#: brightness and contrast (up to 0.4) together. Steps apply to the fast schedule, epochs to the paper one.
SEARCH_SPACE: dict[str, list[Any]] = {
    "lr_frozen": ["log", 1e-5, 1e-2],
    "lr_unfrozen": ["log", 1e-6, 3e-3],  # the plateau schedule's default (1e-3) inside, not at the edge
    "steps_frozen": ["int", 0, 300],  # freeze length
    "steps_unfrozen": ["int", 20, 400],
    "epochs": ["int", 1, 20],
    "weight_decay": ["log", 1e-6, 1e-2],
    "augment": ["float", 0.0, 1.0],
}
# left out per schedule: the plateau schedule has one stage and its rule decides the length
SCHEDULE_ONLY = {"plateau": {"lr_frozen", "steps_frozen", "steps_unfrozen", "epochs"}, "fast": {"epochs"},
                 "paper": {"steps_frozen", "steps_unfrozen"}}
METRICS = {"both": None, "lv": "dice_lv", "my": "dice_my"}


def search_space(schedule: str, path: Path | None = None) -> dict[str, list[Any]]:
    """The default space for the schedule, with a JSON file's entries replacing or removing (null) names."""
    space = {k: v for k, v in SEARCH_SPACE.items() if k not in SCHEDULE_ONLY.get(schedule, set())}
    if path is not None:
        try:
            override = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"--space '{path}': cannot read it as JSON ({exc}); give a mapping such as "
                             '{"lr_frozen": ["log", 1e-4, 1e-2], "augment": null}') from None
        for name, value in override.items():
            if name not in SEARCH_SPACE:
                raise UsageError(f"--space '{path}': '{name}' cannot be tuned; names: {', '.join(SEARCH_SPACE)}")
            if value is None:
                space.pop(name, None)
            elif not (isinstance(value, list) and len(value) == 3 and value[0] in ("log", "float", "int")
                      and value[1] <= value[2]):
                raise UsageError(f"--space '{path}': '{name}' must be [\"log\"|\"float\"|\"int\", low, high], "
                                 f"got {value}")
            else:
                space[name] = value
    return space


def storage_for(url: str | None, folder: Path):
    """An Optuna storage: SQLite in the study folder by default; 'journal:PATH' for a journal file."""
    import optuna

    if url is None:
        return f"sqlite:///{(folder / 'tune.db').resolve()}"
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url[len("journal:"):]))
    try:
        optuna.storages.get_storage(url)
    except Exception as exc:  # optuna raises several kinds for a bad URL
        raise UsageError(f"--storage '{url}' cannot be opened ({exc.__class__.__name__}: {exc}); give an Optuna "
                         "storage URL (sqlite:///file.db, postgresql://...) or journal:PATH") from None
    return url


@dataclass(frozen=True)
class TuneRequest:
    strategy: str
    init: str  # an init name of the study (source, ckpt-<name>, imagenet, random)
    n: int
    trials: int = 30  # per fold
    seeds: int = 1  # fine-tunes per trial (different subsets and init draws), averaged
    metric: str = "both"
    sampler_seed: int = 0
    space: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    folds: tuple[int, ...] | None = None  # folds to tune (None: every fold of the study)


def tuning_subjects(split: dict[str, list[str]]) -> list[str]:
    """The subjects whose labels a fold's tuning sees: its training pool and its validation subjects."""
    return sorted(set(split["pool"]) | set(split["validation"]))


class Tuner:
    """Tunes one configuration of a study (its data, folds and inits), each fold on its own training side."""

    def __init__(self, study: Study, request: TuneRequest, folder: Path, storage_url: str | None = None):
        if request.metric not in METRICS:
            raise UsageError(f"--metric {request.metric}: choose one of {', '.join(METRICS)}")
        if request.strategy not in study.strategies:
            raise UsageError(f"tune: strategy '{request.strategy}' is not in --strategy")
        self.study, self.request, self.folder = study, request, Path(folder)
        self.storage = storage_for(storage_url, self.folder)
        self.storage_text = storage_url or f"sqlite:///{self.folder / 'tune.db'}"
        self._views: dict[int, tuple[str, Any]] = {}

    def _view(self, dataset, split, fold: int) -> tuple[str, Any]:
        """(selection model fingerprint, view of the fold's pool) for a model-aware strategy; ("", None) else."""
        if not model_aware(self.study.strategies[self.request.strategy]):
            return "", None
        if fold not in self._views:
            models = self.study.selection_models(self.study.init_fingerprints())
            if self.request.init not in models:
                raise UsageError(f"tune: strategy '{self.request.strategy}' reads a selection model's predictions "
                                 f"but init '{self.request.init}' has none; give --selection-model checkpoint:PATH")
            key = models[self.request.init][0]
            self.study.make_views(dataset, [split], {self.request.init: models[self.request.init]})
            self._views[fold] = (key, pool_view.load(dataset, split["pool"], key, self.study.cache,
                                                     self.study.settings.train.precision))
        return self._views[fold]

    def _prepare(self):
        s = self.study.settings
        dataset = self.study.load_target()
        splits = fold_splits(dataset.subjects, s)
        folds = tuple(range(len(splits))) if self.request.folds is None else self.request.folds
        outside = [f for f in folds if not 0 <= f < len(splits)]
        if outside:
            raise UsageError(f"tune --fold {outside[0]}: the study has folds 0 to {len(splits) - 1} (--folds "
                             f"{s.folds})")
        for f in folds:
            if self.request.n > len(splits[f]["pool"]):
                raise UsageError(f"tune --n {self.request.n} is larger than fold {f}'s training pool of "
                                 f"{len(splits[f]['pool'])} subjects")
        inits = self.study.init_fingerprints()
        if self.request.init not in inits:
            raise UsageError(f"tune: init '{self.request.init}' is not in --init ({', '.join(inits)})")
        self.study.check_source_overlap(dataset, splits)
        return dataset, splits, folds, inits[self.request.init][1]

    def study_name(self, dataset_key: str, init_key: str, fold: int, split: dict[str, list[str]]) -> str:
        r = self.request
        key = fingerprint({"dataset": dataset_key, "init": init_key, "train": self.study.settings.train.to_dict(),
                           "space": r.space, "seeds": r.seeds, "metric": r.metric, "fold": fold,
                           "split": fingerprint(split),
                           "strategy": self.study.strategies[r.strategy].__class__.__name__})
        return f"{config_key(r.strategy, r.init, r.n)}__f{fold}__{key}"

    def run(self, on_trial: Callable[[int, int, float | None], None] | None = None,
            on_step: Callable[[], None] | None = None) -> dict[str, Any]:
        """Run the trials still missing on each fold (the storage keeps earlier ones); returns the
        configuration's entry of tuned.json (every fold tuned so far), which it stores."""
        r = self.request
        dataset, splits, folds, init_key = self._prepare()
        path = self.folder / "tuned.json"
        earlier = (json.loads(path.read_text()) if path.exists() else {}).get(config_key(r.strategy, r.init, r.n), {})
        started = time.perf_counter()
        done_before = 0
        results = {}
        for fold in folds:
            def progress(done: int, total: int, value: float | None, offset: int = done_before) -> None:
                if on_trial:
                    on_trial(offset + done, r.trials * len(folds), value)

            results[fold] = self.tune_fold(dataset, splits[fold], fold, init_key, progress, on_step,
                                           (earlier.get("folds") or {}).get(str(fold)))
            done_before += r.trials
        entry = {
            "strategy": r.strategy, "init": r.init, "n": r.n, "metric": r.metric, "seeds": r.seeds,
            "space": r.space, "sampler": f"TPE (seed {r.sampler_seed})", "pruner": "median (5 startup trials)",
            "dataset": dataset.fingerprint, "init_fingerprint": init_key, "storage": self.storage_text,
            "design": "nested: each fold tuned on its own training pool and validation subjects",
            "folds": {str(f): v for f, v in results.items()},
            "seconds_this_call": round(time.perf_counter() - started, 1),
        }
        return record(self.folder, entry)

    def tune_fold(self, dataset, split: dict[str, list[str]], fold: int, init_key: str,
                  on_trial: Callable[[int, int, float | None], None] | None = None,
                  on_step: Callable[[], None] | None = None,
                  earlier: dict[str, Any] | None = None) -> dict[str, Any]:
        """Tune on one fold: subsets from its pool, scored on its validation subjects; its test subjects
        are not read. Returns the fold's part of tuned.json; ``earlier`` is that part from a previous call,
        whose untuned baseline is kept when the same Optuna study ran no new trial."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        r = self.request
        val = validation_rows(dataset, split)
        name = self.study_name(dataset.fingerprint, init_key, fold, split)
        study = optuna.create_study(study_name=name, storage=self.storage, direction="maximize", load_if_exists=True,
                                    sampler=optuna.samplers.TPESampler(seed=r.sampler_seed),
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1))
        settled = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                          optuna.trial.TrialState.PRUNED,
                                                          optuna.trial.TrialState.FAIL)]
        remaining = max(0, r.trials - len(settled))
        score = validation_score(dataset, val, self.study.settings.train, self.study.settings.empty)

        def objective_of(scores: dict[str, float]) -> float:
            """The trial's objective at a check: the --metric's Dice (the rule stops on the runs' own score)."""
            return float(scores[METRICS[r.metric]] if METRICS[r.metric] else scores["score"])

        def kept_value(result: dict, rescore) -> float:
            kept = [row for row in result["record"] if row["kept"] and row["val_score"] == row["val_score"]]
            return objective_of({"dice_lv": kept[0]["val_dice_lv"], "dice_my": kept[0]["val_dice_my"],
                                 "score": kept[0]["val_score"]} if kept else rescore())

        def objective(trial: optuna.Trial) -> float:
            params = {}
            for pname, (kind, low, high) in r.space.items():
                if kind == "int":
                    params[pname] = trial.suggest_int(pname, int(low), int(high))
                else:
                    params[pname] = trial.suggest_float(pname, float(low), float(high), log=kind == "log")
            settings = with_params(self.study.settings.train, params)
            # each seed's checks report at steps of their own, the same in every trial (runs stop at different
            # checks, so counting the checks done would compare one trial's seed 1 with another's seed 0)
            stride = max(settings.max_checks, FIXED_CHECKS, 2 * settings.checks) + 1
            values = []
            for seed in range(r.seeds):
                def check(number: int, scores: dict[str, float], offset: int = seed * stride) -> None:
                    value = objective_of(scores)
                    trial.report(value, offset + number)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"validation Dice {value:.3f} at check {offset + number}")

                model, result = self._fine_tune(dataset, split, fold, init_key, settings, seed, on_step, check)
                values.append(kept_value(result, lambda: score(model)))
            return float(np.mean(values))

        def progress(study_: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            if on_trial:
                on_trial(trial.number + 1, r.trials, trial.value)

        if remaining:
            study.optimize(objective, n_trials=remaining, catch=(TrainingError,), callbacks=[progress])
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            raise UsageError(f"tune: none of {len(study.trials)} trials of {name} completed (all pruned or failed); "
                             "widen --space or lower the learning rates")
        best = study.best_trial
        same = not remaining and earlier and earlier.get("study_name") == name and "default_value" in earlier
        return {
            "params": best.params, "value": best.value,
            "default_value": earlier["default_value"] if same else self._default_score(
                dataset, split, fold, init_key, lambda tuned: kept_value(tuned[1], lambda: score(tuned[0]))),
            "trials": len(study.trials), "complete": len(complete),
            "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
            "failed": sum(t.state == optuna.trial.TrialState.FAIL for t in study.trials),
            "validation_subjects": list(split["validation"]), "tuning_subjects": tuning_subjects(split),
            "test_subjects": list(split["test"]), "study_name": name,
        }

    def _fine_tune(self, dataset, split, fold: int, init_key: str, settings, seed: int, on_step=None,
                   on_check=None):
        """One fine-tune of the configuration on ``fold`` at ``seed``: the subset, init, image order and stopping
        rule a run would use, through the runs' own path (``worker.train_run``)."""
        r = self.request
        selection, view = self._view(dataset, split, fold)
        spec = RunSpec(strategy=r.strategy, n=r.n, seed=seed, fold=fold, params={},
                       streams=stream_seeds(seed, fold), dataset=dataset.fingerprint, split=split, init=r.init,
                       init_fingerprint=init_key, train=settings.to_dict(), selection=selection)
        set_threads(settings.threads)
        model = self.study.initial_model(spec, settings)
        random_init = next(i for i in self.study.inits if i.name == r.init).kind == "random"
        _, result = train_run(spec, settings, dataset, self.study.strategies[r.strategy], view, model,
                              self.study.settings.empty, on_step, on_check, random_init=random_init)
        return model, result

    def _default_score(self, dataset, split, fold: int, init_key: str, objective) -> float:
        """The untuned settings' objective on the same subsets (seeds) as the trials, for comparison: that of the
        check each fine-tune kept (``objective``: a result -> its kept check's value)."""
        settings = self.study.settings.train
        return float(np.mean([objective(self._fine_tune(dataset, split, fold, init_key, settings, seed))
                              for seed in range(self.request.seeds)]))


def record(folder: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Store a configuration's tuning in tuned.json; folds tuned earlier on the same data and init are kept
    (a fold tuned again replaces its old result). Returns the stored entry."""
    path = Path(folder) / "tuned.json"
    folder.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    key = config_key(entry["strategy"], entry["init"], entry["n"])
    old = data.get(key) or {}
    same = (old.get("dataset"), old.get("init_fingerprint"), old.get("metric")) == (
        entry["dataset"], entry["init_fingerprint"], entry["metric"])
    folds = {**(old.get("folds") or {}), **entry["folds"]} if same else entry["folds"]
    data[key] = {**entry, "folds": dict(sorted(folds.items(), key=lambda kv: int(kv[0])))}
    write_json(path, data)
    return data[key]


def tuned_overrides(folder: Path, strategies: tuple[str, ...], inits: list[str],
                    ns: tuple[int, ...]) -> dict[str, dict[str, Any]]:
    """config key -> its entry of tuned.json (per fold: best parameters and the subjects they were tuned
    on), for every configuration of a run; a missing one is an error naming the tune command that makes it.
    Whether the folds fit the run's splits is checked by ``check_tuned`` once the data are loaded."""
    path = Path(folder) / "tuned.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    out, missing = {}, []
    for strategy in strategies:
        for init in inits:
            for n in ns:
                key = config_key(strategy, init, n)
                if key not in data:
                    missing.append((strategy, init, n))
                    continue
                if "folds" not in data[key]:
                    raise UsageError(f"--tuned: {key} in {path} was tuned by cine-harness < 0.7 on fold 0 only (its "
                                     "tuning subjects are test subjects of other folds); tune it again")
                out[key] = {k: data[key][k] for k in ("init", "init_fingerprint", "dataset", "metric", "folds")
                            if k in data[key]}
    if missing:
        s, i, n = missing[0]
        raise UsageError(f"--tuned: {len(missing)} configurations have no tuned parameters in {path}, first "
                         f"{s} / {i} / n={n}; run `harness tune --strategy {s} --init ... --n {n}` with the same "
                         "--out first")
    return out

