"""`harness data inspect DIR`: what a data folder holds, per subject, before a study uses it."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.data.nifti import LabelMap
from harness.errors import UsageError
from harness.data.sources import FORMATS, load_dataset, locate
from harness.grid import cache_dir, data_warnings

EXAMPLE = """examples:
  python -m harness data inspect /data/acdc/training
  python -m harness data phantom --out phantom-dicom"""
HELP = "inspect a folder of cine data, or write the built-in phantom to disk as DICOM + NIfTI"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    inspect = sub.add_parser("inspect", help="show what was found, per subject (no patient fields)")
    inspect.add_argument("path", help="folder of cine data")
    add_data_arguments(inspect)
    phantom = sub.add_parser("phantom", help="write the built-in phantom as DICOM series + NIfTI label maps")
    phantom.add_argument("--out", required=True, help="folder to write (one sub-folder per subject)")
    phantom.add_argument("--domain", choices=["target", "source"], default="target",
                         help="7T-like target (default) or 1.5T-like source domain")
    phantom.add_argument("--subjects", type=int, default=24, help="number of subjects (default 24)")
    phantom.add_argument("--seed", type=int, default=0, help="phantom seed (default 0, as `run` uses)")


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=sorted(FORMATS), default=None, help="layout (default: detected)")
    p.add_argument("--labels", default=None, metavar="lv=N,my=N[,rv=N]",
                   help="label values of LV, myocardium and RV (default: the layout's convention)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out subjects with broken files (each listed as a warning) instead of stopping")


def execute(args: argparse.Namespace, console: Console) -> int:
    if args.data_command == "phantom":
        return write(args, console)
    located = locate(Path(args.path), args.format)
    console.print(f"detected {FORMATS[located.format]} in {located.root}: {len(located.subjects)} subjects",
                  highlight=False, markup=False)
    labels = LabelMap.parse(args.labels) if args.labels else None
    # the same cache (and id salt) as `run`: ids agree, and the preparation is reused
    data = load_dataset(located.root, located.format, labels, cache_dir=cache_dir(), skip_bad=args.skip_bad)
    table = Table("subject", "slices", "frames", "labelled frames", "images", "spacing (mm)", "thickness (mm)",
                  "field (T)", "ED", "ES", "ED/ES from")
    images = data.index.groupby("subject").size()
    for row in data.subjects_info.itertuples():
        field = "n/a" if row.field_strength_t in (None, "") or row.field_strength_t != row.field_strength_t \
            else f"{float(row.field_strength_t):g}"
        thickness = row.slice_thickness_mm
        table.add_row(escape(str(row.subject)), str(row.slices), str(row.frames), str(row.labelled_frames),
                      str(images[row.subject]), f"{row.spacing_mm:g}",
                      "n/a" if thickness in (None, "") or thickness != thickness else f"{float(thickness):g}", field,
                      "–" if row.ed in (None, "") else str(row.ed), "–" if row.es in (None, "") else str(row.es),
                      row.source)
    out = Console()
    (out if out.is_terminal else Console(width=200)).print(table)
    for warning in data_warnings(data):
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    return 0


def write(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import Progress

    from harness.data.export import write_phantom

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write '{out}': {exc.strerror or exc}; choose another --out") from None
    with Progress(console=console) as progress:
        task = progress.add_task(f"writing {args.domain} phantom", total=args.subjects)
        folders = write_phantom(out, args.domain, args.subjects, args.seed,
                                on_subject=lambda done, total: progress.update(task, completed=done))
    console.print(f"{len(folders)} subjects written to {out}; study them with "
                  f"`python -m harness run --data {out}`", highlight=False, markup=False)
    return 0
