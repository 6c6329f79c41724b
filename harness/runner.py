"""A study: load its data and the models it starts from, plan its grid, and hand the runs to an executor.

The grid itself (settings, folds, seed streams, run specs) is ``harness.grid``; executing one run is
``harness.worker``; where runs happen is ``harness.executors``. Progress goes to a ``Reporter``.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness import evaluate, pool_view, train
from harness.data.dataset import CineDataset
from harness.data.nifti import LabelMap
from harness.data.phantom import phantom_dataset
from harness.data.sources import FORMATS, load_dataset, locate
from harness.api import uses_of
from harness.errors import UsageError
from harness.executors import Executor, InProcessExecutor
from harness.grid import (BASE, StudySettings, base_fingerprint, budgets, cache_dir, check_budgets, check_tuned,
                          data_warnings, fold_splits, load_strategies, model_aware, plan)
from harness.inits import Init, parse_inits
from harness.pretraining import pretrain_on, source_overlap
from harness.progress import Reporter
from harness.rounds import Design, Rounds, check_reference, look, scores_of
from harness.store import RunStore, method_label
from harness.train import check_weights_reachable, resolve_precision
from harness.worker import RunContext, checkpoint_classes, initial_model


def _mean(values, median: bool = False) -> float | None:
    values = [float(v) for v in values]
    return None if not values else round(float(np.median(values) if median else np.mean(values)), 3)


class Study:
    """Loads the data and base model once, then runs (or skips) every run of the grid."""

    def __init__(self, settings: StudySettings, store: RunStore | None, reporter: Reporter | None = None,
                 cache: Path | None = None):
        self.settings = dataclasses.replace(settings, train=dataclasses.replace(
            settings.train, precision=resolve_precision(settings.train.precision)))
        settings = self.settings
        self.store = store
        self.reporter = reporter or Reporter()
        self.cache = cache or cache_dir()
        self.strategies = load_strategies(settings)
        evaluate.dice(0, 0, 0, settings.empty)  # validates the convention before any work
        if settings.folds < 1:
            raise UsageError(f"--folds {settings.folds}: need at least 1 (1 = a single train/test split)")
        if settings.val_subjects < 0:
            raise UsageError(f"--val-subjects {settings.val_subjects}: give 0 (no convergence check) or more")
        t = settings.train
        if settings.val_subjects == 0 and t.select == "best-val" and t.schedule != "plateau":
            raise UsageError(f"--select best-val needs validation subjects, but --val-subjects is 0; give "
                             f"--val-subjects 1 or more, or --select last")
        rule = t.rule()  # a stopping rule that cannot stop fails here, before any work
        phases = rule.reductions + 1  # each phase lasts at least the patience; the last plateau stops
        if t.schedule == "plateau" and settings.val_subjects > 0 and phases * rule.patience > rule.max_checks:
            self.reporter.warn(f"{phases} phase(s) of at least {rule.patience} checks (patience) do not fit in the "
                               f"cap of {rule.max_checks}: no run can stop on a plateau, every run will end at the "
                               f"cap, not converged (raise --max-checks to {phases * rule.patience} or more, or lower "
                               "--patience)")
        if settings.data is None:  # the phantom's size is known before it is made
            test = -(-settings.target_subjects // settings.folds) if settings.folds > 1 else settings.test_subjects
            held_out = test + settings.val_subjects
            check_budgets(() if settings.budget_minutes else settings.ns, settings.target_subjects - held_out,
                          settings.test_subjects, settings.val_subjects)
        self.inits = parse_inits(",".join(settings.inits))
        # checkpoints are read (and their head mapped) now, so a bad file fails before any work
        self.checkpoints = {i.name: train.read_checkpoint(i.path, checkpoint_classes(settings))
                            for i in self.inits if i.kind == "checkpoint"}
        if any(i.kind == "source" for i in self.inits) and not self.base_path()[0].exists():
            check_weights_reachable(settings.pretrain.encoder_weights)  # pre-training will need them: fail now
        if any(i.kind == "imagenet" for i in self.inits):
            check_weights_reachable("imagenet")
        self.selection_checkpoint = None
        if settings.selection_model:
            kind, _, path = settings.selection_model.partition(":")
            if kind != "checkpoint" or not path:
                raise UsageError(f"--selection-model '{settings.selection_model}': give checkpoint:PATH (a "
                                 "`harness pretrain` output or an smp U-Net state_dict)")
            self.selection_checkpoint = train.read_checkpoint(Path(path).expanduser(), checkpoint_classes(settings))
        aware = [n for n, s in self.strategies.items() if model_aware(s)]
        bare = [i.text for i in self.inits if not i.has_base]
        if aware and bare and not settings.selection_model:
            raise UsageError(f"{', '.join(aware)} read a selection model's predictions, but --init {', '.join(bare)} "
                             "has no trained model to predict with; give --selection-model checkpoint:PATH (e.g. a "
                             "`harness pretrain` output)")
        if settings.budget_minutes:
            unranked = [n for n, s in self.strategies.items() if not callable(getattr(s, "rank", None))]
            if unranked:
                raise UsageError(f"--budget-minutes: {', '.join(unranked)} cannot spend a budget of expert minutes "
                                 "(no rank(pool, rng)); leave them out or use --n (`harness strategies` says which can)")

    def _phantom(self, domain: str, count: int) -> CineDataset:
        with self.reporter.task(f"phantom {domain} subjects", total=count) as task:
            return phantom_dataset(domain, count, self.settings.data_seed, self.settings.train.size,
                                   self.cache / "phantom", on_subject=lambda done, total: task.update(completed=done))

    def load_source(self) -> CineDataset:
        return self._phantom("source", self.settings.source_subjects)

    def load_target(self) -> CineDataset:
        """The data fine-tuning and evaluation use: the user's folder, or the phantom's target domain."""
        s = self.settings
        if s.data is None:
            return self._phantom("target", s.target_subjects)
        located = locate(Path(s.data), s.data_format)
        self.reporter.say(f"data: detected {FORMATS[located.format]} in {located.root}, "
                          f"{len(located.subjects)} subjects")
        with self.reporter.task("reading subjects", total=len(located.subjects)) as task:
            dataset = load_dataset(located.root, located.format, LabelMap.parse(s.labels) if s.labels else None,
                                   s.train.size, self.cache, on_subject=lambda done, total: task.update(completed=done),
                                   skip_bad=s.skip_bad)
        for warning in data_warnings(dataset):
            self.reporter.warn(warning)
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
        self.reporter.say(f"Pre-training the base model on the source-domain phantom ({len(source.index)} images, "
                          f"{p.steps} steps, {p.encoder}); cached as {path} for later studies")
        with self.reporter.task("pre-training", total=p.steps) as task:
            pretrain_on(source, p, path, source={"phantom": "source domain (1.5T bSSFP-like)", "fingerprint": key},
                        on_step=task.advance)
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

    def check_source_overlap(self, dataset: CineDataset, splits: list[dict[str, list[str]]]) -> dict[str, Any]:
        """Per init with a source model: which test and validation subjects (of any fold) it was pre-trained on,
        by image content. Any overlap stops the study unless ``allow_source_overlap``; the result goes to
        study.json, where the report reads it (overlap, or why it could not be checked)."""
        held = sorted({s for split in splits for s in split["test"] + split["validation"]})
        models = []  # (name in study.json, flag text, card)
        for init in self.inits:
            if not init.has_base:
                continue
            if init.kind == "checkpoint":
                card = self.checkpoints[init.name].card
            else:
                path = self.base_model()[0]
                card_file = train.card_path(path)
                card = json.loads(card_file.read_text()) if card_file.exists() else train.read_checkpoint(path).card
            models.append((init.name, f"--init {init.text}", card))
        if self.selection_checkpoint is not None and any(model_aware(s) for s in self.strategies.values()):
            # the frames a run trains on depend on it: it must not have seen the test subjects either
            models.append(("selection-model", f"--selection-model {self.settings.selection_model}",
                           self.selection_checkpoint.card))
        out = {}
        for name, flag, card in models:
            result = source_overlap(card, dataset, held)
            if not result["checked"]:
                self.reporter.warn(f"{flag}: whether its source model saw this study's test subjects "
                                   f"cannot be checked: {result['why']}")
            found = result.get("subjects") or []
            if found and not self.settings.allow_source_overlap:
                names = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
                raise UsageError(f"{flag}: its source model was trained on images of {len(found)} of this "
                                 f"study's {len(held)} test and validation subjects ({names}), so their Dice would be "
                                 "optimistic; pre-train it without them, or give --allow-source-overlap to run anyway "
                                 "(the report then says so first)")
            out[name] = result
        return out

    def selection_models(self, inits: dict[str, tuple[Init, str]]) -> dict[str, tuple[str, Any]]:
        """Init name -> (fingerprint, checkpoint) of the model whose view its model-aware runs read: the
        --selection-model for every init, else the init's own trained model (inits without one have none)."""
        if self.selection_checkpoint is not None:
            return {name: (self.selection_checkpoint.fingerprint, self.selection_checkpoint) for name in inits}
        out = {}
        for name, (init, key) in inits.items():
            if init.kind == "source":
                out[name] = (key, train.read_checkpoint(self.base_model()[0]))
            elif init.kind == "checkpoint":
                out[name] = (key, self.checkpoints[name])
        return out

    def make_views(self, dataset: CineDataset, splits: list[dict[str, list[str]]],
                   models: dict[str, tuple[str, Any]]) -> dict[str, dict[str, Any]]:
        """Compute (or find in the cache) the selection models' views of every subject that is in some fold's
        training pool: from images only, once per subject and model. Returns per model fingerprint what it cost."""
        subjects = sorted({s for split in splits for s in split["pool"]})
        t = self.settings.train
        costs = {}
        for key, checkpoint in dict(models.values()).items():
            def make(checkpoint=checkpoint):  # a checkpoint's card says its architecture; else the study's
                arch = checkpoint.architecture or {"encoder": t.encoder, "decoder_channels": t.decoder_channels}
                return train.model_from_checkpoint(checkpoint, arch["encoder"], tuple(arch["decoder_channels"]))

            with self.reporter.task("selection model's view of the pool (images)", total=None) as task:
                cost = pool_view.ensure(dataset, subjects, key, make, self.cache, t.precision,
                                        on_images=lambda done, total: task.update(completed=done, total=total))
            # how well the view's ED/ES match the labels' (pool subjects only; for the report, never a strategy)
            view, _ = pool_view.load(dataset, subjects, key, self.cache, t.precision)
            errors = pool_view.frame_errors(dataset.index, view)
            costs[key] = {**cost.to_dict(), "subjects": len(subjects), "frame_error": {
                "subjects": len(errors), "ed_mean": _mean(errors["ed_error"]), "es_mean": _mean(errors["es_error"]),
                "ed_exact": _mean(errors["ed_error"] == 0), "es_exact": _mean(errors["es_error"] == 0),
                "labelled_frames_median": _mean(errors["labelled_frames"], median=True),
                "per_subject": errors.to_dict("records")}}
            if cost.computed:
                self.reporter.say(f"selection model {key}: view of {cost.computed} pool images computed in "
                                  f"{cost.seconds:.0f} s ({cost.seconds_per_1000} s per 1,000 images); cached")
        return costs

    def context(self, dataset: CineDataset) -> RunContext:
        """What a worker needs to execute this study's runs: files in the cache, named by fingerprints."""
        if dataset.path is None:
            raise UsageError("the study's dataset has no file in the cache; give --cache-dir")
        needs_base = any(i.kind == "source" for i in self.inits)
        return RunContext(study=str(self.store.root.resolve()), settings=self.settings,
                          dataset=str(Path(dataset.path).resolve()),
                          base=str(self.base_path()[0].resolve()) if needs_base else None,
                          stale_after=self.store.stale_after, cache=str(Path(self.cache).resolve()))

    def initial_model(self, spec, settings):
        """The model a run starts from (for tuning, which fine-tunes outside the store)."""
        return initial_model(spec, settings, RunContext(study=".", settings=self.settings, dataset="",
                                                          base=str(self.base_path()[0])))

    def run(self, executor: Executor | None = None, retry_failed: bool = False,
            design: Design | None = None) -> dict[str, Any]:
        """Hand every unfinished run to ``executor`` (default: this process); returns what happened: counts of
        done, skipped, failed and unfinished runs, with the failures' reasons. With a sequential ``design``
        (``--until-decided``) the grid grows in rounds of seeds until every question is decided."""
        if self.store is None:
            raise ValueError("Study.run needs a RunStore")
        executor = executor or InProcessExecutor()
        started = time.perf_counter()
        prepared = self._prepare()
        if design is None:
            summary = self._run_specs(prepared, plan(self.settings, self.strategies, *prepared["plan"]), executor,
                                      retry_failed)
            return {**summary, "seconds": round(time.perf_counter() - started, 1)}
        return {**self._run_rounds(prepared, executor, retry_failed, design),
                "seconds": round(time.perf_counter() - started, 1)}

    def _prepare(self) -> dict[str, Any]:
        """Everything the grid needs before any run: data, folds, initial models and their checks, views."""
        s = self.settings
        target = self.load_target()
        splits = fold_splits(target.subjects, s)
        for split in splits:
            check_budgets(() if s.budget_minutes else s.ns, len(split["pool"]), len(split["test"]),
                          len(split["validation"]))
        inits = self.init_fingerprints()
        overlap = self.check_source_overlap(target, splits)
        # never parameters chosen on a fold's test subjects, or for other data or weights
        check_tuned(s.tuned, splits, target.fingerprint, {name: key for name, (_, key) in inits.items()})
        views: dict[str, Any] = {}
        selections: dict[str, str] = {}
        if any(model_aware(st) for st in self.strategies.values()):
            models = self.selection_models(inits)
            selections = {name: key for name, (key, _) in models.items()}
            views = self.make_views(target, splits, models)
        study = {**s.to_dict(), "split": splits[0], "splits": splits,
                 "init_names": list(inits),
                 "init_models": {name: {"kind": init.kind, "text": init.text, "fingerprint": key,
                                        "card": self.checkpoints[name].card if name in self.checkpoints else None}
                                 for name, (init, key) in inits.items()},
                 "dataset": target.fingerprint, "dataset_name": target.name,
                 "source_overlap": overlap,
                 "selection_models": selections, "pool_views": views,
                 "strategy_uses": {name: sorted(uses_of(st)) for name, st in self.strategies.items()},
                 "data_warnings": data_warnings(target),
                 "subjects_total": len(target.subjects)}
        return {"target": target, "study": study, "inits": list(inits),
                "plan": (target, splits, inits, selections)}

    def _run_specs(self, prepared: dict[str, Any], specs: list, executor: Executor, retry_failed: bool,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Record the grid ``specs`` in study.json and run those not finished."""
        self.store.write_study({**prepared["study"], **(extra or {}), "runs": [sp.folder_name for sp in specs]})
        self.store.sweep()
        states = {sp.folder_name: self.store.state(sp) for sp in specs}
        for name, state in states.items():
            if state.state == "corrupt":
                self.reporter.warn(f"run {name}: its result is corrupt ({state.reason}); running it again")
        todo = [sp for sp in specs if states[sp.folder_name].state in ("pending", "corrupt")
                or (retry_failed and states[sp.folder_name].state == "failed")]
        before = sum(st.state == "done" for st in states.values())
        failed_before = sum(st.state == "failed" for st in states.values()) if not retry_failed else 0
        if todo:
            self.reporter.say(f"{len(todo)} of {len(specs)} runs to do ({before} already finished"
                              + (f", {failed_before} failed before: --retry-failed runs them again" if failed_before
                                 else "") + f"); executor: {executor.describe()}")
            self._execute(executor, self.context(prepared["target"]), todo, retry_failed)
        after = {sp.folder_name: self.store.state(sp, verify=False) for sp in todo}
        failed = [f"{name}: {st.reason.strip().splitlines()[-1] if st.reason.strip() else 'unknown'}"
                  for name, st in after.items() if st.state == "failed"]
        return {"planned": len(specs), "skipped": len(specs) - len(todo),
                "done": sum(st.state == "done" for st in after.values()), "failed": failed,
                "failed_before": failed_before,
                "unfinished": [name for name, st in after.items() if st.state not in ("done", "failed")],
                "specs": specs}

    def _run_rounds(self, prepared: dict[str, Any], executor: Executor, retry_failed: bool,
                    design: Design) -> dict[str, Any]:
        """Rounds of seeds until every question is decided or --max-seeds is reached (harness.rounds). A round's
        decisions are taken once its runs are all finished and recorded in rounds.json; a command that finds
        them recorded (resumed, or a second command on the study) continues from them."""
        s = self.settings
        design = dataclasses.replace(design, grid={
            "strategies": list(s.strategies), "params": s.params, "budgets": list(budgets(s)),
            "unit": "minutes" if s.budget_minutes else "subjects", "inits": list(s.inits), "folds": s.folds,
            "first_seed": s.first_seed})
        design.check()
        check_reference(design.reference, s)
        inits = prepared["inits"]
        rounds = Rounds.read(self.store.root, design).fix_design(self.store.root)
        first_pass = True
        total = {"done": 0, "skipped": 0, "failed": [], "failed_before": 0, "unfinished": []}
        while True:
            settled = rounds.finished()  # every question decided: the last round's grid again, nothing decided
            number = len(rounds.rounds) + (0 if settled else 1)
            seeds = design.seeds_at(number)
            full = plan(dataclasses.replace(s, seeds=seeds), self.strategies, *prepared["plan"])
            specs = [sp for sp in full if sp.strategy == BASE
                     or sp.seed - s.first_seed < rounds.seeds_of(method_label(sp.strategy, sp.init, inits), sp.n,
                                                                 number)]
            if settled:
                self.reporter.say(f"every question was decided in round {number} (rounds.json); nothing to add")
            else:
                self.reporter.say(f"round {number} of at most {design.rounds}: {seeds} seeds for "
                                  + (f"{len(rounds.rounds[-1]['needs'])} open configurations" if rounds.rounds
                                     else "every configuration"))
            summary = self._run_specs(prepared, specs, executor, retry_failed and first_pass,
                                      {"until_decided": design.to_dict()})
            first_pass = False
            for key in ("done", "skipped", "failed_before"):
                total[key] += summary[key]
            total["failed"] += summary["failed"]
            total["unfinished"] = summary["unfinished"]
            total.update(planned=summary["planned"], specs=specs)
            # a detached executor (SLURM --detach) returns with the round's runs queued: they are unfinished
            if settled or summary["failed"] or summary["unfinished"] or summary["failed_before"]:
                return {**total, "rounds": rounds.rounds}  # a round decides only on all its runs
            rounds = Rounds.read(self.store.root, design)
            if len(rounds.rounds) < number:  # else another command decided this round first: its record stands
                done = [sp for sp in specs if self.store.state(sp, verify=False).state == "done"]
                record = look(scores_of(self.store, done, inits, s.empty), rounds, seeds,
                              final=seeds >= design.max_seeds)
                rounds = rounds.record(self.store.root, {"round": number, **record})
                record = rounds.rounds[number - 1]
                counts = {d: sum(q["decision"] == d for q in record["questions"].values())
                          for d in ("shown", "futile", "not shown", "not tested", "open")}
                self.reporter.say(f"round {number} ({seeds} seeds): " + ", ".join(f"{v} {k}" for k, v in counts.items()
                                                                              if v) + " of the questions looked at")
            if rounds.finished():
                return {**total, "rounds": rounds.rounds}

    def _execute(self, executor: Executor, context: RunContext, todo: list, retry_failed: bool) -> None:
        """Run ``todo``; runs that another command holds are waited for (and taken over if it dies), so a
        command returns when its whole grid is finished, or when no live process holds what is left."""
        while todo:
            executor.run(context, todo, self.reporter, retry_failed)
            if executor.detaches:
                return
            left = [sp for sp in todo if self.store.state(sp, verify=False).state == "pending"]
            held = [sp for sp in left if (c := self.store.read_claim(sp.folder_name)) and not c["stale"]]
            if not held:
                return
            total = len(held)
            with self.reporter.task(f"waiting for {total} runs another process holds", total=total) as task:
                while held:
                    time.sleep(1.0)
                    held = [sp for sp in held if (c := self.store.read_claim(sp.folder_name)) and not c["stale"]]
                    task.update(completed=total - len(held))
            todo = [sp for sp in left if self.store.state(sp, verify=False).state == "pending"]
            retry_failed = False

