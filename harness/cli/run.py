"""`harness run`: fine-tune on every subset of the grid, evaluate, and write the report."""
from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from harness.cli.data import add_data_arguments
from harness.cli.report import add_statistics_arguments, options_from
from harness.cli.options import add_model_arguments, parse_ns, parse_params, parse_strategies, settings_from
from harness.errors import UsageError
from harness.inits import parse_inits
from harness.train.settings import FIXED_CHECKS, SCHEDULES, TrainSettings
from harness.cli.console import LogReporter, RichReporter, summary_table
from harness.grid import StudySettings
from harness.store import RunStore

EXAMPLE = """examples:
  python -m harness run --strategy ed_es --n 2,5,10                       # the default study on the phantom
  python -m harness run --data /data/my7T --init checkpoint:models/acdc.pt,random \\
      --strategy ed_es,all_frames --n 1,3,7,14 --schedule paper --executor local --workers 4"""
HELP = "run a data-efficiency study (strategies x n x seeds) and write report.md / report.html"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, metavar="DIR",
                   help="folder of real cine data (default: the built-in phantom); see `harness data inspect`")
    add_data_arguments(p)
    p.add_argument("--strategy", default="ed_es", help="strategy name(s), comma list, or 'all' (default ed_es)")
    p.add_argument("--n", default=None, help="labelled-subject budgets, comma list (default 2,5,10)")
    p.add_argument("--budget-minutes", default=None, metavar="30,60,120",
                   help="instead of --n: budgets of expert minutes under --cost-model (default contours); every "
                        "strategy gets the same expert time, cut from its ranking of the pool (nested, paired)")
    p.add_argument("--cost-model", default=None, metavar="MODEL",
                   help="what labelling an image costs: images (1 each; the default with --n), contours (expert "
                        "seconds by slice region for LV endo- and epicardium; the default with --budget-minutes), "
                        "contours:lv_endo,lv_epi,rv_endo (what is drawn), or your .toml/.json table "
                        "(harness/cost.py shows its shape); every run records its cost")
    p.add_argument("--selection-model", default=None, metavar="checkpoint:PATH",
                   help="the model whose predictions model-aware strategies (ed_es_predicted, foreground_random, "
                        "uncertain, typical) read (default: the run's --init model, where it has one)")
    p.add_argument("--seeds", type=int, default=2, help="repeats per configuration and fold (default 2)")
    p.add_argument("--until-decided", action="store_true",
                   help="run in rounds of --seeds seeds, adding seeds only where a question (a non-inferiority "
                        "step, or two strategies at one budget) is still open, with group-sequential error control "
                        "(rounds.json records each round)")
    p.add_argument("--max-seeds", type=int, default=None, metavar="S",
                   help="with --until-decided: the most seeds any configuration gets (default 10)")
    p.add_argument("--spending", choices=["obrien-fleming", "pocock"], default="obrien-fleming",
                   help="with --until-decided: the alpha-spending function (Lan-DeMets; default obrien-fleming)")
    p.add_argument("--folds", type=int, default=3,
                   help="cross-validation over subjects: every subject is a test subject once (default 3; "
                        "1 = one split with --test-subjects)")
    p.add_argument("--out", default="studies/default", help="study folder (default studies/default)")
    p.add_argument("--strategy-param", action="append", default=[], metavar="STRATEGY.KEY=VALUE",
                   help="set a strategy parameter, e.g. subject_random.per_subject=20 (repeatable)")
    p.add_argument("--init", default="source", metavar="INIT[,INIT...]",
                   help="where fine-tuning starts, a grid axis: source (the phantom base model, default), "
                        "checkpoint:PATH (your model), imagenet, random; a comma list compares them on the same "
                        "subjects and seeds")
    p.add_argument("--allow-source-overlap", action="store_true",
                   help="run even though a source model (--init) was trained on images of this study's test or "
                        "validation subjects (found by image content); the report then says so first")
    p.add_argument("--checkpoint-classes", default=None, metavar="background,rv,my,lv",
                   help="classes of a plain state_dict's head, in order, when it has other than "
                        "background, LV, MY (harness checkpoints say it in their card)")
    d = TrainSettings()
    p.add_argument("--schedule", choices=sorted(SCHEDULES), default=None,
                   help="plateau (default): every layer trained until validation Dice stops improving (the stopping "
                        f"rule: --patience, --patience-fraction, --min-delta, --max-checks; the first {d.reductions} "
                        f"plateaus lower the learning rate {1 / d.reduce_factor:g}-fold, the next stops), the best "
                        "check's weights kept, the start "
                        "included; fast: fixed steps per stage (--steps, which implies it); paper: the published protocol (lr 1e-4 then "
                        "1e-5, E = round(epochs x pool images / subset images) epochs per stage, last weights)")
    p.add_argument("--patience", type=int, default=None,
                   help=f"plateau schedule: checks without an improvement that make a plateau, at least (default {d.patience}; "
                        f"more where the last improvement took longer: {d.patience_fraction:g} x its checks)")
    p.add_argument("--patience-fraction", type=float, default=None,
                   help=f"plateau schedule: the patience as a share of the checks the last improvement took, where that "
                        f"is more than --patience (default {d.patience_fraction:g}); doubling both doubles the patience")
    p.add_argument("--min-delta", type=float, default=None,
                   help=f"plateau schedule: validation Dice an improvement must exceed (default {d.min_delta:g})")
    p.add_argument("--max-checks", type=int, default=None,
                   help=f"plateau schedule: the cap, in checks of at least one epoch (default {d.max_checks}); a run "
                        "that reaches it while still improving is reported as not converged")
    p.add_argument("--steps", type=int, default=None,
                   help="fast schedule: optimiser steps per fine-tuning stage (default 100 + 100 on real data; "
                        "50 + 50 on the phantom)")
    p.add_argument("--epochs", type=int, default=None,
                   help="paper schedule: epochs per stage on the whole pool (default 10, as published)")
    p.add_argument("--tuned", action="store_true",
                   help="use the best parameters `harness tune` found for each strategy / init / n (tuned.json "
                        "in --out)")
    p.add_argument("--select", choices=["last", "best-val"], default=None,
                   help="keep the weights with the best validation Dice at the checks, the starting ones included "
                        "(default of the plateau schedule), or the last (default of fast and paper, as published)")
    p.add_argument("--empty", choices=["both-one", "ignore"], default="both-one",
                   help="Dice when both masks are empty: 1 (both-one, as published) or left out (ignore)")
    p.add_argument("--target-subjects", type=int, default=24, help="phantom target subjects (default 24)")
    p.add_argument("--val-subjects", type=int, default=2, help="held-out validation subjects (default 2)")
    p.add_argument("--source-subjects", type=int, default=16,
                   help="phantom source-domain subjects for pre-training the base model (default 16)")
    p.add_argument("--test-subjects", type=int, default=8, help="held-out test subjects with --folds 1 (default 8)")
    p.add_argument("--test-stride", type=int, default=None, metavar="K",
                   help="test images scored per subject: every labelled frame (1; the default on real data, as "
                        "published) or ED, ES and every K-th frame of the cycle from ED (default 3 on the phantom, "
                        "whose every frame is labelled: the whole cycle at a third of the cost)")
    out = p.add_argument_group("output")
    out.add_argument("--quiet", action="store_true",
                     help="no live progress bars: plain, timestamped lines (for log files and SLURM output)")
    out.add_argument("--json", action="store_true",
                     help="print a machine-readable summary on stdout (runs, failures, report paths, every "
                          "non-inferiority verdict); everything else goes to stderr")
    add_model_arguments(p)
    add_statistics_arguments(p)
    add_executor_arguments(p)


