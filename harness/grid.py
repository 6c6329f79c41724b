"""The grid of a study, without torch: its settings, folds, seed streams and the list of run specs.

The subjects drawn for (seed, n) are the same for every strategy and init (paired comparisons) and nested
across n, because the subject order is drawn from the seed alone and a budget of n takes its first n subjects.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import registry
from harness.api import SamplingStrategy, pool_for, undeclared_read, uses_of
from harness.cost import IMAGES, CostModel, affordable
from harness.data.dataset import CineDataset, fingerprint
from harness.data.phantom import phantom_fingerprint
from harness.errors import StrategyError, UsageError
from harness.inits import Init
from harness.store import RunSpec
from harness.train.settings import TRAINING_REVISION, PretrainSettings, TrainSettings, config_key, with_params

BASE = "base"  # pseudo-strategy: the pre-trained model evaluated without fine-tuning
STREAMS = ("subset", "select", "init", "order", "augment")


@dataclass(frozen=True)
class StudySettings:
    data: str | None = None  # a folder of real cine data; None = the built-in phantom
    data_format: str | None = None  # layout of `data` (None = detected)
    labels: str | None = None  # label map of `data`, e.g. "lv=3,my=2,rv=1" (None = the layout's)
    skip_bad: bool = False  # leave out subjects with broken files (listed in the report) instead of stopping
    allow_source_overlap: bool = False  # run although a source model was trained on test/validation images
    strategies: tuple[str, ...] = ("ed_es",)
    inits: tuple[str, ...] = ("source",)  # --init: source, checkpoint:PATH, imagenet, random (harness.inits)
    checkpoint_classes: str | None = None  # head classes of a plain state_dict, e.g. "background,rv,my,lv"
    tuned: dict[str, dict[str, Any]] = field(default_factory=dict)  # config key -> tuned params (run --tuned)
    params: dict[str, dict[str, str]] = field(default_factory=dict)  # strategy -> parameter -> text
    ns: tuple[int, ...] = (2, 5, 10)
    budget_minutes: tuple[int, ...] = ()  # instead of ns: budgets of expert minutes under cost_model
    cost_model: dict[str, Any] = field(default_factory=IMAGES.to_dict)  # harness.cost.CostModel as data
    selection_model: str | None = None  # checkpoint:PATH whose view model-aware strategies read (None = the init's)
    seeds: int = 2
    folds: int = 3  # cross-validation over subjects; 1 = one split with `test_subjects` test subjects
    first_seed: int = 0
    target_subjects: int = 24
    source_subjects: int = 16
    data_seed: int = 0
    test_subjects: int = 8
    val_subjects: int = 2
    test_stride: int = 1  # score every labelled test frame (1) or ED, ES and every k-th frame (evaluate.test_frames)
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
    that each is a test subject exactly once; fold f's validation subjects are the first of fold f+1's test
    part (the training side of fold f), so no two folds share a validation subject."""
    if settings.val_subjects < 0:
        raise UsageError(f"--val-subjects {settings.val_subjects}: give 0 (no convergence check) or more")
    if settings.folds <= 1:
        return [split_subjects(subjects, settings)]
    k = settings.folds
    order = np.random.default_rng(settings.split_seed).permutation(len(subjects))
    shuffled = [subjects[i] for i in order]
    parts = np.array_split(np.arange(len(shuffled)), k)
    splits = []
    for f in range(k):
        test = [shuffled[i] for i in parts[f]]
        # the training side, starting with the next fold's part: distinct validation subjects for every fold
        rest = [shuffled[i] for i in np.concatenate([parts[(f + g) % k] for g in range(1, k)])]
        if len(test) < 1 or len(rest) < settings.val_subjects + 1:
            raise UsageError(f"{len(subjects)} subjects cannot make {k} folds with {settings.val_subjects} validation "
                             f"and at least 1 training subject each; use fewer --folds or --val-subjects")
        if settings.val_subjects > len(parts[(f + 1) % k]):
            raise UsageError(f"--val-subjects {settings.val_subjects} is more than a fold's {len(parts[(f + 1) % k])} "
                             f"test subjects, so folds would share validation subjects; use at most "
                             f"{min(len(p) for p in parts)} (or fewer --folds)")
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


def model_aware(strategy: SamplingStrategy) -> bool:
    """Whether a strategy reads the selection model's view (predictions or embeddings)."""
    return bool(uses_of(strategy) & {"predictions", "embeddings"})


