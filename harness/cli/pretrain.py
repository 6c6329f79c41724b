"""`harness pretrain`: train a source model on a labelled dataset (`--data`), or the built-in base model on
the source-domain phantom (cached; `run` does this on first use)."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.cli.data import add_data_arguments
from harness.cli.options import add_model_arguments, settings_from
from harness.errors import UsageError
from harness.cli.console import RichReporter, bars
from harness.runner import Study

EXAMPLE = """example:
  python -m harness pretrain --data /data/acdc/training --out models/acdc.pt --val-subjects 10"""
HELP = "pre-train a source model on your labelled data (--data DIR --out FILE.pt), or the phantom base model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, metavar="DIR",
                   help="labelled source data in any layout `harness data inspect` reads (default: the phantom)")
    add_data_arguments(p)
    p.add_argument("--out", default=None, metavar="FILE.pt",
                   help="checkpoint to write (its model card is written beside it as FILE.json); needed with --data")
    p.add_argument("--val-subjects", type=int, default=None,
                   help="subjects held out for validation Dice (default: 10%% of the subjects, at least 1; "
                        "0 with the phantom)")
    p.add_argument("--steps", type=int, default=None, dest="steps",
                   help="optimiser steps (default 600 on the phantom, 10000 with --data)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate of the one-cycle schedule (default 1e-3)")
    p.add_argument("--loss", choices=("ce", "ce+dice"), default=None,
                   help="training loss: cross-entropy (default), or cross-entropy plus soft Dice of LV and MY "
                        "(on ACDC no better: validation LV 0.847 vs 0.850)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, data order, augmentation and the "
                   "validation draw (default 0)")
    add_model_arguments(p)


REAL_DATA_STEPS = 10000
# real data default: at 128 px (the phantom's size) ACDC validation LV was 0.8496, 192 px gave 0.852 (same 8 subjects)
REAL_DATA_SIZE = 192


def execute(args: argparse.Namespace, console: Console) -> int:
    from dataclasses import replace

    from harness.pretraining import pretrain_on

    if args.data is not None and args.out is None:
        raise UsageError("pretrain --data needs --out FILE.pt: where to write the checkpoint and its model card")
    if args.steps is not None:
        args.pretrain_steps = args.steps
    elif args.data is not None:
        args.pretrain_steps = REAL_DATA_STEPS
    if args.data is not None and args.size is None:
        args.size = REAL_DATA_SIZE
    study_fields = {"data": args.data, "data_format": args.format, "labels": args.labels, "skip_bad": args.skip_bad}
    settings = settings_from(args, study_fields)
    pretrain = replace(settings.pretrain, seed=args.seed, loss=args.loss or "ce",
                       **({"lr": args.lr} if args.lr is not None else {}))
    settings = replace(settings, pretrain=pretrain)
    study = Study(settings, store=None, reporter=RichReporter(console), cache=Path(args.cache_dir) if args.cache_dir else None)
    out = Path(args.out) if args.out else None
    if out is not None:
        _check_writable(out)
    if args.data is None:
        path, key = study.base_model()
        if out is not None:
            shutil.copyfile(path, out)
            shutil.copyfile(path.with_suffix(".json"), out.with_suffix(".json"))
        console.print(f"base model {key}: {out or path}", highlight=False, markup=False)
        return 0
    dataset = study.load_target()
    val = args.val_subjects if args.val_subjects is not None else max(1, round(0.1 * len(dataset.subjects)))
    console.print(f"[bold]Pre-training[/] {escape(settings.pretrain.encoder)} U-Net on {len(dataset.subjects) - val} subjects "
                  f"({val} held out for validation), {pretrain.steps} steps at {pretrain.size} px, loss {pretrain.loss}", highlight=False)
    with bars(console) as progress:
        task = progress.add_task("pre-training", total=pretrain.steps)
        check = progress.add_task("validation images", total=None, visible=False)
        card = pretrain_on(dataset, pretrain, out, val,
                           source={"format": args.format or "detected", "labels": args.labels},
                           on_step=lambda: progress.advance(task),
                           on_validate=lambda k, total: progress.update(check, advance=k, total=total, visible=True))
    v = card["validation"]
    table = Table("subjects", "images", "steps", "minutes", "validation subjects", "LV Dice", "MY Dice")
    table.add_row(str(card["training"]["subjects"]), str(card["training"]["images"]), str(pretrain.steps),
                  f"{card['training']['seconds'] / 60:.1f}", str(v["subjects"] if v else 0),
                  f"{v['dice_lv']:.3f}" if v else "–", f"{v['dice_my']:.3f}" if v else "–")
    Console().print(table)
    console.print(f"checkpoint: {out}\nmodel card: {out.with_suffix('.json')}\n"
                  f"use it: python -m harness run --data TARGET --init checkpoint:{out}", highlight=False, markup=False)
    return 0


def _check_writable(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write '{out}': {exc.strerror or exc}; choose another --out") from None
    if out.exists() and out.is_dir():
        raise UsageError(f"--out '{out}' is a folder; give a file name such as {out / 'model.pt'}")