def add_executor_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where runs happen")
    g.add_argument("--executor", choices=["inprocess", "local", "slurm"], default="local",
                   help="local (default): --workers processes on this machine, 1 CPU thread per run each; "
                        "inprocess: one run after another in this process (for debugging); slurm: a SLURM job "
                        "array through submitit")
    g.add_argument("--workers", type=int, default=None,
                   help="local: worker processes (default: this machine's CPU cores, at most 8)")
    g.add_argument("--devices", default=None, metavar="0,1",
                   help="local: GPUs to spread the workers over (several workers may share one)")
    g.add_argument("--slurm-partition", default=None, help="slurm: partition (default: the cluster's default)")
    g.add_argument("--slurm-gpus", type=int, default=0, help="slurm: GPUs per task (default 0)")
    g.add_argument("--slurm-cpus", type=int, default=2, help="slurm: CPUs per task (default 2)")
    g.add_argument("--slurm-mem", type=float, default=8.0, metavar="GB", help="slurm: memory per task (default 8)")
    g.add_argument("--slurm-time", type=int, default=60, metavar="MIN",
                   help="slurm: time limit per task in minutes (default 60)")
    g.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="slurm: extra sbatch option, e.g. account=lab or qos=short (repeatable)")
    g.add_argument("--max-parallel", type=int, default=20, help="slurm: array tasks running at once (default 20)")
    g.add_argument("--detach", action="store_true",
                   help="slurm: return once the array is queued; `harness status` follows it, and `run` or "
                        "`report` with the same --out picks the results up")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads per run (default 1); part of each run's settings, because CPU kernels split "
                        "their sums by thread: fixed, a run gives the same Dice in any executor")
    g.add_argument("--retry-failed", action="store_true",
                   help="run failed runs again (without it, a repeated command only starts unfinished runs)")
    g.add_argument("--stale-after", type=float, default=600.0, metavar="SECONDS",
                   help="a run claimed by a process with no heartbeat for this long is taken over (default 600; "
                        "a claim of a dead process on this host at once)")


