"""Executing runs, in any process: the main one, a local worker, or a SLURM array task on another node.

Everything a run needs comes from its spec and a ``RunContext`` of plain data: the prepared dataset and the
base model are files in the cache named by their fingerprints, so a process elsewhere (with the cache on a
shared filesystem) loads them itself. Results go through the study's ``RunStore``, which claims each run
before it starts, so no run is done twice whoever executes it.
"""
from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import evaluate, pool_view
from harness.cost import CONTOURS, CostModel
from harness.data.dataset import CineDataset, load, voxel_ml
from harness.errors import ClaimLost, HarnessError, StoreError, UsageError
from harness.grid import BASE, StudySettings, load_strategies, select
from harness.inits import parse_inits
from harness.store import RunSpec, RunStore
from harness.train.settings import TrainSettings, stage_steps


@dataclass(frozen=True)
class RunContext:
    """What any process needs to execute runs of one study; plain, picklable data."""

    study: str  # the study folder
    settings: StudySettings
    dataset: str  # the prepared dataset's file in the cache (its fingerprint is checked against each spec)
    base: str | None = None  # the phantom base model's checkpoint in the cache, where an init needs it
    stale_after: float = 600.0  # seconds without a heartbeat after which a claim is abandoned
    cache: str | None = None  # the cache folder holding the selection model's views (pool_view), where needed

    def store(self) -> RunStore:
        return RunStore(Path(self.study), self.stale_after)


_LOADED: dict[str, Any] = {}  # per process: the dataset and strategies, read once


def dataset_of(context: RunContext, fingerprint: str) -> CineDataset:
    key = f"dataset:{context.dataset}"
    if key not in _LOADED:
        path = Path(context.dataset)
        if not path.exists():
            raise UsageError(f"prepared dataset '{path}' is missing: this process cannot see the cache it was made "
                             "in; put --cache-dir (or $CINE_HARNESS_CACHE) on a filesystem every node shares")
        _LOADED[key] = load(path)
    dataset = _LOADED[key]
    if dataset.fingerprint != fingerprint:
        raise UsageError(f"prepared dataset '{context.dataset}' has fingerprint {dataset.fingerprint}, but the run "
                         f"wants {fingerprint}: the data changed since the study was planned; run it again")
    return dataset


def strategies_of(settings: StudySettings) -> dict:
    key = f"strategies:{settings.strategies}:{sorted(settings.params.items())}"
    if key not in _LOADED:
        _LOADED[key] = load_strategies(settings)
    return _LOADED[key]


def checkpoint_classes(settings: StudySettings) -> tuple[str, ...] | None:
    from harness.train.model import parse_classes

    return parse_classes(settings.checkpoint_classes) if settings.checkpoint_classes else None


def init_of(spec: RunSpec, context: RunContext):
    """The run's init (harness.inits.Init), from the study's --init."""
    return next(i for i in parse_inits(",".join(context.settings.inits)) if i.name == spec.init)


def initial_model(spec: RunSpec, settings: TrainSettings, context: RunContext):
    """The model a run starts from: its init's weights, anything random drawn from its init stream."""
    from harness import train

    init = init_of(spec, context)
    decoder = tuple(settings.decoder_channels)
    seed = spec.streams["init"]
    if init.kind == "random":
        return train.build_model(settings.encoder, None, decoder, seed=seed)
    if init.kind == "imagenet":
        return train.build_model(settings.encoder, "imagenet", decoder, seed=seed)
    path = context.base if init.kind == "source" else init.path
    if path is None or not Path(path).exists():
        raise UsageError(f"the weights of init '{spec.init}' are missing ({path}); put the cache on a filesystem "
                         "every worker shares, or run the study again to rebuild it")
    checkpoint = train.read_checkpoint(Path(path), checkpoint_classes(context.settings))
    if init.kind == "checkpoint" and checkpoint.fingerprint != spec.init_fingerprint:
        raise UsageError(f"the weights of init '{spec.init}' changed while the study ran ({checkpoint.path}); "
                         "run the study again to start over with the new file")
    return train.model_from_checkpoint(checkpoint, settings.encoder, decoder)


def validation_score(dataset: CineDataset, rows: pd.DataFrame, settings: TrainSettings,
                     empty: str) -> Callable[[Any], dict[str, float]]:
    """A model's Dice on validation images: mean image Dice of LV and MY, and their mean, the score the stopping
    rule reads (the same for runs and tuning). Only validation subjects' images are predicted: checks during
    training never see test subjects."""
    from harness import train

    if rows.empty:
        raise UsageError("validation needs validation subjects (--val-subjects at least 1)")
    images, masks = dataset.images[rows.index], dataset.masks[rows.index]

    def score(model) -> dict[str, float]:
        metrics = evaluate.image_metrics(rows, train.predict(model, images, settings.precision), masks, empty)
        means = {c: float(metrics[c].mean()) for c in ("dice_lv", "dice_my")}
        value = float(np.nanmean([means["dice_lv"], means["dice_my"]]))
        return {**means, "score": value if np.isfinite(value) else 0.0}

    return score


