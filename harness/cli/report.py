"""`harness report`: (re-)write report.md and report.html of a study folder."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

HELP = "write report.md and report.html for an existing study folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study folder written by `harness run`")


def execute(args: argparse.Namespace, console: Console) -> int:
    from reports.render import render

    md, html = render(Path(args.study))
    console.print(f"report: {md}\n        {html}")
    return 0
