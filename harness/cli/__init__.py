"""Command line: `python -m harness {run,status,tune,data,pretrain,strategies,report,analyze}`. Thin: parse, call, print."""
from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.markup import escape

from harness import __version__
from harness.cli import analyze, data, pretrain, report, run, status, strategies, tune
from harness.errors import HarnessError

COMMANDS = {"run": run, "status": status, "tune": tune, "data": data, "pretrain": pretrain,
            "strategies": strategies, "report": report, "analyze": analyze}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="harness", description="Data-efficiency studies of transfer learning in cardiac cine MRI segmentation: "
        "how many subjects, and which frames, to label before fine-tuning is as good as it gets.")
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    top.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, epilog=module.EXAMPLE,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        module.add_arguments(p)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        return COMMANDS[args.command].execute(args, console)
    except HarnessError as exc:
        if args.debug:
            raise
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted; finished runs are kept and a re-run resumes")
        return 130


if __name__ == "__main__":
    sys.exit(main())