def make_executor(args: argparse.Namespace):
    """The executor the flags ask for."""
    from harness.executors import InProcessExecutor, LocalExecutor, SlurmExecutor, SlurmOptions

    if args.executor == "local":
        from harness.executors.local import default_workers

        devices = tuple(d.strip() for d in args.devices.split(",") if d.strip()) if args.devices else ()
        return LocalExecutor(args.workers if args.workers is not None else default_workers(), devices)
    if args.executor == "slurm":
        from harness.executors.slurm import parse_option, require_slurm

        options = dict(parse_option(item) for item in args.slurm_option)
        if args.max_parallel < 1 or args.slurm_cpus < 1 or args.slurm_time < 1:
            raise UsageError("--max-parallel, --slurm-cpus and --slurm-time must be at least 1")
        require_slurm()
        return SlurmExecutor(SlurmOptions(args.slurm_partition, args.slurm_gpus, args.slurm_cpus, args.slurm_mem,
                                          args.slurm_time, args.max_parallel, options, args.detach))
    if args.detach:
        raise UsageError("--detach needs --executor slurm")
    return InProcessExecutor()


# The phantom's defaults keep the default study near 5 minutes on 2 CPU cores (version 0.5; 100 + 100 steps
# and every frame took 12 minutes, with the same verdicts and Dice about 0.04 higher): half the fine-tuning
# steps of real data, and a third of the test frames (every phantom frame is labelled).
PHANTOM_STEPS = 50
PHANTOM_TEST_STRIDE = 3