def budgets(settings: StudySettings) -> tuple[int, ...]:
    """The grid's budget axis: expert minutes with --budget-minutes, else subjects (--n)."""
    return tuple(settings.budget_minutes) or tuple(settings.ns)


def check_tuned(tuned: dict[str, dict[str, Any]], splits: list[dict[str, list[str]]], dataset: str,
                inits: dict[str, str]) -> None:
    """Refuse tuned parameters that a run may not use: tuned on other data or other initial weights (``inits``:
    init name -> weights fingerprint), missing for one of the run's folds, or tuned on a subject that is a test
    subject of the fold they would be used in."""
    for key, entry in sorted(tuned.items()):
        if entry.get("dataset") != dataset:
            raise UsageError(f"--tuned: {key} was tuned on other data (fingerprint {entry.get('dataset')}; this "
                             f"study's is {dataset}); tune again")
        if entry.get("init_fingerprint") != inits.get(entry.get("init")):
            raise UsageError(f"--tuned: {key} was tuned from other initial weights (fingerprint "
                             f"{entry.get('init_fingerprint')}; init '{entry.get('init')}' is now "
                             f"{inits.get(entry.get('init'))}): the model changed since; tune again")
        for fold, split in enumerate(splits):
            part = entry["folds"].get(str(fold))
            if part is None:
                raise UsageError(f"--tuned: {key} has no tuned parameters for fold {fold} (tuned: folds "
                                 f"{', '.join(entry['folds']) or 'none'}); run `harness tune` with the same --folds "
                                 f"and data options (or --fold {fold}) first")
            seen = sorted(set(part["tuning_subjects"]) & set(split["test"]))
            if seen:
                raise UsageError(
                    f"--tuned: the parameters of {key} for fold {fold} were tuned on {len(seen)} of its "
                    f"{len(split['test'])} test subjects ({', '.join(seen[:5])}{', ...' if len(seen) > 5 else ''}); "
                    "tune with the same --folds, --test-subjects, --val-subjects and data as this run")


def base_fingerprint(settings: StudySettings) -> str:
    """Identity of the base model: its pre-training settings and the source phantom it learns from."""
    source = phantom_fingerprint("source", settings.source_subjects, settings.data_seed, settings.pretrain.size)
    return fingerprint({"pretrain": settings.pretrain.to_dict(), "source": source, "training": TRAINING_REVISION})


def plan(settings: StudySettings, strategies: dict[str, SamplingStrategy], dataset: CineDataset,
         splits: list[dict[str, list[str]]], inits: dict[str, tuple[Init, str]],
         selections: dict[str, str] | None = None) -> list[RunSpec]:
    """The grid, base-model evaluations first, then by budget, seed, fold, init and strategy (small runs first).
    Run streams derive from (seed, fold): inits and strategies at one seed and fold share their subject
    draws, so they are compared on the same subjects (paired). ``inits``: name -> (init, fingerprint);
    ``selections``: init name -> fingerprint of the selection model its model-aware strategies read."""
    selections = selections or {}
    cost = dict(settings.cost_model) if settings.budget_minutes else {}
    def common(fold: int, init: str, strategy: str = BASE, n: int = 0) -> dict[str, Any]:
        tuned = settings.tuned.get(config_key(strategy, init, n))
        train_settings = with_params(settings.train, tuned["folds"][str(fold)]["params"]) if tuned else settings.train
        return {"fold": fold, "dataset": dataset.fingerprint, "split": splits[fold], "init": init,
                "init_fingerprint": inits[init][1], "train": train_settings.to_dict(),
                "test_stride": settings.test_stride}

    specs = [RunSpec(strategy=BASE, n=0, seed=0, params={}, streams=stream_seeds(0), **common(f, name))
             for name, (init, _) in inits.items() if init.has_base for f in range(len(splits))]
    for n in sorted(budgets(settings)):
        for seed in range(settings.first_seed, settings.first_seed + settings.seeds):
            for fold in range(len(splits)):
                streams = stream_seeds(seed, fold)
                for init in inits:
                    for name, strategy in strategies.items():
                        if model_aware(strategy) and init not in selections:
                            raise UsageError(f"strategy '{name}' reads the selection model's predictions, but init "
                                             f"'{init}' has no trained model to predict with; give "
                                             "--selection-model checkpoint:PATH (e.g. a `harness pretrain` output)")
                        specs.append(RunSpec(strategy=name, n=n, seed=seed, params=registry.parameters(strategy),
                                             streams=streams, **common(fold, init, name, n),
                                             selection=selections[init] if model_aware(strategy) else "",
                                             cost=cost))
    return specs


