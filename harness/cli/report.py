"""`harness report`: (re-)write report.md and report.html of a study folder."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

EXAMPLE = """example:
  python -m harness report studies/default --margin 0.02 --reference all_frames@10"""
HELP = "write report.md and report.html for an existing study folder"


def add_statistics_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--margin", type=float, default=0.02,
                   help="non-inferiority margin in Dice (default 0.02, the reason is stated in the report)")
    p.add_argument("--reference", metavar="STRATEGY[@N]",
                   help="what 'as good as' means (default: all_frames at its largest n; without all_frames, each "
                        "strategy's own largest n)")
    p.add_argument("--reference-dice", metavar="LV=0.939,MY=0.813", default=None,
                   help="a Dice to draw on the learning curves per metric, e.g. inter-observer agreement (the "
                        "published 7T study's second expert: LV=0.939,MY=0.813)")
    p.add_argument("--test", default="t", choices=["t", "wilcoxon", "permutation"],
                   help="two-sided paired test over subjects (default t: adds the noise of training runs shared "
                        "by test subjects)")


def options_from(args: argparse.Namespace, empty: str = "both-one"):
    from harness.errors import UsageError
    from harness.analysis import Options

    if not 0 < args.margin < 1:
        raise UsageError(f"--margin {args.margin:g} must be a Dice difference between 0 and 1, e.g. 0.02")
    return Options(margin=args.margin, reference=args.reference, test=args.test, empty=empty,
                   reference_dice=parse_reference_dice(getattr(args, "reference_dice", None)))


def parse_reference_dice(text: str | None) -> dict[str, float]:
    """'LV=0.939,MY=0.813' -> {'dice_lv': 0.939, 'dice_my': 0.813}."""
    from harness.errors import UsageError

    out: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, _, value = item.partition("=")
        metric = {"lv": "dice_lv", "my": "dice_my"}.get(key.strip().lower())
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if metric is None or not 0 < number <= 1:
            raise UsageError(f"--reference-dice '{text}': give METRIC=DICE pairs of LV and MY with Dice in (0, 1], "
                             "e.g. LV=0.939,MY=0.813")
        out[metric] = number
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study folder written by `harness run`")
    add_statistics_arguments(p)


def execute(args: argparse.Namespace, console: Console) -> int:
    from harness.reports.render import render

    md, html = render(Path(args.study), options_from(args))
    console.print(f"report: {md}\n        {html}", highlight=False, markup=False)
    return 0