def validation_rows(dataset: CineDataset, split: dict[str, list[str]]) -> pd.DataFrame:
    """The images the checks score: the labelled ED/ES frames of the fold's validation subjects."""
    val = dataset.rows_of(split["validation"])
    return val[val["phase"].notna()]


def train_run(spec: RunSpec, settings: TrainSettings, dataset: CineDataset, strategy, view, model, empty: str,
              on_step: Callable[[], None] | None = None,
              on_check: Callable[[int, dict[str, float]], None] | None = None,
              on_total: Callable[[int], None] = lambda total: None,
              random_init: bool = False) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The one fine-tune path of runs and tuning alike: the run's selection, in canonical order, trained from
    ``model`` under ``settings`` (with its stopping rule, checked on the fold's validation subjects where it
    has any). Returns the selection and the training result (``train.fine_tune``)."""
    from harness import train

    selection = select(spec, strategy, dataset, view)
    # canonical order: the same images selected by two strategies give the same training (the run's order
    # stream shuffles them), so paired comparisons share their training noise
    rows = np.sort(selection.index.to_numpy())
    val = validation_rows(dataset, spec.split)
    steps = stage_steps(settings, len(rows), len(dataset.rows_of(spec.split["pool"])))
    validate = validation_score(dataset, val, settings, empty) if len(val) else None
    if settings.schedule == "plateau":  # at most: the cap (without validation, the fixed checks)
        from harness.train.settings import FIXED_CHECKS

        rule = settings.rule()
        checks = rule.max_checks if validate is not None else FIXED_CHECKS
        on_total(checks * rule.interval_epochs(len(rows)) * -(-len(rows) // settings.batch_size))
    else:
        on_total(sum(steps))
    result = train.fine_tune(model, dataset.images[rows], dataset.masks[rows], settings, spec.streams["order"],
                             spec.streams["augment"], on_step, steps=steps, validate=validate, on_check=on_check,
                             frozen_stage=not random_init)
    return selection, result


def software_versions() -> dict[str, str]:
    """What computed a run, recorded with it (the report's methods cite these, not the report's own)."""
    import platform

    import segmentation_models_pytorch
    import torch

    from harness import __version__

    versions = {"cine-harness": __version__, "torch": torch.__version__,
                "segmentation-models-pytorch": segmentation_models_pytorch.__version__, "numpy": np.__version__,
                "python": platform.python_version()}
    if torch.cuda.is_available():
        versions.update(cuda=str(torch.version.cuda), gpu=torch.cuda.get_device_name())
    return versions


def set_threads(threads: int) -> None:
    """The one place a run's CPU thread count is set (it is part of the run's settings, see TrainSettings)."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def execute(spec: RunSpec, context: RunContext, on_step: Callable[[], None] = lambda: None,
            on_total: Callable[[int], None] = lambda total: None) -> None:
    """Fine-tune (unless the spec is the base model's evaluation), evaluate and store one run."""
    from harness import train

    t0 = time.perf_counter()
    settings = TrainSettings.from_dict(spec.train)
    set_threads(settings.threads)
    dataset = dataset_of(context, spec.dataset)
    empty = context.settings.empty
    model = initial_model(spec, settings, context)
    status: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "threads": settings.threads,
                              "devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "device": str(train.device()),
                              "software": software_versions()}
    val = validation_rows(dataset, spec.split)
    record = None
    if spec.strategy == BASE:
        selection = dataset.index.iloc[:0]
    else:
        view = None
        if spec.selection:  # the selection model's view of this fold's pool, computed before the grid ran
            if context.cache is None:
                raise UsageError("this run reads the selection model's view, but no cache folder was given")
            view = pool_view.load(dataset, spec.split["pool"], spec.selection, Path(context.cache), settings.precision)
        random_init = init_of(spec, context).kind == "random"
        selection, result = train_run(spec, settings, dataset, strategies_of(context.settings)[spec.strategy], view,
                                      model, empty, on_step, on_total=on_total, random_init=random_init)
        record = pd.DataFrame(result.pop("record"))
        status["train"] = result
    t1 = time.perf_counter()
    val_metrics = evaluate.image_metrics(val, train.predict(model, dataset.images[val.index], settings.precision),
                                         dataset.masks[val.index], empty) if len(val) else None
    test = evaluate.test_frames(dataset.rows_of(spec.split["test"]), spec.test_stride)
    pixels, reference = dataset.images[test.index], dataset.masks[test.index]
    predicted = train.predict(model, pixels, settings.precision)
    images = evaluate.image_metrics(test, predicted, reference, empty)
    shown = evaluate.examples(images, pixels, predicted, reference)  # the report's overlays
    volumes = voxel_ml(dataset.subjects_info, dataset.images.shape[-1])
    if volumes:  # EDV/ESV/EF need it; subjects of unknown spacing stay empty
        images["voxel_ml"] = images["subject"].map(volumes)
    status.update({
        "labelled_images": len(selection),
        "cost": annotation_cost(selection, context.settings.cost_model),
        # what the checks read: the labels a lab must also draw (validation subjects' ED/ES)
        "validation_cost": annotation_cost(val, context.settings.cost_model) if len(val) else None,
        "labelled_subjects": int(selection["subject"].nunique()),
        "validation_dice_lv": float(val_metrics["dice_lv"].mean()) if val_metrics is not None else None,
        "validation_dice_my": float(val_metrics["dice_my"].mean()) if val_metrics is not None else None,
        "train_seconds": round(t1 - t0, 2),
        "evaluate_seconds": round(time.perf_counter() - t1, 2),
    })
    context.store().save_run(spec, selection[["subject", "slice", "frame", "phase", "slice_pos"]], images,
                             evaluate.subject_metrics(images, empty), status, shown, record)