def training_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The schedule's settings, then the flags that override them."""
    schedule = args.schedule or ("fast" if args.steps is not None else "plateau")  # --steps alone: fast
    if args.steps is not None and schedule != "fast":
        raise UsageError(f"--steps sets the fast schedule's steps; leave out --schedule {schedule}"
                         + (", or use --epochs" if schedule == "paper" else " (plateau trains until validation stops "
                            "improving)"))
    if args.epochs is not None and schedule != "paper":
        raise UsageError("--epochs sets the paper schedule's epochs; add --schedule paper")
    out: dict[str, Any] = {"schedule": schedule, **SCHEDULES[schedule]}
    if args.select is not None:
        out["select"] = args.select
    for flag, name in (("--patience", "patience"), ("--patience-fraction", "patience_fraction"),
                       ("--min-delta", "min_delta"), ("--max-checks", "max_checks")):
        value = getattr(args, name, None)
        if value is None:
            continue
        if schedule != "plateau":
            raise UsageError(f"{flag} belongs to the stopping rule of --schedule plateau (the default); leave it "
                             f"out with --schedule {schedule}")
        out[name] = value
    rule = {k: out[k] for k in ("patience", "patience_fraction", "min_delta", "max_checks") if k in out}
    if schedule == "plateau" and getattr(args, "val_subjects", None) == 0 and (rule or args.select == "best-val"):
        flags = (("--patience", "patience"), ("--patience-fraction", "patience_fraction"), ("--min-delta", "min_delta"),
                 ("--max-checks", "max_checks"))
        given = [f for f, k in flags if k in rule] + (["--select best-val"] if args.select == "best-val" else [])
        raise UsageError(f"{', '.join(given)}: the stopping rule reads validation Dice, but --val-subjects is 0 (the "
                         f"plateau schedule "
                         f"then trains {FIXED_CHECKS} fixed intervals and keeps the last weights); leave them out or "
                         "give --val-subjects 1 or more")
    if rule:
        dataclasses.replace(TrainSettings(), **rule).rule()  # a bad value fails here, before any work
    if args.steps is None and schedule == "fast" and not getattr(args, "data", None):
        out.update(steps_frozen=PHANTOM_STEPS, steps_unfrozen=PHANTOM_STEPS)
    if args.steps is not None:
        if args.steps < 1:
            raise UsageError(f"--steps {args.steps}: need at least 1 step per stage")
        out.update(steps_frozen=args.steps, steps_unfrozen=args.steps)
    if args.threads is not None:
        if args.threads < 1:
            raise UsageError(f"--threads {args.threads}: need at least 1 CPU thread per run")
        out["threads"] = args.threads
    if args.epochs is not None:
        if args.epochs < 1:
            raise UsageError(f"--epochs {args.epochs}: need at least 1 epoch per stage")
        out["epochs"] = args.epochs
    return out


def stride_from(args: argparse.Namespace) -> int:
    """--test-stride, else 1 on real data (every labelled frame, as published) and 3 on the phantom."""
    given = getattr(args, "test_stride", None)
    if given is None:
        return 1 if args.data else PHANTOM_TEST_STRIDE
    if given < 1:
        raise UsageError(f"--test-stride {given}: give 1 (every labelled test frame) or more")
    return given


def study_settings(args: argparse.Namespace) -> StudySettings:
    """The study `run` (and `tune`) describe, from the command line."""
    if args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds}: need at least 1 (3 or more to see seed-to-seed variation)")
    train = training_overrides(args)
    inits = parse_inits(args.init)
    study = {"data": args.data, "data_format": args.format, "labels": args.labels, "skip_bad": args.skip_bad,
             "strategies": parse_strategies(args.strategy),
             "ns": parse_ns("2,5,10" if args.n is None else args.n), "seeds": args.seeds,
             "inits": tuple(i.text for i in inits), "checkpoint_classes": args.checkpoint_classes,
             "allow_source_overlap": args.allow_source_overlap,
             "folds": args.folds,
             "params": parse_params(args.strategy_param), "empty": args.empty,
             "target_subjects": args.target_subjects, "source_subjects": args.source_subjects,
             "test_subjects": args.test_subjects, "val_subjects": args.val_subjects,
             "test_stride": stride_from(args), **cost_settings(args)}
    if getattr(args, "tuned", False):
        from harness.tune import tuned_overrides

        if study["budget_minutes"]:
            raise UsageError("--tuned uses parameters tuned at budgets of subjects (--n); it cannot be combined "
                             "with --budget-minutes")

        study["tuned"] = tuned_overrides(Path(args.out), study["strategies"], [i.name for i in inits], study["ns"])
    return settings_from(args, study, train)


def cost_settings(args: argparse.Namespace) -> dict[str, Any]:
    """--budget-minutes, --cost-model and --selection-model as study fields."""
    from harness.cost import parse_cost_model

    minutes = getattr(args, "budget_minutes", None)
    if minutes is not None and getattr(args, "n", None) is not None:
        raise UsageError("give --n (budgets of subjects) or --budget-minutes (budgets of expert minutes), not both")
    text = getattr(args, "cost_model", None) or ("contours" if minutes is not None else "images")
    model = parse_cost_model(text)
    budgets: tuple[int, ...] = ()
    if minutes is not None:
        if model.unit != "minutes":
            raise UsageError(f"--budget-minutes needs a cost model in minutes (contours or a table), not "
                             f"--cost-model {text}")
        try:
            budgets = tuple(sorted({int(part) for part in minutes.split(",") if part.strip()}))
        except ValueError:
            budgets = ()
        if not budgets or min(budgets) < 1:
            raise UsageError(f"--budget-minutes '{minutes}' is not a comma list of positive whole minutes; "
                             "e.g. --budget-minutes 30,60,120")
    return {"cost_model": model.to_dict(), "budget_minutes": budgets,
            "selection_model": getattr(args, "selection_model", None)}