def with_hints(frames: pd.DataFrame, info: pd.DataFrame | None) -> pd.DataFrame:
    """``frames`` with phase_hint: ED/ES where the dataset's metadata named them (subjects_info source other
    than the labels' LV area), None elsewhere."""
    hint = pd.Series(None, index=frames.index, dtype=object)
    if info is not None and {"ed", "es", "source"} <= set(info):
        for r in info.itertuples():
            if str(r.source).startswith("LV area") or str(r.source) == "none":
                continue
            rows = frames["subject"] == str(r.subject)
            for phase, frame in (("ED", r.ed), ("ES", r.es)):
                if frame == frame and frame not in (None, ""):
                    hint[rows & (frames["frame"] == int(float(frame)))] = phase
    return frames.assign(phase_hint=hint.astype(object).where(hint.notna(), None))


def select(spec: RunSpec, strategy: SamplingStrategy, dataset: CineDataset,
           view: tuple[pd.DataFrame, np.ndarray] | None = None) -> pd.DataFrame:
    """The frame-index rows a run trains on, checked against the strategy contract. The strategy is handed
    only the columns it declares (``api.pool_for``); ``view`` is the selection model's view of the pool
    (``pool_view.load``), needed by model-aware strategies. A budget of expert minutes (``spec.cost``) takes
    the longest affordable start of the strategy's ``rank`` of the pool."""
    frames = with_hints(dataset.rows_of(spec.split["pool"]), dataset.subjects_info)
    embeddings = None
    if view is not None:
        table, vectors = view
        where = table.index.get_indexer(frames.index)
        if (where < 0).any():
            raise StrategyError(f"the selection model's view lacks {int((where < 0).sum())} images of the pool of "
                                f"run {spec.folder_name}; run the study again to recompute it")
        frames = frames.join(table)
        embeddings = vectors[where] if len(vectors) else None
    order = np.random.default_rng(spec.streams["subset"]).permutation(spec.split["pool"])
    pool = pool_for(strategy, frames, tuple(str(s) for s in order), embeddings)
    try:
        if spec.cost:
            if not callable(getattr(strategy, "rank", None)):
                raise StrategyError(f"strategy '{spec.strategy}' cannot spend a budget of expert minutes: it has no "
                                    "rank(pool, rng); use --n, or a strategy that ranks (see `harness strategies`)")
            ranking = pd.Index(strategy.rank(pool, np.random.default_rng(spec.streams["select"])))
            if not ranking.is_unique:
                raise StrategyError(f"strategy '{spec.strategy}' ranked an image twice")
            if not ranking.isin(frames.index).all():
                raise StrategyError(f"strategy '{spec.strategy}' ranked {int((~ranking.isin(frames.index)).sum())} "
                                    "rows that are not in the pool")
            chosen = affordable(ranking, frames, CostModel.from_dict(spec.cost), spec.n)
        else:
            chosen = strategy.select(pool, spec.n, np.random.default_rng([spec.streams["select"], spec.n]))
    except (KeyError, NameError, AttributeError) as exc:  # query: NameError; rows.phase: AttributeError
        message = undeclared_read(exc, strategy)
        if message is None:
            raise
        raise StrategyError(f"strategy '{spec.strategy}' {message}") from None
    if len(chosen) == 0:
        unit = "expert minutes" if spec.cost else "n"
        raise StrategyError(f"strategy '{spec.strategy}' selected no images for {unit}={spec.n}"
                            + ("; the first image it ranks costs more: give a larger budget" if spec.cost else ""))
    outside = pd.Index(chosen).difference(frames.index)
    if len(outside):
        raise StrategyError(f"strategy '{spec.strategy}' returned {len(outside)} rows that are not in the pool")
    rows = dataset.index.loc[pd.Index(chosen)]
    extra = set(rows["subject"]) - set(pool.subjects(spec.n)) if not spec.cost else set()
    if extra and not getattr(strategy, "pool_wide", False):
        raise StrategyError(f"strategy '{spec.strategy}' used subjects beyond the first n={spec.n}: {sorted(extra)}")
    return rows


def data_warnings(dataset: CineDataset) -> list[str]:
    """Subjects left out (--skip-bad) and subjects without ED/ES: said on screen and in the report."""
    phases = [] if dataset.subjects_info is None else [w for w in dataset.subjects_info["warning"] if w]
    return list(dataset.problems) + phases
