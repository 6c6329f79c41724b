"""`harness run`: fine-tune on every subset of the grid, evaluate, and write the report."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from harness.cli.data import add_data_arguments
from harness.cli.report import add_statistics_arguments, options_from
from harness.cli.options import add_model_arguments, parse_ns, parse_params, parse_strategies, settings_from
from harness.errors import UsageError
from harness.runner import Study
from harness.store import RunStore

HELP = "run a data-efficiency study (strategies x n x seeds) and write report.md / report.html"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, metavar="DIR",
                   help="folder of real cine data (default: the built-in phantom); see `harness data inspect`")
    add_data_arguments(p)
    p.add_argument("--strategy", default="ed_es", help="strategy name(s), comma list, or 'all' (default ed_es)")
    p.add_argument("--n", default="2,5,10", help="labelled-subject budgets, comma list (default 2,5,10)")
    p.add_argument("--seeds", type=int, default=2, help="repeats per configuration and fold (default 2)")
    p.add_argument("--folds", type=int, default=3,
                   help="cross-validation over subjects: every subject is a test subject once (default 3; "
                        "1 = one split with --test-subjects)")
    p.add_argument("--out", default="studies/default", help="study folder (default studies/default)")
    p.add_argument("--strategy-param", action="append", default=[], metavar="STRATEGY.KEY=VALUE",
                   help="set a strategy parameter, e.g. subject_random.per_subject=20 (repeatable)")
    p.add_argument("--steps", type=int, default=None,
                   help="optimiser steps per fine-tuning stage (default 100 + 100)")
    p.add_argument("--empty", choices=["both-one", "ignore"], default="both-one",
                   help="Dice when both masks are empty: 1 (both-one, as published) or left out (ignore)")
    p.add_argument("--target-subjects", type=int, default=24, help="phantom target subjects (default 24)")
    p.add_argument("--val-subjects", type=int, default=2, help="held-out validation subjects (default 2)")
    p.add_argument("--source-subjects", type=int, default=16,
                   help="phantom source-domain subjects for pre-training the base model (default 16)")
    p.add_argument("--test-subjects", type=int, default=8, help="held-out test subjects with --folds 1 (default 8)")
    add_model_arguments(p)
    add_statistics_arguments(p)


def execute(args: argparse.Namespace, console: Console) -> int:
    if args.seeds < 1:
        raise UsageError(f"--seeds {args.seeds}: need at least 1 (3 or more to see seed-to-seed variation)")
    train = {} if args.steps is None else {"steps_frozen": args.steps, "steps_unfrozen": args.steps}
    study = {"data": args.data, "data_format": args.format, "labels": args.labels, "skip_bad": args.skip_bad,
             "strategies": parse_strategies(args.strategy), "ns": parse_ns(args.n), "seeds": args.seeds,
             "folds": args.folds,
             "params": parse_params(args.strategy_param), "empty": args.empty,
             "target_subjects": args.target_subjects, "source_subjects": args.source_subjects,
             "test_subjects": args.test_subjects, "val_subjects": args.val_subjects}
    settings = settings_from(args, study, train)
    store = RunStore(Path(args.out))
    store.prepare()
    study = Study(settings, store, console, Path(args.cache_dir) if args.cache_dir else None)
    summary = study.run()
    from reports.render import render

    md, html = render(store.root, options_from(args))
    console.print(f"{summary['done']} runs done, {summary['skipped']} already finished, "
                  f"{len(summary['failed'])} failed, in {summary['seconds']:.0f} s")
    for failure in summary["failed"]:
        console.print(f"[red]failed:[/] {escape(failure)}", highlight=False, soft_wrap=True)
    console.print(f"report: {md}\n        {html}")
    return 1 if summary["failed"] else 0
