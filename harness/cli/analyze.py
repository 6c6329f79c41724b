"""`harness analyze`: the statistics and report on per-image results produced elsewhere."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from harness.cli.report import add_statistics_arguments, options_from

EXAMPLE = """example:
  python -m harness analyze results/*.tsv --reference doubleTransferLearn --base baseModel --out pub"""
HELP = "statistics and report on per-image results made elsewhere (CSV/TSV: Dice or confusion counts)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", type=Path,
                   help="CSV/TSV files, one row per image, or folders of them (all are joined)")
    p.add_argument("--out", type=Path, required=True, help="folder for report.md, report.html and tables/")
    p.add_argument("--set", default="test", help="keep rows whose `set` column has this value (default: test)")
    p.add_argument("--method-column", help="column naming the method (default: method, strategy or methodB)")
    p.add_argument("--empty", default="both-one", choices=["both-one", "ignore"],
                   help="empty-mask convention when Dice is computed from counts (default: both-one, as published)")
    p.add_argument("--base", metavar="METHOD",
                   help="the method that is the source-only model without fine-tuning (compared as `base`)")
    p.add_argument("--reference-annotation", metavar="NAME",
                   help="where the files score methods against several reference annotations (column reference, or "
                        "methodA beside methodB): the main one (default: the one a second annotation was scored "
                        "against, e.g. the first expert; the others are analysed after it)")
    add_statistics_arguments(p)


def execute(args: argparse.Namespace, console: Console) -> int:
    from harness.reports.render import write
    from harness.results import analyse_results, read_results

    table = read_results(args.files, args.set, args.method_column, args.base, args.reference_annotation)
    methods = sorted(table.images["strategy"].unique())
    described = table.description
    against = (f" against {described['reference_annotation']}" if described.get("reference_annotation") else "") + (
        f" (also analysed: {', '.join(described['other_references'])})" if described.get("other_references") else "") + (
        f"; inter-observer: {described['inter_observer']}" if described.get("inter_observer") else "")
    console.print(f"{described['rows']} images, {table.images['subject'].nunique()} subjects, "
                  f"methods: {', '.join(methods)}{against}", highlight=False, markup=False)
    analysis = analyse_results(table, options_from(args, empty=args.empty))
    md, html = write(analysis, args.out, "Analysis of per-image results")
    console.print(f"report: {md}\n        {html}", highlight=False, markup=False)
    return 0