def execute(args: argparse.Namespace, console: Console) -> int:
    from harness.runner import Study

    settings = study_settings(args)
    executor = make_executor(args)
    store = RunStore(Path(args.out), args.stale_after)
    store.prepare()
    reporter = LogReporter(console) if args.quiet else RichReporter(console)
    design = sequential_design(args)
    study = Study(settings, store, reporter, Path(args.cache_dir) if args.cache_dir else None)
    summary = study.run(executor, retry_failed=args.retry_failed, design=design)
    unfinished = summary["unfinished"]
    if args.detach and unfinished:
        console.print(f"{len(unfinished)} runs queued on SLURM. Follow them: python -m harness status {store.root}\n"
                      f"Report when they are done: python -m harness report {store.root}", highlight=False,
                      markup=False)
        if args.json:
            print(json.dumps(json_summary(store.root, summary, None, None)))
        return 0
    from harness.reports.render import render

    md, html = render(store.root, options_from(args))
    console.print(summary_table(store.root / "tables"))
    console.print(f"{summary['done']} runs done, {summary['skipped']} already finished, "
                  f"{len(summary['failed'])} failed, in {summary['seconds']:.0f} s")
    for failure in summary["failed"]:
        console.print(f"[red]failed:[/] {escape(failure)}", highlight=False, soft_wrap=True)
    if summary["failed_before"]:
        console.print(f"{summary['failed_before']} runs failed in an earlier command (not run again; "
                      "--retry-failed runs them); `harness status` lists them")
    if unfinished:
        console.print(f"[yellow]{len(unfinished)} runs unfinished[/] (a worker stopped); the same command resumes "
                      "them", highlight=False)
    console.print(f"report: {md}\n        {html}", highlight=False, markup=False)
    if args.json:
        print(json.dumps(json_summary(store.root, summary, md, html)))
    return 1 if summary["failed"] or summary["failed_before"] or unfinished else 0


def sequential_design(args: argparse.Namespace):
    """--until-decided, --max-seeds and --spending as a sequential design (None without --until-decided)."""
    from harness.rounds import Design

    if not args.until_decided:
        if args.max_seeds is not None or args.spending != "obrien-fleming":
            raise UsageError("--max-seeds and --spending belong to --until-decided; add it, or leave them out")
        return None
    design = Design(reference=args.reference, margin=args.margin, alpha=0.05, per_round=args.seeds,
                    max_seeds=10 if args.max_seeds is None else args.max_seeds, spending=args.spending)
    design.check()
    return design


def json_summary(root: Path, summary: dict, md: Path | None, html: Path | None) -> dict[str, Any]:
    """What `run --json` prints: the command's outcome and, once reported, every non-inferiority verdict."""
    import pandas as pd

    verdicts = []
    table = root / "tables" / "noninferiority.csv"
    if md is not None and table.exists() and table.stat().st_size > 1:
        ni = pd.read_csv(table)
        keep = ["strategy", "n", "reference", "metric", "margin", "difference", "ci_level", "ci_low", "ci_high",
                "p", "subjects", "non_inferior", "reason", "sequential"]
        ni = ni[[c for c in keep if c in ni]].astype(object).where(ni.notna(), None)
        verdicts = ni.to_dict("records")
    return {"study": str(root), "done": summary["done"], "already_finished": summary["skipped"],
            "failed": list(summary["failed"]), "failed_before": summary["failed_before"],
            "unfinished": list(summary["unfinished"]), "seconds": summary["seconds"],
            "report_md": str(md) if md else None, "report_html": str(html) if html else None,
            "noninferiority": verdicts}