def annotation_cost(selection: pd.DataFrame, model: dict[str, Any]) -> dict[str, Any]:
    """What labelling a run's images costs: images, and expert minutes under the study's cost model (under the
    built-in contours model when the study counts images)."""
    timed = CostModel.from_dict(model) if model.get("unit") == "minutes" else CONTOURS
    return {"images": int(len(selection)), "minutes": round(timed.total(selection), 3), "model": timed.name,
            "draw": list(timed.draw)}


def run_claimed(spec: RunSpec, context: RunContext, owner: str, on_step: Callable[[], None] = lambda: None,
                on_total: Callable[[int], None] = lambda total: None, retry_failed: bool = False,
                run: Callable[..., None] = execute) -> str:
    """Claim, execute (``run``: ``execute``, or a stand-in in tests) and release one run. Returns "done",
    "failed", "skipped" (finished before, or failed before without ``retry_failed``), "busy" (another live
    process holds it) or "lost" (the claim was lost while it ran: it stopped and wrote nothing, the run is
    left to its holder or a later command). A failure of the run is recorded with its reason and
    traceback; a StoreError (the results cannot be written) is raised."""
    store = context.store()
    state = store.state(spec)
    if state.state == "done" or (state.state == "failed" and not retry_failed):
        return "skipped"
    claim = store.claim(spec.folder_name, owner)
    if claim is None:
        return "busy"

    def step() -> None:
        claim.check()  # a lost claim stops the run at its next training step
        on_step()

    try:
        state = store.state(spec)  # finished by another process between our check and our claim?
        if state.state == "done" or (state.state == "failed" and not retry_failed):
            return "skipped"
        started = time.perf_counter()
        try:
            run(spec, context, step, on_total)
            return "done"
        except (StoreError, ClaimLost):
            raise
        except HarnessError as exc:
            reason, details = str(exc), None
        except Exception as exc:  # a bug in one run must not lose the grid; keep the traceback
            reason, details = f"{exc.__class__.__name__}: {exc}", "".join(traceback.format_exception(exc))
        store.save_failure(spec, reason, details, {"host": socket.gethostname(), "pid": os.getpid(),
                                                   "owner": owner,
                                                   "seconds": round(time.perf_counter() - started, 2)})
        return "failed"
    except ClaimLost as exc:
        store.log("lost", spec.folder_name, owner=owner, why=str(exc))
        return "lost"
    finally:
        claim.release()


def work(context: RunContext, specs: list[RunSpec], owner: str, retry_failed: bool = False,
         on_start: Callable[[RunSpec], None] = lambda spec: None, on_end: Callable[[RunSpec, str], None] =
         lambda spec, outcome: None, on_step: Callable[[], None] = lambda: None,
         on_total: Callable[[int], None] = lambda total: None, run: Callable[..., None] = execute) -> dict[str, int]:
    """Execute every run of ``specs`` that no one else holds, in order, until none is left to claim: a run
    whose holder died is taken over on a later pass. Returns counts of outcomes."""
    counts = {"done": 0, "failed": 0, "skipped": 0, "lost": 0}
    retry = {spec.folder_name for spec in specs} if retry_failed else set()
    remaining = list(specs)
    while remaining:
        busy = []
        for spec in remaining:
            on_start(spec)
            outcome = run_claimed(spec, context, owner, on_step, on_total, spec.folder_name in retry, run)
            if outcome == "busy":
                busy.append(spec)
                continue
            retry.discard(spec.folder_name)  # retried once in this command, not again after a failure now
            counts[outcome] += 1
            on_end(spec, outcome)
        if len(busy) == len(remaining):  # all held by live processes: they will finish them
            break
        remaining = busy
    return counts


def local_worker(context: RunContext, specs: list[dict], owner: str, retry_failed: bool, errors) -> None:
    """Entry point of a local worker process (spawned): runs ``work``; a fatal StoreError goes to ``errors``."""
    try:
        work(context, [RunSpec.from_dict(s) for s in specs], owner, retry_failed)
    except StoreError as exc:
        errors.put(str(exc))
        raise SystemExit(3) from None


def array_task(context: RunContext, spec: dict, retry_failed: bool = False) -> str:
    """Entry point of one SLURM array task (through submitit): claim and execute one run."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID", "?"))
    task = os.environ.get("SLURM_ARRAY_TASK_ID", "0")
    return run_claimed(RunSpec.from_dict(spec), context, f"slurm {job}_{task}", retry_failed=retry_failed)
