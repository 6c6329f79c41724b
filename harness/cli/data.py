"""`harness data inspect DIR`: what a data folder holds, per subject, before a study uses it."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.data.nifti import LabelMap
from harness.data.sources import FORMATS, load_dataset, locate
from harness.runner import data_warnings

HELP = "inspect a folder of cine data: layout, subjects, slices, frames, labelled frames, spacing, ED/ES"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    inspect = sub.add_parser("inspect", help="show what was found, per subject (no patient fields)")
    inspect.add_argument("path", help="folder of cine data")
    add_data_arguments(inspect)


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=sorted(FORMATS), default=None, help="layout (default: detected)")
    p.add_argument("--labels", default=None, metavar="lv=N,my=N[,rv=N]",
                   help="label values of LV, myocardium and RV (default: the layout's convention)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out subjects with broken files (each listed as a warning) instead of stopping")


def execute(args: argparse.Namespace, console: Console) -> int:
    located = locate(Path(args.path), args.format)
    console.print(f"detected {FORMATS[located.format]} in {located.root}: {len(located.subjects)} subjects",
                  highlight=False)
    labels = LabelMap.parse(args.labels) if args.labels else None
    data = load_dataset(located.root, located.format, labels, skip_bad=args.skip_bad)
    table = Table("subject", "slices", "frames", "labelled frames", "images", "spacing (mm)", "field (T)",
                  "ED", "ES", "ED/ES from")
    images = data.index.groupby("subject").size()
    for row in data.subjects_info.itertuples():
        field = "n/a" if row.field_strength_t in (None, "") or row.field_strength_t != row.field_strength_t \
            else f"{float(row.field_strength_t):g}"
        table.add_row(row.subject, str(row.slices), str(row.frames), str(row.labelled_frames),
                      str(images[row.subject]), f"{row.spacing_mm:g}", field,
                      "–" if row.ed in (None, "") else str(row.ed), "–" if row.es in (None, "") else str(row.es),
                      row.source)
    out = Console()
    (out if out.is_terminal else Console(width=200)).print(table)
    for warning in data_warnings(data):
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    return 0
