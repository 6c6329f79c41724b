"""`harness tune`: Optuna search of training settings for one strategy / init / n, nested in the folds."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness.cli import run
from harness.errors import UsageError

EXAMPLE = """examples:
  python -m harness tune --data /data/my7T --init checkpoint:models/acdc.pt --strategy ed_es --n 3 --trials 30
  python -m harness tune --strategy ed_es --n 5 --fold 1      # one fold only (e.g. one job per fold)"""
HELP = ("tune training settings with Optuna for one strategy / init / n, each fold on its own training side "
        "(nested; resumable)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    run.add_arguments(p)
    p.add_argument("--trials", type=int, default=30,
                   help="trials per fold, counting earlier ones (default 30)")
    p.add_argument("--fold", default=None, metavar="F[,F...]",
                   help="folds to tune (default: every fold; `run --tuned` needs them all, each tuned without its "
                        "test subjects)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (default sqlite in --out), or journal:PATH for a shared filesystem")
    p.add_argument("--space", type=Path, default=None,
                   help='JSON file replacing parts of the search space, e.g. {"lr_frozen": ["log", 1e-4, 1e-2], '
                        '"augment": null}')
    p.add_argument("--metric", choices=["both", "lv", "my"], default="both",
                   help="validation Dice to maximise: LV and MY averaged (default), or one")
    p.add_argument("--tune-seeds", type=int, default=1,
                   help="fine-tunes per trial (other subsets and init draws), averaged (default 1)")
    p.add_argument("--sampler-seed", type=int, default=0, help="seed of the TPE sampler (default 0)")


def execute(args: argparse.Namespace, console: Console) -> int:
    from harness.cli.console import RichReporter, bars
    from harness.inits import parse_inits
    from harness.runner import Study
    from harness.store import RunStore
    from harness.tune import Tuner, TuneRequest, search_space

    args.tuned = False
    settings = run.study_settings(args)
    if settings.budget_minutes:
        raise UsageError("tune takes a budget of subjects (--n); tuning at a budget of expert minutes is not "
                         "supported yet: tune at the --n whose cost is nearest, then `run --budget-minutes`")
    if len(settings.strategies) != 1 or len(settings.ns) != 1 or len(settings.inits) != 1:
        raise UsageError("tune takes one configuration: one --strategy, one --n and one --init (run it once per "
                         "configuration; `run --tuned` then uses each)")
    if args.trials < 1 or args.tune_seeds < 1:
        raise UsageError("--trials and --tune-seeds must be at least 1")
    store = RunStore(Path(args.out))
    store.prepare()
    study = Study(settings, store=None, reporter=RichReporter(console), cache=Path(args.cache_dir) if args.cache_dir else None)
    request = TuneRequest(strategy=settings.strategies[0], init=parse_inits(args.init)[0].name, n=settings.ns[0],
                          trials=args.trials, seeds=args.tune_seeds, metric=args.metric,
                          sampler_seed=args.sampler_seed, space=search_space(settings.train.schedule, args.space),
                          folds=parse_folds(args.fold))
    tuner = Tuner(study, request, store.root, args.storage)
    with bars(console) as progress:
        trials = progress.add_task("trials", total=None)
        steps = progress.add_task("fine-tuning steps", total=None)
        entry = tuner.run(on_trial=lambda done, total, value: progress.update(trials, completed=done, total=total),
                          on_step=lambda: progress.advance(steps))
    folds = entry["folds"]
    table = Table("parameter", *(f"fold {f}" for f in folds), "default")
    defaults = settings.train.to_dict()
    for name in entry["space"]:
        default = (f"{defaults['rotate_deg'] / 90:g} (rotation {defaults['rotate_deg']:g}, zoom {defaults['zoom']:g}, "
                   f"±{defaults['brightness']:g})" if name == "augment" else defaults.get(name))
        values = [part["params"].get(name) for part in folds.values()]
        table.add_row(name, *(f"{v:.4g}" if isinstance(v, float) else str(v) for v in values), str(default))
    table.add_row("validation Dice", *(f"{p['value']:.4f}" for p in folds.values()), "")
    table.add_row("  with defaults", *(f"{p['default_value']:.4f}" for p in folds.values()), "")
    table.add_row("trials (pruned, failed)", *(f"{p['trials']} ({p['pruned']}, {p['failed']})" for p in folds.values()), "")
    Console().print(table)
    console.print(f"validation Dice ({entry['metric']}) per fold, each fold tuned on its own training pool and "
                  f"validation subjects, never on its test subjects.\nstored in {entry['storage']} and "
                  f"{store.root / 'tuned.json'}; use them with `run --tuned` (same --out, --folds and data)",
                  highlight=False, markup=False)
    return 0


def parse_folds(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        folds = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        folds = ()
    if not folds or min(folds) < 0:
        raise UsageError(f"--fold '{text}': give fold numbers from 0, comma list, e.g. --fold 0,2")
    return folds
