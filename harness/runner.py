"""A study: the grid of inits x strategies x n x seeds x folds, the models it starts from, and running it.

The subjects drawn for (seed, n) are the same for every strategy (paired comparisons) and nested across
n, because the subject order is drawn from the seed alone and a budget of n takes its first n subjects.
"""
from __future__ import annotations

import dataclasses
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness import evaluate, registry, train
from harness.api import Pool, SamplingStrategy
from harness.data.dataset import CineDataset, fingerprint, voxel_ml
from harness.data.nifti import LabelMap
from harness.data.phantom import phantom_dataset, phantom_fingerprint
from harness.data.sources import FORMATS, load_dataset, locate
from harness.errors import HarnessError, StrategyError, UsageError
from harness.inits import Init, parse_inits
from harness.pretraining import pretrain_on
from harness.store import RunSpec, RunStore
from harness.train import PretrainSettings, TrainSettings, check_weights_reachable, resolve_precision
from harness.train.settings import config_key, stage_steps, with_params

BASE = "base"  # pseudo-strategy: the pre-trained model evaluated without fine-tuning
STREAMS = ("subset", "select", "init", "order", "augment")


@dataclass(frozen=True)
class StudySettings:
    data: str | None = None  # a folder of real cine data; None = the built-in phantom
    data_format: str | None = None  # layout of `data` (None = detected)
    labels: str | None = None  # label map of `data`, e.g. "lv=3,my=2,rv=1" (None = the layout's)
    skip_bad: bool = False  # leave out subjects with broken files (listed in the report) instead of stopping
    strategies: tuple[str, ...] = ("ed_es",)
    inits: tuple[str, ...] = ("source",)  # --init: source, checkpoint:PATH, imagenet, random (harness.inits)
    checkpoint_classes: str | None = None  # head classes of a plain state_dict, e.g. "background,rv,my,lv"
    tuned: dict[str, dict[str, Any]] = field(default_factory=dict)  # config key -> tuned params (run --tuned)
    params: dict[str, dict[str, str]] = field(default_factory=dict)  # strategy -> parameter -> text
    ns: tuple[int, ...] = (2, 5, 10)
    seeds: int = 2
    folds: int = 3  # cross-validation over subjects; 1 = one split with `test_subjects` test subjects
    first_seed: int = 0
    target_subjects: int = 24
    source_subjects: int = 16
    data_seed: int = 0
    test_subjects: int = 8
    val_subjects: int = 2
    split_seed: int = 0
    empty: str = "both-one"
    train: TrainSettings = TrainSettings()
    pretrain: PretrainSettings = PretrainSettings()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cache_dir() -> Path:
    """Where prepared phantoms and base models are cached ($CINE_HARNESS_CACHE or ~/.cache)."""
    root = os.environ.get("CINE_HARNESS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cine-harness"
    return Path(root)


def stream_seeds(seed: int, fold: int = 0) -> dict[str, int]:
    """Independent seeds for each source of randomness of a run, derived from its seed (and fold: other
    folds draw from other pools, so they get their own streams; fold 0 keeps the single-split streams)."""
    entropy = seed if fold == 0 else (seed, fold)
    children = np.random.SeedSequence(entropy).spawn(len(STREAMS))
    return {name: int(child.generate_state(1)[0]) for name, child in zip(STREAMS, children)}


def fold_splits(subjects: list[str], settings: StudySettings) -> list[dict[str, list[str]]]:
    """Per fold: test, validation and training-pool subjects. With K folds the subjects are partitioned so
    that each is a test subject exactly once; validation subjects come from the training side of the fold."""
    if settings.folds <= 1:
        return [split_subjects(subjects, settings)]
    k = settings.folds
    order = np.random.default_rng(settings.split_seed).permutation(len(subjects))
    shuffled = [subjects[i] for i in order]
    parts = np.array_split(np.arange(len(shuffled)), k)
    splits = []
    for f in range(k):
        test = [shuffled[i] for i in parts[f]]
        rest = [shuffled[i] for i in np.concatenate([parts[g] for g in range(k) if g != f])]
        if len(test) < 1 or len(rest) < settings.val_subjects + 1:
            raise UsageError(f"{len(subjects)} subjects cannot make {k} folds with {settings.val_subjects} validation "
                             f"and at least 1 training subject each; use fewer --folds or --val-subjects")
        splits.append({"pool": sorted(rest[settings.val_subjects:]), "validation": sorted(rest[:settings.val_subjects]),
                       "test": sorted(test)})
    return splits


def split_subjects(subjects: list[str], settings: StudySettings) -> dict[str, list[str]]:
    """Test, validation and training-pool subjects; test and validation never enter a training subset."""
    needed = settings.test_subjects + settings.val_subjects + 1
    if len(subjects) < needed:
        raise UsageError(f"{len(subjects)} subjects cannot give {settings.test_subjects} test, "
                         f"{settings.val_subjects} validation and at least 1 training subject")
    order = np.random.default_rng(settings.split_seed).permutation(len(subjects))
    shuffled = [subjects[i] for i in order]
    test = sorted(shuffled[: settings.test_subjects])
    val = sorted(shuffled[settings.test_subjects: settings.test_subjects + settings.val_subjects])
    pool = sorted(shuffled[settings.test_subjects + settings.val_subjects:])
    return {"pool": pool, "validation": val, "test": test}


def check_budgets(ns: tuple[int, ...], pool: int, test: int, validation: int) -> None:
    too_big = [n for n in ns if n > pool]
    if too_big:
        raise UsageError(
            f"--n {','.join(map(str, too_big))} is larger than the training pool of {pool} subjects "
            f"({test} test and {validation} validation subjects are held out); use n <= {pool}"
        )


def load_strategies(settings: StudySettings) -> dict[str, SamplingStrategy]:
    unknown_params = set(settings.params) - set(settings.strategies)
    if unknown_params:
        raise UsageError(f"--strategy-param names {', '.join(sorted(unknown_params))}, which is not in --strategy")
    return {name: registry.load(name, settings.params.get(name)) for name in settings.strategies}


def base_fingerprint(settings: StudySettings) -> str:
    """Identity of the base model: its pre-training settings and the source phantom it learns from."""
    source = phantom_fingerprint("source", settings.source_subjects, settings.data_seed, settings.pretrain.size)
    return fingerprint({"pretrain": settings.pretrain.to_dict(), "source": source})


def plan(settings: StudySettings, strategies: dict[str, SamplingStrategy], dataset: CineDataset,
         splits: list[dict[str, list[str]]], inits: dict[str, tuple[Init, str]]) -> list[RunSpec]:
    """The grid, base-model evaluations first, then by n, seed, fold, init and strategy (small runs first).
    Run streams derive from (seed, fold): inits and strategies at one seed and fold share their subject
    draws, so they are compared on the same subjects (paired). ``inits``: name -> (init, fingerprint)."""
    def common(fold: int, init: str, strategy: str = BASE, n: int = 0) -> dict[str, Any]:
        tuned = settings.tuned.get(config_key(strategy, init, n))
        train_settings = with_params(settings.train, tuned["params"]) if tuned else settings.train
        return {"fold": fold, "dataset": dataset.fingerprint, "split": splits[fold], "init": init,
                "init_fingerprint": inits[init][1], "train": train_settings.to_dict()}

    specs = [RunSpec(strategy=BASE, n=0, seed=0, params={}, streams=stream_seeds(0), **common(f, name))
             for name, (init, _) in inits.items() if init.has_base for f in range(len(splits))]
    for n in sorted(settings.ns):
        for seed in range(settings.first_seed, settings.first_seed + settings.seeds):
            for fold in range(len(splits)):
                streams = stream_seeds(seed, fold)
                for init in inits:
                    for name, strategy in strategies.items():
                        specs.append(RunSpec(strategy=name, n=n, seed=seed, params=registry.parameters(strategy),
                                             streams=streams, **common(fold, init, name, n)))
    return specs


def select(spec: RunSpec, strategy: SamplingStrategy, dataset: CineDataset) -> pd.DataFrame:
    """The frame-index rows a run trains on, checked against the strategy contract."""
    frames = dataset.rows_of(spec.split["pool"])
    order = np.random.default_rng(spec.streams["subset"]).permutation(spec.split["pool"])
    pool = Pool(frames=frames, subject_order=tuple(str(s) for s in order))
    chosen = strategy.select(pool, spec.n, np.random.default_rng([spec.streams["select"], spec.n]))
    if len(chosen) == 0:
        raise StrategyError(f"strategy '{spec.strategy}' selected no images for n={spec.n}")
    outside = pd.Index(chosen).difference(frames.index)
    if len(outside):
        raise StrategyError(f"strategy '{spec.strategy}' returned {len(outside)} rows that are not in the pool")
    rows = frames.loc[pd.Index(chosen)]
    extra = set(rows["subject"]) - set(pool.subjects(spec.n))
    if extra and not getattr(strategy, "pool_wide", False):
        raise StrategyError(f"strategy '{spec.strategy}' used subjects beyond the first n={spec.n}: {sorted(extra)}")
    return rows


def data_warnings(dataset: CineDataset) -> list[str]:
    """Subjects left out (--skip-bad) and subjects without ED/ES: said on screen and in the report."""
    phases = [] if dataset.subjects_info is None else [w for w in dataset.subjects_info["warning"] if w]
    return list(dataset.problems) + phases


class Study:
    """Loads the data and base model once, then runs (or skips) every run of the grid."""

    def __init__(self, settings: StudySettings, store: RunStore | None, console: Console | None = None,
                 cache: Path | None = None):
        self.settings = dataclasses.replace(settings, train=dataclasses.replace(
            settings.train, precision=resolve_precision(settings.train.precision)))
        settings = self.settings
        self.store = store
        self.console = console or Console(stderr=True)
        self.cache = cache or cache_dir()
        self.strategies = load_strategies(settings)
        evaluate.dice(0, 0, 0, settings.empty)  # validates the convention before any work
        if settings.folds < 1:
            raise UsageError(f"--folds {settings.folds}: need at least 1 (1 = a single train/test split)")
        if settings.data is None:  # the phantom's size is known before it is made
            test = -(-settings.target_subjects // settings.folds) if settings.folds > 1 else settings.test_subjects
            held_out = test + settings.val_subjects
            check_budgets(settings.ns, settings.target_subjects - held_out, settings.test_subjects,
                          settings.val_subjects)
        self.inits = parse_inits(",".join(settings.inits))
        # checkpoints are read (and their head mapped) now, so a bad file fails before any work
        self.checkpoints = {i.name: train.read_checkpoint(i.path, checkpoint_classes(settings))
                            for i in self.inits if i.kind == "checkpoint"}
        if any(i.kind == "source" for i in self.inits) and not self.base_path()[0].exists():
            check_weights_reachable(settings.pretrain.encoder_weights)  # pre-training will need them: fail now
        if any(i.kind == "imagenet" for i in self.inits):
            check_weights_reachable("imagenet")

    def progress(self) -> Progress:
        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                        console=self.console, transient=False)

    def _phantom(self, domain: str, count: int) -> CineDataset:
        with self.progress() as progress:
            task = progress.add_task(f"phantom {domain} subjects", total=count)
            dataset = phantom_dataset(domain, count, self.settings.data_seed, self.settings.train.size,
                                      self.cache / "phantom",
                                      on_subject=lambda done, total: progress.update(task, completed=done))
            progress.update(task, completed=count)
        return dataset

    def load_source(self) -> CineDataset:
        return self._phantom("source", self.settings.source_subjects)

    def load_target(self) -> CineDataset:
        """The data fine-tuning and evaluation use: the user's folder, or the phantom's target domain."""
        s = self.settings
        if s.data is None:
            return self._phantom("target", s.target_subjects)
        located = locate(Path(s.data), s.data_format)
        self.console.print(f"data: detected {FORMATS[located.format]} in {located.root}, "
                           f"{len(located.subjects)} subjects", highlight=False)
        with self.progress() as progress:
            task = progress.add_task("reading subjects", total=len(located.subjects))
            dataset = load_dataset(located.root, located.format, LabelMap.parse(s.labels) if s.labels else None,
                                   s.train.size, self.cache,
                                   on_subject=lambda done, total: progress.update(task, completed=done),
                                   skip_bad=s.skip_bad)
            progress.update(task, completed=len(located.subjects))
        for warning in data_warnings(dataset):
            self.console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
        return dataset

    def base_path(self) -> tuple[Path, str]:
        key = base_fingerprint(self.settings)
        return self.cache / "models" / f"base-{self.settings.pretrain.encoder}-{key}.pt", key

    def base_model(self) -> tuple[Path, str]:
        """The pre-trained base model's checkpoint, trained now (and cached) if missing."""
        path, key = self.base_path()
        if path.exists():
            return path, key
        source = self.load_source()
        p = self.settings.pretrain
        self.console.print(f"[bold]Pre-training the base model[/] on the source-domain phantom "
                           f"({len(source.index)} images, {p.steps} steps, {p.encoder}); "
                           f"cached as {path} for later studies")
        with self.progress() as progress:
            task = progress.add_task("pre-training", total=p.steps)
            pretrain_on(source, p, path, source={"phantom": "source domain (1.5T bSSFP-like)", "fingerprint": key},
                        on_step=lambda: progress.advance(task))
        return path, key

    def init_fingerprints(self) -> dict[str, tuple[Init, str]]:
        """Name -> (init, fingerprint of its initial weights); pre-trains the phantom base model if needed."""
        out = {}
        for init in self.inits:
            if init.kind == "source":
                out[init.name] = (init, self.base_model()[1])
            elif init.kind == "checkpoint":
                out[init.name] = (init, self.checkpoints[init.name].fingerprint)
            else:  # the encoder/decoder are in the run's training settings; the seed is in its streams
                out[init.name] = (init, init.kind)
        return out

    def initial_model(self, spec: RunSpec, settings: TrainSettings):
        """The model a run starts from: its init's weights, anything random drawn from its init stream."""
        init = next(i for i in self.inits if i.name == spec.init)
        decoder = tuple(settings.decoder_channels)
        seed = spec.streams["init"]
        if init.kind == "random":
            return train.build_model(settings.encoder, None, decoder, seed=seed)
        if init.kind == "imagenet":
            return train.build_model(settings.encoder, "imagenet", decoder, seed=seed)
        if init.kind == "source":  # cached under its settings' fingerprint, which the spec records
            return train.model_from_checkpoint(train.read_checkpoint(self.base_path()[0]), settings.encoder, decoder)
        checkpoint = train.read_checkpoint(init.path, checkpoint_classes(self.settings))  # re-read only if changed
        if checkpoint.fingerprint != spec.init_fingerprint:
            raise UsageError(f"the weights of init '{spec.init}' changed while the study ran ({checkpoint.path}); "
                             "run the study again to start over with the new file")
        return train.model_from_checkpoint(checkpoint, settings.encoder, decoder)

    def run(self) -> dict[str, Any]:
        """Run every unfinished run; returns counts of done, skipped and failed runs."""
        if self.store is None:
            raise ValueError("Study.run needs a RunStore")
        s = self.settings
        started = time.perf_counter()
        target = self.load_target()
        splits = fold_splits(target.subjects, s)
        for split in splits:
            check_budgets(s.ns, len(split["pool"]), len(split["test"]), len(split["validation"]))
        inits = self.init_fingerprints()
        stale = sorted(key for key, t in s.tuned.items() if t.get("dataset") not in (None, target.fingerprint))
        if stale:
            raise UsageError(f"--tuned: {stale[0]} was tuned on other data (fingerprint "
                             f"{s.tuned[stale[0]]['dataset']}; this study's is {target.fingerprint}); tune again")
        specs = plan(s, self.strategies, target, splits, inits)
        self.store.write_study({**s.to_dict(), "split": splits[0], "splits": splits,
                                "init_names": list(inits),
                                "init_models": {name: {"kind": init.kind, "text": init.text, "fingerprint": key,
                                                       "card": self.checkpoints[name].card
                                                       if name in self.checkpoints else None}
                                                for name, (init, key) in inits.items()},
                                "dataset": target.fingerprint, "dataset_name": target.name,
                                "data_warnings": data_warnings(target),
                                "subjects_total": len(target.subjects),
                                "runs": [sp.folder_name for sp in specs]})
        todo = [sp for sp in specs if not self.store.is_done(sp)]
        summary = {"planned": len(specs), "skipped": len(specs) - len(todo), "done": 0, "failed": []}
        if todo:
            self.console.print(f"{len(todo)} of {len(specs)} runs to do ({summary['skipped']} already finished)")
        with self.progress() as progress:
            grid = progress.add_task("study", total=len(specs), completed=summary["skipped"])
            current = progress.add_task("run", total=1, visible=False)
            for spec in todo:
                progress.update(current, description=spec.folder_name, completed=0, visible=True, total=0)
                try:
                    self._execute(spec, target, lambda: progress.advance(current),
                                  lambda total: progress.update(current, total=total))
                    summary["done"] += 1
                except HarnessError as exc:
                    self.store.save_failure(spec, str(exc))
                    summary["failed"].append(f"{spec.folder_name}: {exc}")
                except Exception as exc:  # a bug in one run must not lose the grid; keep the traceback
                    self.store.save_failure(spec, "".join(traceback.format_exception(exc)))
                    summary["failed"].append(f"{spec.folder_name}: {exc.__class__.__name__}: {exc}")
                progress.advance(grid)
            progress.update(current, visible=False)
        summary["seconds"] = round(time.perf_counter() - started, 1)
        summary["specs"] = specs
        return summary

    def _execute(self, spec: RunSpec, dataset: CineDataset, on_step: Callable[[], None],
                 on_total: Callable[[int], None] = lambda total: None) -> None:
        t0 = time.perf_counter()
        settings = TrainSettings.from_dict(spec.train)
        model = self.initial_model(spec, settings)
        status: dict[str, Any] = {}
        val = dataset.rows_of(spec.split["validation"])
        val = val[val["phase"].notna()]
        if spec.strategy == BASE:
            selection = dataset.index.iloc[:0]
        else:
            selection = select(spec, self.strategies[spec.strategy], dataset)
            # canonical order: the same images selected by two strategies give the same training (the run's
            # order stream shuffles them), so paired comparisons share their training noise
            rows = np.sort(selection.index.to_numpy())
            steps = stage_steps(settings, len(rows), len(dataset.rows_of(spec.split["pool"])))
            on_total(sum(steps))
            needs_val = settings.select == "best-val"
            status["train"] = train.fine_tune(model, dataset.images[rows], dataset.masks[rows], settings,
                                              spec.streams["order"], spec.streams["augment"], on_step, steps=steps,
                                              validate=validation_score(dataset, val, settings, self.settings.empty)
                                              if needs_val else None)
        t1 = time.perf_counter()
        val_metrics = evaluate.image_metrics(val, train.predict(model, dataset.images[val.index], settings.precision),
                                             dataset.masks[val.index], self.settings.empty)
        test = dataset.rows_of(spec.split["test"])
        images = evaluate.image_metrics(test, train.predict(model, dataset.images[test.index], settings.precision),
                                        dataset.masks[test.index], self.settings.empty)
        volumes = voxel_ml(dataset.subjects_info, dataset.images.shape[-1])
        if volumes:  # EDV/ESV/EF need it; subjects of unknown spacing stay empty
            images["voxel_ml"] = images["subject"].map(volumes)
        status.update({
            "labelled_images": len(selection),
            "labelled_subjects": int(selection["subject"].nunique()),
            "validation_dice_lv": float(val_metrics["dice_lv"].mean()),
            "validation_dice_my": float(val_metrics["dice_my"].mean()),
            "train_seconds": round(t1 - t0, 2),
            "evaluate_seconds": round(time.perf_counter() - t1, 2),
        })
        self.store.save_run(spec, selection[["subject", "slice", "frame", "phase"]], images,
                            evaluate.subject_metrics(images, self.settings.empty), status)


def checkpoint_classes(settings: StudySettings) -> tuple[str, ...] | None:
    from harness.train.model import parse_classes

    return parse_classes(settings.checkpoint_classes) if settings.checkpoint_classes else None


def validation_score(dataset: CineDataset, rows: pd.DataFrame, settings: TrainSettings, empty: str,
                     metric: str | None = None) -> Callable[[Any], float]:
    """A model's score on validation images: mean image Dice of ``metric`` (dice_lv or dice_my), or of both.
    Only validation subjects' images are predicted: checks during training never see test subjects."""
    if rows.empty:
        raise UsageError("validation needs validation subjects (--val-subjects at least 1)")
    images, masks = dataset.images[rows.index], dataset.masks[rows.index]

    def score(model) -> float:
        metrics = evaluate.image_metrics(rows, train.predict(model, images, settings.precision), masks, empty)
        columns = [metric] if metric else ["dice_lv", "dice_my"]
        value = float(np.nanmean([metrics[c].mean() for c in columns]))
        return value if np.isfinite(value) else 0.0

    return score
