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
    p.add_argument("--test", default="t", choices=["t", "wilcoxon", "permutation"],
                   help="two-sided paired test over subjects (default t: adds the noise of training runs shared "
                        "by test subjects)")


def options_from(args: argparse.Namespace, empty: str = "both-one"):
    from harness.errors import UsageError
    from reports.render import Options

    if not 0 < args.margin < 1:
        raise UsageError(f"--margin {args.margin:g} must be a Dice difference between 0 and 1, e.g. 0.02")
    return Options(margin=args.margin, reference=args.reference, test=args.test, empty=empty)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study folder written by `harness run`")
    add_statistics_arguments(p)


def execute(args: argparse.Namespace, console: Console) -> int:
    from reports.render import render

    md, html = render(Path(args.study), options_from(args))
    console.print(f"report: {md}\n        {html}")
    return 0
